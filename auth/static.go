package auth

import "context"

// Static is a fixed developer token. It never expires as far as boxproxy
// knows, and it cannot be renewed: when Box rejects it, the user must make a
// new one in the Developer Console.
type Static struct {
	token Token
}

// NewStatic returns a Source that always yields access.
func NewStatic(access string) *Static { return &Static{token: NewToken(access, timeZero)} }

// Method implements Source.
func (s *Static) Method() string { return "token" }

// Token implements Source.
func (s *Static) Token(context.Context, Subject) (Token, error) { return s.token, nil }

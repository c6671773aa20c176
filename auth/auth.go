// Package auth obtains Box access tokens: one Source per Box grant (Client
// Credentials, JWT, OAuth 2.0, a fixed developer token) and a Cache that wraps any
// Source with per-subject caching, refresh-ahead, single flight and back-off.
package auth

import (
	"context"
	"fmt"
	"time"
)

// SubjectType says whom a token acts for.
type SubjectType string

// The subject types Box knows.
const (
	Enterprise SubjectType = "enterprise" // the enterprise's Service Account
	User       SubjectType = "user"       // one managed user or app user
)

// Subject is whom a token is for. It is comparable and is the cache key.
type Subject struct {
	Type SubjectType
	ID   string
}

func (s Subject) String() string { return string(s.Type) + ":" + s.ID }

// Token is an access token and when it expires. A zero Expiry means that the
// token's life is unknown (a developer token): it is used until Box rejects it.
type Token struct {
	Expiry time.Time
	access string
	header []string // "Bearer <access>", built once, shared read-only
}

// NewToken makes a Token.
func NewToken(access string, expiry time.Time) Token {
	return Token{access: access, Expiry: expiry, header: []string{"Bearer " + access}}
}

// Access returns the access token itself. Never log it.
func (t Token) Access() string { return t.access }

// AuthorizationHeader returns the value of the Authorization header as a
// one-element slice that callers may assign to a header map but must not modify.
func (t Token) AuthorizationHeader() []string { return t.header }

// String keeps tokens out of logs and error messages printed with %v.
func (t Token) String() string { return "Token(redacted)" }

// GoString keeps tokens out of %#v output.
func (t Token) GoString() string { return t.String() }

// Format keeps tokens out of any fmt verb.
func (t Token) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(t.String())) }

// IsZero reports whether t holds no token.
func (t Token) IsZero() bool { return t.access == "" }

// Source obtains a new token for a subject from Box. Implementations do no
// caching: Cache does that for all of them.
type Source interface {
	Token(ctx context.Context, s Subject) (Token, error)
	// Method names the grant for logs and metrics: ccg, jwt, oauth or token.
	Method() string
}

package auth

import (
	"context"
	"errors"
	"net/url"

	"github.com/rs/zerolog"
)

// OAuth is the OAuth 2.0 authorization-code grant: a user logs in once in a
// browser; afterwards single-use refresh tokens, kept in a store file, buy new
// access tokens. (Skeleton: being completed.)
type OAuth struct {
	ep      *Endpoint
	path    string
	log     zerolog.Logger
	onLogin func()
}

// NewOAuth loads the token store at path.
func NewOAuth(ep *Endpoint, path string, log zerolog.Logger) (*OAuth, error) {
	return &OAuth{ep: ep, path: path, log: log}, nil
}

// Method implements Source.
func (o *OAuth) Method() string { return "oauth" }

// Token implements Source.
func (o *OAuth) Token(ctx context.Context, _ Subject) (Token, error) {
	return Token{}, ErrLoginRequired
}

// OnLogin registers f, called after every successful login.
func (o *OAuth) OnLogin(f func()) { o.onLogin = f }

// AuthCodeURL returns the URL of Box's authorization page.
func (o *OAuth) AuthCodeURL(authorizeURL, redirectURI, state string) string {
	q := url.Values{"response_type": {"code"}, "client_id": {o.ep.ClientID}, "redirect_uri": {redirectURI}, "state": {state}}
	return authorizeURL + "?" + q.Encode()
}

// Exchange trades an authorization code for tokens and saves them.
func (o *OAuth) Exchange(ctx context.Context, code, redirectURI string) error {
	return errors.New("not implemented")
}

// Logout revokes the tokens at Box and clears the store.
func (o *OAuth) Logout(ctx context.Context) error { return errors.New("not implemented") }

// LoggedIn reports whether the store holds a refresh token.
func (o *OAuth) LoggedIn() bool { return false }

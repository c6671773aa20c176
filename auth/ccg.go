package auth

import (
	"context"
	"net/url"
)

// CCG is the Client Credentials Grant: the app's client ID and secret buy a
// token for the enterprise's Service Account or for one user.
type CCG struct {
	Endpoint *Endpoint
}

// Method implements Source.
func (c *CCG) Method() string { return "ccg" }

// Token implements Source.
func (c *CCG) Token(ctx context.Context, s Subject) (Token, error) {
	form := url.Values{
		"grant_type":       {"client_credentials"},
		"box_subject_type": {string(s.Type)},
		"box_subject_id":   {s.ID},
	}
	issued := c.Endpoint.now()
	tr, err := c.Endpoint.Exchange(ctx, "ccg", form)
	if err != nil {
		return Token{}, err
	}
	return NewToken(tr.AccessToken, tr.expiry(issued)), nil
}

package auth

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"errors"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Audience is the aud claim Box requires, whatever the token URL.
const Audience = "https://api.box.com/oauth2/token"

var timeZero time.Time

// JWT is the JWT grant: an assertion signed with the app's RSA key buys a token
// for the enterprise's Service Account or for one user.
type JWT struct {
	Endpoint *Endpoint
	KeyID    string
	Key      *rsa.PrivateKey
	// skew is Box's clock minus ours, learnt from the last assertion Box
	// refused for clock skew, so that later assertions are right at once.
	skew atomic.Int64
}

// Method implements Source.
func (j *JWT) Method() string { return "jwt" }

// Token implements Source. When Box refuses the assertion because its clock and
// ours disagree, it tries once more with a time taken from Box's Date header.
func (j *JWT) Token(ctx context.Context, s Subject) (Token, error) {
	now := j.Endpoint.now()
	tok, err := j.exchange(ctx, s, now.Add(time.Duration(j.skew.Load())), now)
	var te *TokenError
	if errors.As(err, &te) && isClockSkew(te) && !te.Date.IsZero() {
		j.skew.Store(int64(te.Date.Sub(now)))
		tok, err = j.exchange(ctx, s, te.Date, now)
	}
	return tok, err
}

func (j *JWT) exchange(ctx context.Context, s Subject, boxNow, localNow time.Time) (Token, error) {
	assertion, err := j.Assertion(s, boxNow)
	if err != nil {
		return Token{}, err
	}
	form := url.Values{
		"grant_type": {"urn:ietf:params:oauth:grant-type:jwt-bearer"},
		"assertion":  {assertion},
	}
	tr, err := j.Endpoint.Exchange(ctx, "jwt", form)
	if err != nil {
		return Token{}, err
	}
	return NewToken(tr.AccessToken, tr.expiry(localNow)), nil
}

// Assertion builds the signed assertion Box expects: kid in the header; iss,
// sub (a string), box_sub_type, aud, a fresh jti and exp = now+30s; no iat,
// because Box allows no skew on it.
func (j *JWT) Assertion(s Subject, now time.Time) (string, error) {
	var jti [24]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", err
	}
	claims := jwt.MapClaims{
		"iss":          j.Endpoint.ClientID,
		"sub":          s.ID,
		"box_sub_type": string(s.Type),
		"aud":          Audience,
		"jti":          hex.EncodeToString(jti[:]),
		"exp":          now.Add(30 * time.Second).Unix(),
	}
	t := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	t.Header["kid"] = j.KeyID
	signed, err := t.SignedString(j.Key)
	if err != nil {
		return "", errors.New("cannot sign the JWT assertion with the private key")
	}
	return signed, nil
}

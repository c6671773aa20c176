package auth

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/boxproxy/boxproxy/metrics"
)

// maxTokenResponse bounds how much of a token endpoint answer is read.
const maxTokenResponse = 1 << 20

// Endpoint is Box's token endpoint with the app's credentials. The grants share
// it; it knows how to send a form and read Box's answer or error.
type Endpoint struct {
	URL          string
	ClientID     string
	ClientSecret string
	Client       *http.Client // its Timeout bounds every token request
	Metrics      *metrics.Metrics
	Now          func() time.Time // nil = time.Now
	// Secrets are other secrets of the configuration (store key, inbound
	// key, passphrase) that are redacted from the token endpoint's error
	// answers, beside the request's own (see redactSecrets).
	Secrets []string
}

// tokenResponse is the part of Box's answer that boxproxy uses.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	ExpiresIn    *int64 `json:"expires_in"`
	RefreshToken string `json:"refresh_token"`
}

func (e *Endpoint) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

// Exchange posts form (with client_id and client_secret added) and returns the
// token response. Errors are *TokenError.
func (e *Endpoint) Exchange(ctx context.Context, method string, form url.Values) (tokenResponse, error) {
	start := time.Now()
	tr, err := e.exchange(ctx, method, form)
	e.Metrics.TokenRequest(method, Outcome(err), time.Since(start))
	return tr, err
}

func (e *Endpoint) exchange(ctx context.Context, method string, form url.Values) (tokenResponse, error) {
	form.Set("client_id", e.ClientID)
	form.Set("client_secret", e.ClientSecret)
	resp, err := e.post(ctx, e.URL, form)
	if err != nil {
		return tokenResponse{}, transportError(method, err)
	}
	defer resp.Body.Close()
	body, rerr := io.ReadAll(io.LimitReader(resp.Body, maxTokenResponse))
	te := &TokenError{Method: method, Status: resp.StatusCode}
	if d, err := http.ParseTime(resp.Header.Get("Date")); err == nil {
		te.Date = d
	}
	if rerr != nil {
		te.Kind, te.Cause = ErrBadResponse, errors.New("response cut off")
		if errors.Is(rerr, context.DeadlineExceeded) {
			te.Kind = ErrTimeout
		}
		return tokenResponse{}, te
	}
	if resp.StatusCode != http.StatusOK {
		var eb struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}
		if json.Unmarshal(body, &eb) == nil {
			// Cut to length only after redaction, so that no end of a
			// secret that the cut would split survives it.
			te.Code, te.Description = sanitize(eb.Error, 4<<10), sanitize(eb.Description, 4<<10)
		}
		te.Kind = classify(resp.StatusCode, te.Code, te.Description)
		// Kept, and so shown everywhere, only without what the request
		// carried: an endpoint that echoes the request must not spread
		// its secrets.
		secrets := requestSecrets(form, e.Secrets)
		te.Code = cutText(redactSecrets(te.Code, secrets), 64)
		te.Description = cutText(redactSecrets(te.Description, secrets), 300)
		te.RetryAfter, _ = ParseRetryAfter(resp.Header.Get("Retry-After"))
		return tokenResponse{}, te
	}
	tr, err := parseTokenResponse(body)
	if err != nil {
		te.Kind, te.Cause = ErrBadResponse, err
		return tokenResponse{}, te
	}
	return tr, nil
}

// parseTokenResponse reads a 200 answer of the token endpoint. Its errors say
// what is wrong without quoting the body (which may hold a token).
func parseTokenResponse(body []byte) (tokenResponse, error) {
	var tr tokenResponse
	if err := json.Unmarshal(body, &tr); err != nil {
		return tokenResponse{}, errors.New("response is not a JSON token object")
	}
	if tr.AccessToken == "" {
		return tokenResponse{}, errors.New("response has no access_token")
	}
	if strings.ContainsAny(tr.AccessToken, " \t\r\n\"") || len(tr.AccessToken) > 4096 {
		return tokenResponse{}, errors.New("response has a malformed access_token")
	}
	if tr.ExpiresIn != nil && *tr.ExpiresIn <= 0 {
		return tokenResponse{}, errors.New("response has a non-positive expires_in")
	}
	return tr, nil
}

// expiry turns expires_in into a time; Box always sends it, and without it an
// hour (Box's usual lifetime) is assumed.
func (tr tokenResponse) expiry(issued time.Time) time.Time {
	if tr.ExpiresIn == nil {
		return issued.Add(time.Hour)
	}
	return issued.Add(time.Duration(*tr.ExpiresIn) * time.Second)
}

func (e *Endpoint) post(ctx context.Context, u string, form url.Values) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "boxproxy")
	c := e.Client
	if c == nil {
		c = http.DefaultClient
	}
	return c.Do(req)
}

// Revoke revokes token (access or refresh) at Box's revoke endpoint, which
// lives next to the token endpoint.
func (e *Endpoint) Revoke(ctx context.Context, token string) error {
	u := strings.TrimSuffix(e.URL, "/token") + "/revoke"
	form := url.Values{"client_id": {e.ClientID}, "client_secret": {e.ClientSecret}, "token": {token}}
	resp, err := e.post(ctx, u, form)
	if err != nil {
		return transportError("oauth", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxTokenResponse))
	if resp.StatusCode != http.StatusOK {
		return &TokenError{Kind: classify(resp.StatusCode, "", ""), Method: "oauth", Status: resp.StatusCode}
	}
	return nil
}

// transportError turns a client error into a TokenError without the URL's
// query or any form value (url.Error quotes only the URL, which has no secret).
func transportError(method string, err error) *TokenError {
	te := &TokenError{Kind: ErrUnavailable, Method: method}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
		te.Kind = ErrTimeout
	}
	if errors.Is(err, context.Canceled) {
		te.Cause = context.Canceled
		return te
	}
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		// A bare "EOF" tells a reader nothing.
		te.Cause = errors.New("connection closed without an answer")
	case errors.Is(err, syscall.ECONNRESET):
		te.Cause = errors.New("connection reset")
	default:
		te.Cause = errors.New(sanitize(err.Error(), 200))
	}
	return te
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// sanitize keeps printable ASCII of s, cut to n bytes, so that a hostile
// endpoint cannot inject lines into logs.
func sanitize(s string, n int) string {
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < n; i++ {
		if c := s[i]; c >= 0x20 && c < 0x7f {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// cutText cuts s, printable text, to at most n bytes, and never inside a
// redactedMark (which would then read as if the text held "[reda…").
func cutText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	t := s[:n]
	if i := strings.LastIndexByte(t, '['); i >= 0 && i+len(redactedMark) > n && strings.HasPrefix(s[i:], redactedMark) {
		t = t[:i]
	}
	return t
}

// ParseRetryAfter reads a Retry-After header: seconds (fractions allowed) or
// an HTTP date, at most a day. ok is false when v is absent or unreadable.
func ParseRetryAfter(v string) (d time.Duration, ok bool) {
	if v == "" {
		return 0, false
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil && s >= 0 {
		// Bounded before converting: a huge value (or Inf) would overflow
		// Duration and come out negative.
		return time.Duration(min(s, 24*3600) * float64(time.Second)), true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(0, min(time.Until(t), 24*time.Hour)), true
	}
	return 0, false
}

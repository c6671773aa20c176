package auth

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Sentinel errors, matched with errors.Is.
var (
	// ErrConfig: Box rejected the app's configuration (client ID or secret,
	// key, subject, missing admin approval). Retrying does not help.
	ErrConfig = errors.New("box rejected the app configuration")
	// ErrGrant: Box rejected a refresh token or authorization code; the user
	// must log in again.
	ErrGrant = errors.New("box rejected the grant")
	// ErrUnavailable: the token endpoint could not be reached, timed out,
	// or answered with an error status; retrying later may help.
	ErrUnavailable = errors.New("token endpoint unavailable")
	// ErrBadResponse: the token endpoint answered with something that is not
	// a token response.
	ErrBadResponse = errors.New("token endpoint gave a bad response")
	// ErrTimeout: the token endpoint did not answer in time.
	ErrTimeout = errors.New("token endpoint timed out")
	// ErrLoginRequired: the oauth method has no login yet.
	ErrLoginRequired = errors.New("login required")
	// ErrNotRefreshable: the developer token cannot be renewed.
	ErrNotRefreshable = errors.New("developer token cannot be refreshed")
	// ErrClosed: the process is shutting down and starts no token request.
	ErrClosed = errors.New("boxproxy is shutting down: no new token request starts")
)

// TokenError describes a failed token request without any secret in it: the
// token endpoint's status, Box's error code and description, and the kind
// (one of the sentinel errors above).
type TokenError struct {
	Kind        error
	Method      string // ccg, jwt, oauth
	Status      int    // HTTP status, 0 if none arrived
	Code        string // Box's "error"
	Description string // Box's "error_description"
	RetryAfter  time.Duration
	Date        time.Time // Box's Date header, for clock-skew retries
	Cause       error     // a transport error, if any (never carries secrets)
}

func (e *TokenError) Error() string {
	var b strings.Builder
	switch {
	case errors.Is(e.Kind, ErrConfig):
		b.WriteString("Box rejected the app configuration")
	case errors.Is(e.Kind, ErrGrant):
		b.WriteString("Box rejected the login (refresh token or code)")
	case errors.Is(e.Kind, ErrTimeout):
		b.WriteString("the token endpoint did not answer in time")
	case errors.Is(e.Kind, ErrBadResponse):
		b.WriteString("the token endpoint gave a response without a usable token")
	default:
		b.WriteString("the token endpoint is unavailable")
	}
	if e.Method != "" {
		fmt.Fprintf(&b, " (%s grant)", e.Method)
	}
	if e.Status != 0 {
		fmt.Fprintf(&b, ": HTTP %d", e.Status)
	}
	if e.Code != "" {
		fmt.Fprintf(&b, " %s", e.Code)
	}
	if e.Description != "" {
		fmt.Fprintf(&b, " %q", e.Description)
	}
	if e.Cause != nil {
		fmt.Fprintf(&b, ": %v", e.Cause)
	}
	return b.String()
}

// Unwrap lets errors.Is match the kind.
func (e *TokenError) Unwrap() error { return e.Kind }

// Outcome names the error's kind for metrics.
func Outcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrConfig):
		return "config_error"
	case errors.Is(err, ErrGrant):
		return "grant_error"
	case errors.Is(err, ErrTimeout):
		return "timeout"
	case errors.Is(err, ErrBadResponse):
		return "bad_response"
	case errors.Is(err, ErrLoginRequired):
		return "login_required"
	default:
		return "unavailable"
	}
}

// classify decides the kind of a token endpoint's error answer.
func classify(status int, code, desc string) error {
	d := strings.ToLower(desc)
	switch {
	case status == http.StatusTooManyRequests || status >= 500:
		return ErrUnavailable
	case code == "invalid_client", code == "unauthorized_client", code == "invalid_request":
		return ErrConfig
	case code == "invalid_grant" && (strings.Contains(d, "refresh token") || strings.Contains(d, "authorization code") ||
		strings.Contains(d, "auth code") || strings.Contains(d, "code has expired")):
		return ErrGrant
	case code == "invalid_grant":
		return ErrConfig // assertion claims, key, subject or credentials: fix the configuration
	case status == http.StatusBadRequest || status == http.StatusUnauthorized || status == http.StatusForbidden:
		return ErrConfig
	default:
		return ErrUnavailable
	}
}

// isClockSkew reports whether Box rejected a JWT assertion's exp/nbf/iat
// because its clock and ours disagree.
func isClockSkew(e *TokenError) bool {
	if e.Code != "invalid_grant" {
		return false
	}
	d := strings.ToLower(e.Description)
	return strings.Contains(d, "date/time") || strings.Contains(d, "'exp' claim")
}

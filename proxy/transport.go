package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/boxproxy/boxproxy/apierr"
	"github.com/boxproxy/boxproxy/auth"
)

// transport sets the token on each attempt and decides whether to try again:
// once after a 401 with a new token, and (when enabled) after 429/5xx/network
// errors on idempotent methods.
type transport struct {
	p    *Proxy
	base http.RoundTripper
}

// tokenFailure carries a token error from the transport to the ErrorHandler.
type tokenFailure struct{ err error }

func (t *tokenFailure) Error() string { return t.err.Error() }
func (t *tokenFailure) Unwrap() error { return t.err }

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	st := stateFrom(ctx)
	tokens := t.p.o.Tokens
	tok, err := tokens.Token(ctx, st.subject)
	if err != nil {
		return nil, &tokenFailure{err}
	}
	resp, err := t.send(req, st, tok)

	if err == nil && resp.StatusCode == http.StatusUnauthorized {
		if !tokens.Refreshable() {
			return developerTokenExpired(resp), nil
		}
		tokens.Invalidate(st.subject, tok.Access())
		if !st.canRetry {
			return resp, nil // the body streamed and is gone: the client gets Box's 401
		}
		discard(resp)
		t.p.o.Metrics.Retry("401")
		if tok, err = tokens.Token(ctx, st.subject); err != nil {
			return nil, &tokenFailure{err}
		}
		req = req.Clone(ctx)
		resp, err = t.send(req, st, tok)
		if err == nil && resp.StatusCode == http.StatusUnauthorized {
			tokens.Invalidate(st.subject, tok.Access())
		}
	}

	for n := 0; n < t.p.o.UpstreamRetries && st.canRetry && idempotent(req.Method); n++ {
		reason := retryReason(resp, err)
		if reason == "" {
			break
		}
		wait := t.retryWait(resp, n)
		if resp != nil {
			discard(resp)
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, ctx.Err()
		case <-timer.C:
		}
		t.p.o.Metrics.Retry(reason)
		req = req.Clone(ctx)
		resp, err = t.send(req, st, tok)
	}
	return resp, err
}

// send makes one attempt with tok, giving the attempt a fresh copy of the kept body.
func (t *transport) send(req *http.Request, st *state, tok auth.Token) (*http.Response, error) {
	req.Header["Authorization"] = tok.AuthorizationHeader()
	if st.body != nil {
		body := st.body
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		req.ContentLength = int64(len(body))
	}
	st.info.Attempts++
	start := time.Now()
	resp, err := t.base.RoundTrip(req)
	t.p.o.Metrics.Upstream(st.info.Route, time.Since(start))
	return resp, err
}

func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

func retryReason(resp *http.Response, err error) string {
	switch {
	case err != nil:
		if errors.Is(err, context.Canceled) {
			return ""
		}
		return "network"
	case resp.StatusCode == http.StatusTooManyRequests:
		return "429"
	case resp.StatusCode == http.StatusInternalServerError, resp.StatusCode == http.StatusBadGateway,
		resp.StatusCode == http.StatusServiceUnavailable, resp.StatusCode == http.StatusGatewayTimeout:
		return "5xx"
	}
	return ""
}

// retryWait honours Retry-After (seconds or a date), capped by RetryWaitMax;
// without one it backs off exponentially from 500ms.
func (t *transport) retryWait(resp *http.Response, n int) time.Duration {
	wait := 500 * time.Millisecond << n
	if resp != nil {
		if d, ok := auth.ParseRetryAfter(resp.Header.Get("Retry-After")); ok {
			wait = d
		}
	}
	return max(0, min(wait, t.p.o.RetryWaitMax))
}

// discard reads a little of a body that is not passed on, so that the
// connection can be reused, and closes it.
func discard(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
}

// developerTokenExpired replaces Box's 401 for a developer token, which
// cannot be refreshed, with an error that says so.
func developerTokenExpired(resp *http.Response) *http.Response {
	discard(resp)
	body := apierr.Marshal(http.StatusUnauthorized, "developer_token_expired",
		"Box rejected the developer token (BOXPROXY_DEVELOPER_TOKEN): it has expired or was revoked, and it cannot be refreshed; make a new one in the Box Developer Console", "")
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if v := resp.Header.Get("Www-Authenticate"); v != "" {
		h.Set("Www-Authenticate", v)
	}
	if v := resp.Header.Get("Box-Request-Id"); v != "" {
		h.Set("Box-Request-Id", v)
	}
	return &http.Response{
		Status: "401 Unauthorized", StatusCode: http.StatusUnauthorized,
		Proto: resp.Proto, ProtoMajor: resp.ProtoMajor, ProtoMinor: resp.ProtoMinor,
		Header: h, Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)),
		Request: resp.Request,
	}
}

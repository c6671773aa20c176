package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"maps"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/boxproxy/boxproxy/apierr"
	"github.com/boxproxy/boxproxy/auth"
)

// transport is the one RoundTripper of the request path: it sets the token
// on a copy of each attempt (never on the request it was handed, as
// x/oauth2's Transport) and decides whether to try again: once after a 401
// with a new token, and (when enabled) after 429/5xx/network errors on
// idempotent methods whose body is kept.
type transport struct {
	p     *Proxy
	base  http.RoundTripper
	pools *pools // set when base is net/http's Transport
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
	if err != nil && st.stream != nil && ctx.Err() == nil && !isClientBody(err) {
		// A streamed body none of which was sent (say the pooled
		// connection was closed by Box's side while idle) can go once more;
		// net/http does not retry a body it cannot rewind.
		if next := st.stream.again(); next != nil {
			st.stream = next
			t.p.o.Metrics.Retry("network")
			resp, err = t.send(req, st, tok)
		}
	}

	if err == nil && resp.StatusCode == http.StatusUnauthorized {
		if !tokens.Refreshable() {
			return developerTokenExpired(resp), nil
		}
		tokens.Invalidate(st.subject, tok.Access())
		if !st.canRetry {
			next := st.stream.again()
			if next == nil {
				return resp, nil // the body was sent and is gone: the client gets Box's 401
			}
			st.stream = next
		}
		discard(resp)
		t.p.o.Metrics.Retry("401")
		if tok, err = tokens.Token(ctx, st.subject); err != nil {
			return nil, &tokenFailure{err}
		}
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
		resp, err = t.send(req, st, tok)
	}
	return resp, err
}

// send makes one attempt with tok on a copy of req, with a fresh reader of
// the kept body, or the streamed body with Expect: 100-continue.
func (t *transport) send(req *http.Request, st *state, tok auth.Token) (*http.Response, error) {
	// A body is watched while it is sent (see watchdog), under a context of
	// the attempt's own that the watchdog can cancel.
	start := time.Now()
	var wd *watchdog
	ctx := context.Context(st)
	if bound := t.stallBound(); bound > 0 && (len(st.body) > 0 || st.stream != nil) {
		var r io.Reader = st.stream
		if st.body != nil {
			r = bytes.NewReader(st.body)
		}
		wd, ctx = newWatchdog(st, bound, start, r)
	}
	out := req.WithContext(ctx) // a copy, without ReverseProxy's 1xx hook (see state)
	// A shallow copy of the map (the values are not written to): maps.Clone
	// copies its table whole, cheaper than adding the fields one by one.
	out.Header = maps.Clone(req.Header)
	if out.Header == nil {
		out.Header = make(http.Header, 2)
	}
	out.Header["Authorization"] = tok.AuthorizationHeader()
	switch {
	case st.body != nil:
		body := st.body
		if wd != nil && len(body) > smallKeptBody {
			out.Body = &wd.body
			out.GetBody = func() (io.ReadCloser, error) { return &watchedBody{r: bytes.NewReader(body), w: wd}, nil }
		} else {
			out.Body = io.NopCloser(bytes.NewReader(body))
			out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		}
		out.ContentLength, out.TransferEncoding = int64(len(body)), nil
	case st.stream != nil:
		// Box (like Go's server) checks the token before it reads a body and
		// answers a bad one before the body is sent: the body then stays
		// with us and can go again with a new token. The connection is not
		// kept after such an attempt: over HTTP/1.1 net/http would
		// otherwise send the body after an early answer, to keep the
		// connection, and the body would be gone.
		out.Body = st.stream
		if wd != nil {
			out.Body = &wd.body
		}
		out.GetBody = nil
		out.Header["Expect"] = expectContinue
		out.Close = true
	}
	st.log.Attempts++
	var resp *http.Response
	var err error
	if t.pools != nil {
		resp, err = t.pools.roundTrip(out, st.user)
	} else {
		resp, err = t.base.RoundTrip(out)
	}
	if wd != nil {
		if stalled := wd.stop(); stalled != nil {
			// The watchdog cancelled this attempt: name its cause rather
			// than the cancellation's symptom.
			if resp != nil {
				_ = resp.Body.Close()
			}
			resp, err = nil, stalled
		}
		if err != nil {
			wd.cancel(err)
		}
	}
	t.p.o.Metrics.Upstream(st.log.Route, time.Since(start))
	return resp, err
}

// stallBound is how long Box may take none of a request body being sent
// before the attempt is given up (see watchdog): the upstream timeout, as
// the Transport towards Box has it; 0 (no bound) for a RoundTripper that
// is not net/http's.
func (t *transport) stallBound() time.Duration {
	if t.pools == nil {
		return 0
	}
	return t.pools.template.ResponseHeaderTimeout
}

var expectContinue = []string{"100-continue"}

// smallKeptBody: a kept body up to this size is given to the Transport as
// the in-memory reader it recognises, which it writes with the header in
// one write (a body of a type it does not know is written after the header
// is flushed: one more write, and over TLS one more record). Its watchdog
// still runs, with the whole body as one step of progress (from the header
// written to the request written).
const smallKeptBody = 64 << 10

// streamBody is a request body too large to keep. It can be given to a
// second attempt only while no byte of it was read: again() checks that and
// cuts off the first attempt, so that a Transport goroutine still holding it
// can never take bytes meant for the second. Close is left to the server,
// which owns the body: a Transport closes the body of a request it gave up.
type streamBody struct {
	mu   sync.Mutex
	r    io.Reader
	n    int64
	shut bool // the first attempt was cut off
}

var errBodyMoved = errors.New("proxy: request body moved to a new attempt")

func (b *streamBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.shut {
		return 0, errBodyMoved
	}
	n, err := b.r.Read(p)
	b.n += int64(n)
	if err != nil && err != io.EOF {
		err = &clientBodyError{err}
	}
	return n, err
}

// stop cuts off whichever attempt still holds b.
func (b *streamBody) stop() {
	if b == nil {
		return
	}
	b.mu.Lock()
	b.shut = true
	b.mu.Unlock()
}

// clientBodyError is a failure to read the client's body (it hung up, or
// sent a broken one): the client's doing, not Box's.
type clientBodyError struct{ err error }

func (e *clientBodyError) Error() string {
	return "reading the client's request body: " + e.err.Error()
}
func (e *clientBodyError) Unwrap() error { return e.err }

func isClientBody(err error) bool {
	var ce *clientBodyError
	return errors.As(err, &ce) || errors.Is(err, errBodyMoved)
}

func (b *streamBody) Close() error { return nil }

// again returns the body for one more attempt, or nil when some of it was
// read already. The attempt that held b is cut off.
func (b *streamBody) again() *streamBody {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.n > 0 || b.shut {
		return nil
	}
	b.shut = true
	return &streamBody{r: b.r}
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

package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/boxproxy/boxproxy/apierr"
	"github.com/boxproxy/boxproxy/auth"
)

// maxRewrite bounds the upload-session answers that are read to rewrite URLs.
const maxRewrite = 1 << 20

// modifyResponse is the one place that edits Box's answers: it notes Box's
// request ID and points upload-session URLs at the proxy.
func (p *Proxy) modifyResponse(resp *http.Response) error {
	st := stateFrom(resp.Request.Context())
	for k := range resp.Trailer { // announced trailers
		if neverForward(k) {
			delete(resp.Trailer, k)
		}
	}
	if resp.ContentLength < 0 && resp.Body != nil && resp.Body != http.NoBody {
		// Trailers arrive at the body's end: filter them then.
		resp.Body = &trailerFilter{ReadCloser: resp.Body, resp: resp}
	}
	if ids := resp.Header["Box-Request-Id"]; len(ids) > 0 && ids[0] != "" { // net/http canonicalizes Box's names
		st.log.BoxRequestID = ids[0]
	}
	if resp.StatusCode >= 400 && st.log.BoxRequestID == "" && isJSON(resp) && resp.ContentLength > 0 && resp.ContentLength <= 64<<10 {
		body, err := readBack(resp, 64<<10)
		if err == nil {
			var b struct {
				RequestID string `json:"request_id"`
			}
			if json.Unmarshal(body, &b) == nil {
				st.log.BoxRequestID = b.RequestID
			}
		}
	}
	if strings.Contains(resp.Request.URL.Path, "/upload_sessions") && hasBody(resp) && isJSON(resp) {
		if err := p.rewriteSessionURLs(resp); err != nil {
			return err
		}
	}
	switch {
	case resp.StatusCode == http.StatusSwitchingProtocols, isEventStream(resp.Header.Get("Content-Type")):
		// ReverseProxy reads these answers' fields: it refuses a protocol
		// switch, and flushes an event stream as it comes. It copies them.
		for k := range resp.Header {
			if neverForward(k) {
				delete(resp.Header, k)
			}
		}
	default:
		h := st.w.Header()
		if _, ok := resp.Header["Content-Type"]; !ok && hasBody(resp) {
			// Box named no type: Go's server would sniff one and add it.
			h["Content-Type"] = nil
		}
		deliver(h, resp.Header)
	}
	return nil
}

// isEventStream says whether a Content-Type is text/event-stream, without
// the allocation of mime.ParseMediaType.
func isEventStream(ct string) bool {
	ct = strings.TrimLeft(ct, " \t")
	const es = "text/event-stream"
	return len(ct) >= len(es) && strings.EqualFold(ct[:len(es)], es) && (len(ct) == len(es) || ct[len(es)] == ';' || ct[len(es)] == ' ' || ct[len(es)] == '\t')
}

// deliver moves the answer's fields, less those never forwarded, onto the
// client's answer, in one pass over the few an answer has. ReverseProxy
// would otherwise copy them there itself, next, with a new slice for every
// field (Box's answers have a dozen); the slices of Box's answer are read
// once and written by no one, so they can simply change hands. What is
// already there (X-Request-Id) stays first, as with ReverseProxy's copy.
// src is left empty, so ReverseProxy copies nothing.
func deliver(dst, src http.Header) {
	for k, vv := range src {
		if neverForward(k) {
			continue
		}
		if old, ok := dst[k]; ok {
			dst[k] = append(old[:len(old):len(old)], vv...) // never into old's array
		} else {
			dst[k] = vv
		}
	}
	clear(src)
}

// sessionURL matches an absolute URL of an upload session as the value of
// one of session_endpoints' fields, with or without JSON-escaped slashes;
// group 2 is the origin to replace. Only those fields: the same text inside
// another string (a file's description in a commit's answer) is the user's.
// The host is Box's to choose (it may vary), so any host is replaced.
var sessionURL = regexp.MustCompile(`("(?:upload_part|commit|abort|list_parts|status|log_event)"\s*:\s*")(https?:(?:\\?/){2}[^"/\\]+)((?:\\?/)api(?:\\?/)2\.0(?:\\?/)files(?:\\?/)upload_sessions)`)

// rewriteSessionURLs points the absolute session_endpoints that Box answers
// with (on whichever upload host) at the proxy's public URL, so that SDKs
// that call them as given pass through the proxy and get a token.
func (p *Proxy) rewriteSessionURLs(resp *http.Response) error {
	if resp.ContentLength > maxRewrite {
		return nil
	}
	body, err := readBack(resp, maxRewrite)
	if err != nil {
		if errors.Is(err, errTooLarge) { // put back whole: pass it on unchanged
			p.o.Logger.Warn().Err(err).Msg("upload-session answer not rewritten")
			return nil
		}
		return err // Box's answer broke off: a 502, not a silently cut body
	}
	out := sessionURL.ReplaceAllFunc(body, func(m []byte) []byte {
		sub := sessionURL.FindSubmatchIndex(m)
		return append(append(m[:sub[3]:sub[3]], p.public...), m[sub[6]:]...)
	})
	resp.Body = io.NopCloser(bytes.NewReader(out))
	resp.ContentLength = int64(len(out))
	resp.Header.Set("Content-Length", strconv.Itoa(len(out)))
	return nil
}

var errTooLarge = errors.New("body too large to inspect")

// readBack reads a body (up to limit) and puts an equal one back. A larger
// body is put back whole, unread, with an error.
func readBack(resp *http.Response, limit int64) ([]byte, error) {
	orig := resp.Body
	body, err := io.ReadAll(io.LimitReader(orig, limit+1))
	if err != nil {
		_ = orig.Close()
		return nil, err
	}
	if int64(len(body)) > limit {
		resp.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(body), orig), orig}
		return nil, errTooLarge
	}
	_ = orig.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return body, nil
}

// hasBody says whether an answer can carry a body: not one to HEAD, nor a
// 204 or 304 (whose Content-Length, if any, describes another answer).
func hasBody(resp *http.Response) bool {
	return resp.Request.Method != http.MethodHead && resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusNotModified
}

func isJSON(resp *http.Response) bool {
	ct := resp.Header.Get("Content-Type")
	if ct == "" {
		return false
	}
	mt, _, _ := mime.ParseMediaType(ct)
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

// errorHandler is the one place that turns a failure into a response.
func (p *Proxy) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil && errors.Is(err, context.Canceled) {
		// The client went away; nobody reads an answer.
		w.WriteHeader(499)
		return
	}
	var tf *tokenFailure
	if errors.As(err, &tf) {
		apierr.Refuse(w, r, ErrorFor(tf.err, p.o.LoginURL))
		return
	}
	if isClientBody(err) {
		// The client's body broke off: nothing for Box to be blamed for.
		if r.Context().Err() != nil {
			w.WriteHeader(499)
			return
		}
		apierr.Refuse(w, r, &apierr.Error{Status: http.StatusBadRequest, Code: "bad_request_body", Message: "could not read the request body"})
		return
	}
	st := stateFrom(r.Context())
	apierr.Refuse(w, r, p.upstreamError(st.log.Route, err))
}

// upstreamError logs a failed upstream request and names the answer: 504
// after a timeout, 502 otherwise.
func (p *Proxy) upstreamError(route string, err error) *apierr.Error {
	p.o.Logger.Warn().Str("route", route).Str("error", upstreamCause(err)).Msg("upstream request failed")
	var stall *bodyStalledError
	if errors.As(err, &stall) {
		return &apierr.Error{Status: http.StatusGatewayTimeout, Code: "upstream_timeout", Message: "Box stopped reading the request body: none of it was taken for " + stall.bound.String() + " (BOXPROXY_UPSTREAM_TIMEOUT)"}
	}
	if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
		return &apierr.Error{Status: http.StatusGatewayTimeout, Code: "upstream_timeout", Message: "Box did not answer in time"}
	}
	return &apierr.Error{Status: http.StatusBadGateway, Code: "upstream_unreachable", Message: "could not get an answer from Box: " + upstreamCause(err)}
}

// upstreamCause names a transport error without its URL (whose query may
// hold the client's data).
func upstreamCause(err error) string {
	var oe *net.OpError
	var stall *bodyStalledError
	switch {
	case errors.As(err, &stall):
		return "Box stopped reading the request body"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed before the answer was complete"
	case isTimeout(err):
		return "timeout"
	case errors.As(err, &oe):
		return oe.Op + " failed"
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return "name lookup failed"
	}
	return "transport error"
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// ErrorFor maps a token error to the answer a client gets: one function for
// the proxy, the readiness probe and the commands.
func ErrorFor(err error, loginURL string) *apierr.Error {
	e := &apierr.Error{}
	var be *auth.BackoffError
	if errors.As(err, &be) {
		e.RetryAfter = max(1, int(time.Until(be.Until).Seconds()+0.999))
	}
	var te *auth.TokenError
	if errors.As(err, &te) && te.RetryAfter > 0 && e.RetryAfter == 0 {
		e.RetryAfter = max(1, int(te.RetryAfter.Seconds()))
	}
	if e.RetryAfter == 0 && (errors.Is(err, auth.ErrUnavailable) || errors.Is(err, auth.ErrTimeout) || errors.Is(err, auth.ErrBadResponse)) {
		// The request that made the failed attempt gets the same hint as
		// those answered from the back-off that follows it.
		e.RetryAfter = 1
	}
	switch {
	case errors.Is(err, auth.ErrLoginRequired):
		e.Status, e.Code = http.StatusServiceUnavailable, "login_required"
		e.Message = "boxproxy is not logged in to Box: open " + loginURL + " in a browser (or run boxproxy login)"
	case errors.Is(err, auth.ErrGrant):
		e.Status, e.Code = http.StatusServiceUnavailable, "login_expired"
		e.Message = "Box rejected the saved login (the refresh token expired or was revoked): log in again at " + loginURL + "; " + err.Error()
	case errors.Is(err, auth.ErrClosed):
		e.Status, e.Code = http.StatusServiceUnavailable, "shutting_down"
		e.Message = "boxproxy is shutting down and asks Box for no new token; send the request again (to another replica)"
		e.RetryAfter = max(e.RetryAfter, 1)
	case errors.Is(err, auth.ErrFleet):
		// An oauth refresh that cannot take the fleet's lock: it waits for
		// Redis rather than risk sending Box a refresh token twice.
		e.Status, e.Code = http.StatusServiceUnavailable, "fleet_unavailable"
		e.Message = "the replicas' shared store (BOXPROXY_REDIS_URL) cannot be reached, so no token can be renewed safely now: " + err.Error()
		if e.RetryAfter == 0 {
			e.RetryAfter = 1
		}
	case errors.Is(err, auth.ErrConfig):
		e.Status, e.Code = http.StatusBadGateway, "box_configuration_error"
		e.Message = "Box rejected boxproxy's app configuration, so no token can be had; fix the configuration: " + err.Error()
	case errors.Is(err, auth.ErrTimeout):
		e.Status, e.Code = http.StatusGatewayTimeout, "token_endpoint_timeout"
		e.Message = "Box's token endpoint did not answer in time: " + err.Error()
	case errors.Is(err, auth.ErrBadResponse):
		e.Status, e.Code = http.StatusBadGateway, "token_endpoint_bad_response"
		e.Message = "Box's token endpoint gave an unusable answer: " + err.Error()
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		e.Status, e.Code = http.StatusServiceUnavailable, "token_wait_cancelled"
		e.Message = "the request ended while it waited for a token"
	default:
		e.Status, e.Code = http.StatusServiceUnavailable, "token_endpoint_unavailable"
		e.Message = "Box's token endpoint is unavailable: " + err.Error()
	}
	return e
}

// trailerFilter drops the fields that are never forwarded from an answer's
// trailers, which net/http fills in when the body ends, before ReverseProxy
// copies them.
type trailerFilter struct {
	io.ReadCloser
	resp *http.Response
}

func (t *trailerFilter) Read(p []byte) (int, error) {
	n, err := t.ReadCloser.Read(p)
	if err != nil {
		for _, k := range neverForwarded {
			delete(t.resp.Trailer, k)
		}
	}
	return n, err
}

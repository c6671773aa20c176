// Package proxy forwards Box API requests: it routes /2.0/ to the API host and
// /api/2.0/ to the upload host, picks the subject from As-User, removes the
// client's credentials, sets a token from the cache and, after a 401, sends the
// same request once more with a new token.
package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/boxproxy/boxproxy/apierr"
	"github.com/boxproxy/boxproxy/auth"
	"github.com/boxproxy/boxproxy/config"
	"github.com/boxproxy/boxproxy/metrics"
	"github.com/boxproxy/boxproxy/upstream"
)

// Tokens is what the proxy needs of the token cache.
type Tokens interface {
	Token(ctx context.Context, s auth.Subject) (auth.Token, error)
	Invalidate(s auth.Subject, access string) bool
	Refreshable() bool
}

// Options configure a Proxy.
type Options struct {
	API, Upload    *url.URL // upstreams for /2.0/ and /api/2.0/
	Public         *url.URL // how clients reach the proxy (upload-session URLs are rewritten to it)
	Tokens         Tokens
	DefaultSubject auth.Subject
	// AsUserToken: As-User picks the subject and is removed. Otherwise it is
	// passed on beside the default subject's token.
	AsUserToken     bool
	AllowedUsers    []string // empty = any
	RetryBodyLimit  int64    // bodies up to this size are kept for a second attempt
	UpstreamRetries int      // extra attempts after 429/5xx/network errors on idempotent methods
	RetryWaitMax    time.Duration
	Transport       http.RoundTripper // nil = upstream.New with NewTransport() as the fallback
	LoginURL        string            // named in errors when the oauth method has no login
	Metrics         *metrics.Metrics
	Logger          zerolog.Logger
}

// Proxy is the http.Handler for /2.0/ and /api/2.0/.
type Proxy struct {
	o           Options
	allowed     map[string]struct{}
	rp          *httputil.ReverseProxy
	rt          *transport
	public      string // Public without a trailing slash
	defaultName string
	engine      *upstream.Transport // set when the fast path may lend its connections
	fast        [2]fastRoute        // /2.0/ and /api/2.0/ on the fast path (fast.go)
}

// New checks o and builds a Proxy.
func New(o Options) (*Proxy, error) {
	if o.API == nil || o.Upload == nil || o.Public == nil || o.Tokens == nil {
		return nil, errors.New("proxy: API, Upload, Public and Tokens are required")
	}
	if o.Transport == nil {
		o.Transport = upstream.New(upstream.Options{Fallback: NewTransport(), MaxIdlePerHost: maxIdlePerHost})
	}
	if o.RetryWaitMax <= 0 {
		o.RetryWaitMax = 10 * time.Second
	}
	p := &Proxy{o: o, public: strings.TrimSuffix(o.Public.String(), "/"), defaultName: o.DefaultSubject.String()}
	if len(o.AllowedUsers) > 0 {
		p.allowed = make(map[string]struct{}, len(o.AllowedUsers))
		for _, u := range o.AllowedUsers {
			p.allowed[u] = struct{}{}
		}
	}
	p.rt = &transport{p: p, base: o.Transport}
	p.rp = &httputil.ReverseProxy{
		Rewrite:        p.rewrite,
		Transport:      p.rt,
		ModifyResponse: p.modifyResponse,
		ErrorHandler:   p.errorHandler,
		BufferPool:     bufferPool{},
		ErrorLog:       log.New(zerologWriter{o.Logger}, "", 0),
	}
	p.initFast()
	return p, nil
}

const maxIdlePerHost = 512

// NewTransport returns the net/http Transport used towards Box for what the
// upstream package's HTTP/1.1 engine does not take (HTTPS, request bodies):
// many idle connections per host (Go's default keeps 2), HTTP/2 where Box
// offers it, no transparent decompression (bodies pass through as Box sent them).
func NewTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 2 * maxIdlePerHost
	t.MaxIdleConnsPerHost = maxIdlePerHost
	t.IdleConnTimeout = 90 * time.Second
	t.DisableCompression = true
	t.ForceAttemptHTTP2 = true
	t.ReadBufferSize = 32 << 10
	t.WriteBufferSize = 32 << 10
	return t
}

// Info is what the access log wants to know of a proxied request. The server
// hands it in through the ResponseWriter (see InfoWriter).
type Info struct {
	Route        string // api, upload
	Subject      string
	Attempts     int
	BoxRequestID string
}

// InfoWriter is a ResponseWriter that carries an Info.
type InfoWriter interface {
	http.ResponseWriter
	Info() *Info
}

// state travels with one request from ServeHTTP to the transport.
type state struct {
	info     *Info
	target   *url.URL
	subject  auth.Subject
	stripAs  bool
	body     []byte // the kept request body, when it can be sent again
	hasBody  bool   // the request has a body
	canRetry bool   // the body (if any) is kept
}

type stateKey struct{}

func stateFrom(ctx context.Context) *state {
	st, _ := ctx.Value(stateKey{}).(*state)
	return st
}

// ServeHTTP routes, checks and forwards one request.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	st := &state{subject: p.o.DefaultSubject}
	if iw, ok := w.(InfoWriter); ok {
		st.info = iw.Info()
	} else {
		st.info = &Info{}
	}
	path := r.URL.Path
	switch {
	case strings.HasPrefix(path, "/2.0/"):
		st.target, st.info.Route = p.o.API, "api"
	case strings.HasPrefix(path, "/api/2.0/"):
		st.target, st.info.Route = p.o.Upload, "upload"
	default:
		apierr.Write(w, http.StatusNotFound, "not_found", "boxproxy serves /2.0/... and /api/2.0/... only")
		return
	}
	if e := CheckTarget(r); e != nil {
		apierr.WriteError(w, e)
		return
	}
	if vals, ok := r.Header["As-User"]; ok {
		if len(vals) != 1 {
			apierr.Write(w, http.StatusBadRequest, "bad_as_user", "send one As-User header, not several")
			return
		}
		id := vals[0]
		if !config.IsBoxID(id) {
			apierr.Write(w, http.StatusBadRequest, "bad_as_user", "As-User must be a Box user ID (1 to 20 digits)")
			return
		}
		if p.allowed != nil {
			if _, ok := p.allowed[id]; !ok {
				apierr.Write(w, http.StatusForbidden, "user_not_allowed", "As-User names a user that BOXPROXY_ALLOWED_USERS does not list")
				return
			}
		}
		if p.o.AsUserToken {
			st.subject, st.stripAs = auth.Subject{Type: auth.User, ID: id}, true
		}
	}
	st.info.Subject = p.subjectName(st.subject)
	if err := p.keepBody(r, st); err != nil {
		if r.Context().Err() == nil {
			apierr.Write(w, http.StatusBadRequest, "bad_request_body", "could not read the request body")
		}
		return
	}
	p.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), stateKey{}, st)))
}

// subjectName is the subject as logs show it (enterprise:ID or user:ID),
// without building a string for the default subject on every request.
func (p *Proxy) subjectName(s auth.Subject) string {
	if s == p.o.DefaultSubject {
		return p.defaultName
	}
	return s.String()
}

// keepBody decides whether the request can be sent twice. A 401 retry needs
// the same body bytes, so a body up to RetryBodyLimit is read into memory; a
// larger one (or one of unknown length that turns out larger) streams through
// untouched and cannot be retried: holding it would cost its size in memory.
func (p *Proxy) keepBody(r *http.Request, st *state) error {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		st.canRetry = true
		return nil
	}
	st.hasBody = true
	limit := p.o.RetryBodyLimit
	if r.ContentLength > limit {
		return nil
	}
	if r.ContentLength > 0 {
		buf := make([]byte, r.ContentLength)
		if _, err := io.ReadFull(r.Body, buf); err != nil {
			return err
		}
		st.body, st.canRetry = buf, true
		return nil
	}
	// Unknown length (chunked): read up to the limit and see.
	var b bytes.Buffer
	n, err := io.Copy(&b, io.LimitReader(r.Body, limit+1))
	if err != nil {
		return err
	}
	if n <= limit {
		st.body, st.canRetry = b.Bytes(), true
		r.ContentLength = n
		return nil
	}
	r.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(b.Bytes()), r.Body), r.Body}
	return nil
}

// CheckTarget refuses request targets that could leave the Box API: the
// absolute or authority form, dot segments, and encoded slashes, backslashes
// or dots that a server might decode into a different path.
func CheckTarget(r *http.Request) *apierr.Error {
	if r.RequestURI == "" || r.RequestURI[0] != '/' {
		return &apierr.Error{Status: http.StatusBadRequest, Code: "bad_request_target", Message: "only origin-form request targets (/2.0/...) are accepted; boxproxy is not an open proxy"}
	}
	raw := r.URL.RawPath
	if raw == "" {
		raw = r.URL.Path
	}
	if strings.Contains(raw, "%") {
		lower := strings.ToLower(raw)
		if strings.Contains(lower, "%2f") || strings.Contains(lower, "%5c") || strings.Contains(lower, "%2e") || strings.Contains(lower, "%00") {
			return &apierr.Error{Status: http.StatusBadRequest, Code: "bad_path", Message: "encoded slashes, backslashes, dots and NULs are not accepted in the path"}
		}
	}
	if strings.Contains(r.URL.Path, "\\") || hasDotSegment(r.URL.Path) || hasControl(r.URL.Path) {
		return &apierr.Error{Status: http.StatusBadRequest, Code: "bad_path", Message: "dot segments, backslashes and control characters are not accepted in the path"}
	}
	return nil
}

func hasControl(p string) bool {
	for i := 0; i < len(p); i++ {
		if p[i] < 0x20 || p[i] == 0x7f {
			return true
		}
	}
	return false
}

func hasDotSegment(p string) bool {
	for p != "" {
		var seg string
		seg, p, _ = strings.Cut(p, "/")
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// rewrite is the one place that decides where a request goes and what it
// carries: the upstream with the same path and query (less access_token), and
// none of the client's credentials.
func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	st := stateFrom(pr.In.Context())
	out := pr.Out
	out.URL.Scheme = st.target.Scheme
	out.URL.Host = st.target.Host
	out.Host = ""
	if st.target.Path != "" {
		out.URL.Path = st.target.Path + pr.In.URL.Path
		if pr.In.URL.RawPath != "" {
			out.URL.RawPath = st.target.Path + pr.In.URL.RawPath
		}
	}
	out.URL.RawQuery = stripAccessToken(pr.In.URL.RawQuery)
	h := out.Header
	delete(h, "Authorization")
	delete(h, "Proxy-Authorization")
	delete(h, "Cookie")
	if strings.Contains(pr.In.URL.Path, "/upload_sessions") {
		// Its session URLs are rewritten: the answer must not be compressed.
		delete(h, "Accept-Encoding")
	}
	if st.stripAs {
		delete(h, "As-User")
	}
}

// stripAccessToken removes every access_token parameter from a raw query and
// leaves the rest byte for byte.
func stripAccessToken(q string) string {
	if !strings.Contains(q, "access") && !strings.Contains(q, "%") {
		return q
	}
	var b strings.Builder
	kept := 0
	for more := true; more; {
		var part string
		part, q, more = strings.Cut(q, "&")
		key, _, _ := strings.Cut(part, "=")
		if k, err := url.QueryUnescape(key); (err == nil && k == "access_token") || key == "access_token" {
			continue
		}
		if kept > 0 {
			b.WriteByte('&') // empty parameters are kept too: byte for byte
		}
		kept++
		b.WriteString(part)
	}
	return b.String()
}

// bufferPool lends the 32 KiB buffers ReverseProxy copies bodies with.
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *(buffers.Get().(*[]byte)) }
func (bufferPool) Put(b []byte) { buffers.Put(&b) }

type zerologWriter struct{ l zerolog.Logger }

func (z zerologWriter) Write(b []byte) (int, error) {
	z.l.Debug().Str("component", "reverseproxy").Msg(strings.TrimSpace(string(b)))
	return len(b), nil
}

// Package proxy forwards Box API requests through one httputil.ReverseProxy:
// it routes /2.0/ to the API host and /api/2.0/ to the upload host, picks the
// subject from As-User, removes what must never reach Box, and hands the
// request to a RoundTripper that sets a token from the cache and, after a 401,
// sends the same request once more with a new token.
package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/boxproxy/boxproxy/accesslog"
	"github.com/boxproxy/boxproxy/apierr"
	"github.com/boxproxy/boxproxy/auth"
	"github.com/boxproxy/boxproxy/config"
	"github.com/boxproxy/boxproxy/internal/safefile"
	"github.com/boxproxy/boxproxy/metrics"
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
	Transport       http.RoundTripper // towards Box; nil = NewTransport(TransportOptions{})
	LoginURL        string            // named in errors when the oauth method has no login
	Metrics         *metrics.Metrics
	Logger          zerolog.Logger
}

// Proxy is the http.Handler for /2.0/ and /api/2.0/.
type Proxy struct {
	o           Options
	kept        budget // bytes of request bodies held for a retry
	asUser      AsUserRule
	rp          *httputil.ReverseProxy
	rt          *transport
	public      string // Public without a trailing slash
	defaultName string
}

// New checks o and builds a Proxy.
func New(o Options) (*Proxy, error) {
	if o.API == nil || o.Upload == nil || o.Public == nil || o.Tokens == nil {
		return nil, errors.New("proxy: API, Upload, Public and Tokens are required")
	}
	if o.Transport == nil {
		t, err := NewTransport(TransportOptions{})
		if err != nil {
			return nil, err
		}
		o.Transport = t
	}
	if o.RetryWaitMax <= 0 {
		o.RetryWaitMax = 10 * time.Second
	}
	p := &Proxy{o: o, public: strings.TrimSuffix(o.Public.String(), "/"), defaultName: o.DefaultSubject.String(),
		asUser: NewAsUserRule(o.AllowedUsers)}
	p.kept.max = max(8*o.RetryBodyLimit, 64<<20)
	p.rt = &transport{p: p, base: o.Transport}
	if ht, ok := o.Transport.(*http.Transport); ok {
		p.rt.pools = newPools(ht)
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite:        p.rewrite,
		Transport:      p.rt,
		ModifyResponse: p.modifyResponse,
		ErrorHandler:   p.errorHandler,
		BufferPool:     bufferPool{},
		ErrorLog:       log.New(zerologWriter{o.Logger}, "", 0),
	}
	return p, nil
}

// TransportOptions tune the Transport towards Box.
type TransportOptions struct {
	// ResponseHeaderTimeout bounds the wait for Box's answer head once the
	// request is sent (default 5 minutes). The proxy also takes it as the
	// longest Box may take none of a request body being sent (watchdog).
	ResponseHeaderTimeout time.Duration
	// CAFile names PEM certificates trusted beside the system roots.
	CAFile string
}

const maxIdlePerHost = 512

// expectContinueWait is how long a streamed body waits for Box's 100
// Continue before it is sent anyway (curl waits as long).
const expectContinueWait = time.Second

// NewTransport returns net/http's Transport as boxproxy uses it towards Box:
// many idle connections per host (Go's default keeps 2), HTTP/2 where Box
// offers it, no transparent decompression (bodies pass through as Box sent
// them), a bound on the wait for the answer head, and Expect: 100-continue
// honoured (see transport.RoundTrip).
func NewTransport(o TransportOptions) (*http.Transport, error) {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 2 * maxIdlePerHost
	t.MaxIdleConnsPerHost = maxIdlePerHost
	t.IdleConnTimeout = 90 * time.Second
	t.DisableCompression = true
	t.ForceAttemptHTTP2 = true
	t.ExpectContinueTimeout = expectContinueWait
	t.ResponseHeaderTimeout = o.ResponseHeaderTimeout
	if t.ResponseHeaderTimeout <= 0 {
		t.ResponseHeaderTimeout = 5 * time.Minute
	}
	t.ReadBufferSize = 32 << 10
	t.WriteBufferSize = 32 << 10
	if o.CAFile != "" {
		pool, err := CertPool(o.CAFile)
		if err != nil {
			return nil, err
		}
		t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return t, nil
}

// CertPool is the system roots plus the PEM certificates in file.
func CertPool(file string) (*x509.CertPool, error) {
	// Bounded and never a device or FIFO (config.Load checked it first; this
	// is the same check for what may have changed since). The errors name the
	// variable, never the path.
	pem, err := safefile.Read(strings.TrimSpace(file), config.MaxCAFileSize)
	if err != nil {
		return nil, fmt.Errorf("BOXPROXY_UPSTREAM_CA_FILE: cannot read the file it names (%v)", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("BOXPROXY_UPSTREAM_CA_FILE: the file it names holds no PEM certificate")
	}
	return pool, nil
}

// state travels with one request from ServeHTTP to the transport. It is the
// request's context from ServeHTTP on (the parent's, plus itself under
// stateKey), which saves a context.WithValue per request. Each attempt is
// sent with it rather than with ReverseProxy's context, whose 1xx hook
// would relay Box's 100 Continue to the client and, doing so, clear the
// answer's header fields set so far (X-Request-Id, Connection: close). Go's
// server answers a client's own Expect itself.
type state struct {
	context.Context
	w        http.ResponseWriter // the client's answer, for modifyResponse
	log      *accesslog.Entry
	target   *url.URL
	subject  auth.Subject
	user     string // whose data the answer holds: the subject, and the As-User passed on
	stripAs  bool
	body     []byte      // the kept request body, when it can be sent again
	stream   *streamBody // a body too large to keep, sent at most once
	canRetry bool        // the body (if any) is kept
}

type stateKey struct{}

// Value is the state itself under stateKey, else the parent's value.
func (st *state) Value(key any) any {
	if key == (stateKey{}) {
		return st
	}
	return st.Context.Value(key)
}

func stateFrom(ctx context.Context) *state {
	st, _ := ctx.Value(stateKey{}).(*state)
	return st
}

// ServeHTTP routes one request that the server admitted, picks its subject
// and forwards it, recording into the access-log entry its context carries
// (if any).
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if e, ok := accesslog.Lookup(ctx); ok {
		p.serve(w, r, e, ctx, new(Forward))
		return
	}
	x := new(struct {
		e accesslog.Entry
		f Forward
	})
	p.serve(w, r, &x.e, x.e.In(ctx), &x.f)
}

// Forward is the proxy's record of one request it forwards. Serve takes it
// from a server that keeps a record per request anyway, so that forwarding
// allocates nothing of its own for it. Its zero value is ready; it is used
// for one request.
type Forward struct{ st state }

// Serve is ServeHTTP for a server that keeps the request's access-log entry
// e and f itself: the proxy puts e in the request's context (r's must not
// carry it yet) in the same step as its own state, which saves the server a
// copy of the request.
func (p *Proxy) Serve(w http.ResponseWriter, r *http.Request, e *accesslog.Entry, f *Forward) {
	p.serve(w, r, e, e.In(r.Context()), f)
}

// serve forwards r; ctx is r's context, carrying e.
func (p *Proxy) serve(w http.ResponseWriter, r *http.Request, e *accesslog.Entry, ctx context.Context, f *Forward) {
	st := &f.st
	*st = state{Context: ctx, w: w, log: e, subject: p.o.DefaultSubject}
	r = r.WithContext(st) // the one copy of the request made here
	switch st.log.Route = Route(r.URL.Path); st.log.Route {
	case RouteAPI:
		st.target = p.o.API
	case RouteUpload:
		st.target = p.o.Upload
	default:
		apierr.Refuse(w, r, &apierr.Error{Status: http.StatusNotFound, Code: "not_found", Message: "boxproxy serves /2.0/... and /api/2.0/... only"})
		return
	}
	if !boxMethod(r.Method) {
		// TRACE would have Box (or an egress proxy on the way) echo the
		// request back, token included; CONNECT asks for a tunnel.
		w.Header()["Allow"] = []string{allowedMethods}
		apierr.Refuse(w, r, &apierr.Error{Status: http.StatusMethodNotAllowed, Code: "method_not_allowed", Message: "boxproxy forwards the methods Box's API uses: " + allowedMethods})
		return
	}
	if vals, ok := r.Header["As-User"]; ok {
		if len(vals) != 1 {
			apierr.Refuse(w, r, &apierr.Error{Status: http.StatusBadRequest, Code: "bad_as_user", Message: "send one As-User header, not several"})
			return
		}
		s, e := p.asUser.Subject(vals[0])
		if e != nil {
			apierr.Refuse(w, r, e)
			return
		}
		if p.o.AsUserToken {
			st.subject, st.stripAs = s, true
		}
	}
	st.log.Subject = p.subjectName(st.subject)
	release, err := p.keepBody(r, st)
	defer release()
	if err != nil {
		if r.Context().Err() == nil {
			apierr.Refuse(w, r, &apierr.Error{Status: http.StatusBadRequest, Code: "bad_request_body", Message: "could not read the request body"})
		}
		return
	}
	if st.stream != nil {
		// Box may answer before it reads the body (a refusal): the body's
		// rest is then read and dropped after the answer, so that a client
		// still sending it reads that answer instead of a reset.
		_ = http.NewResponseController(w).EnableFullDuplex()
		defer func() {
			st.stream.stop() // no attempt reads on while the rest is dropped
			apierr.Drain(w, r)
		}()
	}
	p.rp.ServeHTTP(w, r)
}

// allowedMethods are the methods Box's API uses (its OpenAPI description:
// GET, POST, PUT, PATCH, DELETE, OPTIONS), and HEAD.
const allowedMethods = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"

// boxMethod reports whether method is one of allowedMethods. net/http
// passes the method as the client spelled it; methods are case-sensitive.
func boxMethod(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions:
		return true
	}
	return false
}

// The routes, by path prefix.
const (
	RouteAPI    = "api"    // /2.0/… to BOXPROXY_API_URL
	RouteUpload = "upload" // /api/2.0/… to BOXPROXY_UPLOAD_URL
)

// Route names the route of a path: RouteAPI, RouteUpload, or "" for a
// path the proxy does not forward. It is the one place that says which
// paths are forwarded.
func Route(path string) string {
	switch {
	case strings.HasPrefix(path, "/2.0/"):
		return RouteAPI
	case strings.HasPrefix(path, "/api/2.0/"):
		return RouteUpload
	}
	return ""
}

// AsUserRule is the one rule for an As-User value, for requests and for
// `boxproxy token --as-user`: a Box user ID that BOXPROXY_ALLOWED_USERS (if
// set) lists.
type AsUserRule struct{ allowed map[string]struct{} }

// NewAsUserRule makes the rule for an allow-list; empty allows any user.
func NewAsUserRule(allowed []string) AsUserRule {
	if len(allowed) == 0 {
		return AsUserRule{}
	}
	r := AsUserRule{allowed: make(map[string]struct{}, len(allowed))}
	for _, u := range allowed {
		r.allowed[u] = struct{}{}
	}
	return r
}

// Subject returns the subject an As-User value names, or why it may not.
func (r AsUserRule) Subject(id string) (auth.Subject, *apierr.Error) {
	if !config.IsBoxID(id) {
		return auth.Subject{}, &apierr.Error{Status: http.StatusBadRequest, Code: "bad_as_user", Message: "As-User must be a Box user ID (1 to 20 digits)"}
	}
	if r.allowed != nil {
		if _, ok := r.allowed[id]; !ok {
			return auth.Subject{}, &apierr.Error{Status: http.StatusForbidden, Code: "user_not_allowed", Message: "As-User names a user that BOXPROXY_ALLOWED_USERS does not list"}
		}
	}
	return auth.Subject{Type: auth.User, ID: id}, nil
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
// the same body bytes, so a body up to RetryBodyLimit is read into memory,
// as it arrives (never on the strength of a declared length alone), while
// all kept bodies together stay within keptBudget; a larger one, one of
// unknown length that turns out larger, or one beyond the budget streams
// through and is sent with Expect: 100-continue, so that a 401 that comes
// before the body was sent can still be retried (transport). release gives
// the budget back.
func (p *Proxy) keepBody(r *http.Request, st *state) (release func(), err error) {
	release = func() {}
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		st.canRetry = true
		return release, nil
	}
	limit := p.o.RetryBodyLimit
	if r.ContentLength > 0 {
		limit = min(limit, r.ContentLength)
	}
	if r.ContentLength > p.o.RetryBodyLimit || !p.kept.take(limit) {
		st.stream = &streamBody{r: r.Body}
		return release, nil
	}
	release = func() { p.kept.give(limit) }
	var b bytes.Buffer
	b.Grow(int(min(limit+1, 64<<10)))
	n, err := io.Copy(&b, io.LimitReader(r.Body, limit+1))
	if err != nil {
		return release, err
	}
	if n <= limit && (r.ContentLength < 0 || n == r.ContentLength) {
		st.body, st.canRetry = b.Bytes(), true
		// Sent with its length now known, not chunked.
		r.ContentLength, r.TransferEncoding = n, nil
		return release, nil
	}
	if r.ContentLength >= 0 {
		return release, io.ErrUnexpectedEOF // fewer bytes than declared (net/http says so too)
	}
	st.stream = &streamBody{r: io.MultiReader(bytes.NewReader(b.Bytes()), r.Body)}
	return release, nil
}

// budget counts the bytes of request bodies kept in memory at once, so that
// many clients declaring large bodies cannot make the process hold them all.
type budget struct {
	mu        sync.Mutex
	used, max int64
}

func (b *budget) take(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.max {
		return false
	}
	b.used += n
	return true
}

func (b *budget) give(n int64) {
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
}

// CheckTarget refuses request targets that could leave the Box API: the
// absolute or authority form, dot segments (also with parameters: "..;x"),
// and encoded slashes, backslashes or dots that a server might decode into a
// different path.
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
		if strings.Contains(lower, "%2f") || strings.Contains(lower, "%5c") || strings.Contains(lower, "%2e") || strings.Contains(lower, "%00") || strings.Contains(lower, "%3b") {
			return &apierr.Error{Status: http.StatusBadRequest, Code: "bad_path", Message: "encoded slashes, backslashes, dots, semicolons and NULs are not accepted in the path"}
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

// hasDotSegment reports a "." or ".." segment, also with path parameters
// ("..;jsessionid=x"), which some servers read as "..".
func hasDotSegment(p string) bool {
	for p != "" {
		var seg string
		seg, p, _ = strings.Cut(p, "/")
		seg, _, _ = strings.Cut(seg, ";")
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// neverForwarded are the fields that never cross the proxy, in either
// direction: the client's credentials on the way in, and cookies either way
// (a client's cookie is not Box's business; a cookie Box sets would be stored
// for the proxy's address, shared by every caller). As-User is added to the
// request's list when it picks the token.
var neverForwarded = [...]string{"Authorization", "Proxy-Authorization", "Cookie", "Set-Cookie"}

// dropFields removes neverForwarded from h, and every field whose name holds
// an underscore ("As_User", "Authorization_") or any other character beyond
// letters, digits and inner hyphens (oddName): some servers read "_" as "-",
// so such a field could smuggle a credential or an As-User past the rules
// above (nginx drops underscored ones by default, too).
//
// One pass over the fields the request has, rather than a lookup for each
// name it might have.
func dropFields(h http.Header, asUser bool) {
	for k := range h {
		if neverForward(k) || asUser && k == "As-User" || oddName(k) {
			delete(h, k)
		}
	}
}

// oddName reports whether a field name holds anything but letters, digits
// and inner hyphens, the spelling of every field Box reads. Servers that map
// "_" to "-", or every other character to "_" (CGI-style), could otherwise
// read "As_User", "As.User" or "Authorization." as a field the rules above
// handle.
func oddName(k string) bool {
	if k == "" || k[0] == '-' || k[len(k)-1] == '-' {
		return true
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
			return true
		}
	}
	return false
}

func neverForward(k string) bool {
	for _, n := range neverForwarded {
		if k == n {
			return true
		}
	}
	return false
}

// rewrite is the one place that decides where a request goes and what it
// carries: the upstream with the same path and query (less access_token), and
// none of the fields that must not reach Box. ReverseProxy has already
// removed the hop-by-hop and Forwarded fields from pr.Out.
func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	st := stateFrom(pr.In.Context())
	pr.SetURL(st.target)
	pr.Out.Host = ""
	pr.Out.URL.RawQuery = stripAccessToken(pr.In.URL.RawQuery)
	dropFields(pr.Out.Header, st.stripAs)
	// No protocol switch through the proxy (a tunnel would bypass every
	// rule here), no trailers (they would bypass dropFields), and Expect is
	// the transport's to set.
	delete(pr.Out.Header, "Upgrade")
	delete(pr.Out.Header, "Connection")
	delete(pr.Out.Header, "Expect")
	pr.Out.Trailer = nil
	// Whose data the answer holds, as sent: the subject, and the As-User
	// passed on (ReverseProxy may have dropped one named in Connection).
	st.user = st.log.Subject
	if v := pr.Out.Header["As-User"]; len(v) == 1 {
		st.user += " as " + v[0]
	}
	if strings.Contains(pr.In.URL.Path, "/upload_sessions") {
		// Its session URLs are rewritten: the answer must not be compressed.
		delete(pr.Out.Header, "Accept-Encoding")
	}
}

// stripAccessToken removes every access_token parameter from a raw query,
// whatever its spelling (ACCESS_TOKEN, access%5Ftoken, "access_token+") or
// separator (& or ;), and leaves the rest byte for byte.
func stripAccessToken(q string) string {
	if !containsFold(q, "access") && !strings.Contains(q, "%") {
		return q
	}
	var b strings.Builder
	kept := 0
	for more := true; more; {
		var part string
		part, q, more = strings.Cut(q, "&")
		if strings.IndexByte(part, ';') >= 0 {
			if part = stripSemicolonParams(part); part == "" {
				continue
			}
		} else if isAccessToken(part) {
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

// stripSemicolonParams drops access_token from a part that some servers
// split further at ';'.
func stripSemicolonParams(part string) string {
	var kept []string
	for _, sub := range strings.Split(part, ";") {
		if !isAccessToken(sub) {
			kept = append(kept, sub)
		}
	}
	return strings.Join(kept, ";")
}

// isAccessToken reports whether a query parameter is named access_token, in
// any case, escaped or not, with spaces around it, or as common parsers read
// a name: PHP cuts it at a NUL, reads ".", " " (or "+") and a lone "[" as
// "_", and, like Rack, takes "access_token[]" or "access_token[x]" for
// access_token.
func isAccessToken(param string) bool {
	key, _, _ := strings.Cut(param, "=")
	if k, err := url.QueryUnescape(key); err == nil {
		key = k
	}
	key, _, _ = strings.Cut(key, "\x00")
	if i := strings.IndexByte(key, '['); i >= 0 {
		if strings.IndexByte(key[i:], ']') >= 0 {
			key = key[:i] // an array: access_token[] or access_token[x]
		} else {
			key = key[:i] + "_" + key[i+1:] // PHP reads a lone "[" as "_"
		}
	}
	key = strings.TrimSpace(key)
	if len(key) != len("access_token") {
		return false
	}
	return strings.EqualFold(strings.Map(func(r rune) rune {
		if r == '.' || r == ' ' {
			return '_'
		}
		return r
	}, key), "access_token")
}

func containsFold(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}

// bufferPool lends the 32 KiB buffers ReverseProxy copies bodies with. It
// pools array pointers, so that neither Get nor Put allocates.
type bufferPool struct{}

const copyBuffer = 32 << 10

var buffers = sync.Pool{New: func() any { return new([copyBuffer]byte) }}

func (bufferPool) Get() []byte { return buffers.Get().(*[copyBuffer]byte)[:] }
func (bufferPool) Put(b []byte) {
	if cap(b) >= copyBuffer {
		buffers.Put((*[copyBuffer]byte)(b[:copyBuffer]))
	}
}

type zerologWriter struct{ l zerolog.Logger }

func (z zerologWriter) Write(b []byte) (int, error) {
	z.l.Debug().Str("component", "reverseproxy").Msg(strings.TrimSpace(string(b)))
	return len(b), nil
}

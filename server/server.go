// Package server is boxproxy's HTTP front: it checks who may talk to the proxy
// (loopback Host, same-origin browsers, the inbound key), gives each request an
// ID and an access-log line, serves the probes, metrics and OAuth pages, hands
// /2.0/ and /api/2.0/ to the proxy, and shuts down gracefully.
package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/boxproxy/boxproxy/accesslog"
	"github.com/boxproxy/boxproxy/apierr"
	"github.com/boxproxy/boxproxy/config"
	"github.com/boxproxy/boxproxy/metrics"
	"github.com/boxproxy/boxproxy/proxy"
)

// Server is the configured HTTP server.
type Server struct {
	cfg     *config.Config
	log     zerolog.Logger
	m       *metrics.Metrics
	auth    *Auth
	proxy   *proxy.Proxy
	http    *http.Server
	keyHash []byte // sha256 of the inbound key; nil = no key
	hosts   map[string]bool
	origin  string // the public URL's origin
	quit    chan struct{}
	quitOne sync.Once
	idBase  string
	idSeq   atomic.Uint64
	oauth   *oauthWeb
	admin   adminServer // BOXPROXY_ADMIN_LISTEN (admin.go)
}

// New builds the server: auth, proxy and handlers, from cfg.
func New(cfg *config.Config, log zerolog.Logger) (*Server, error) {
	m := metrics.New()
	a, err := NewAuth(cfg, log, m)
	if err != nil {
		return nil, err
	}
	return NewWithAuth(cfg, log, m, a)
}

// NewWithAuth builds the server around an Auth already made.
func NewWithAuth(cfg *config.Config, log zerolog.Logger, m *metrics.Metrics, a *Auth) (*Server, error) {
	s := &Server{cfg: cfg, log: log, m: m, auth: a, quit: make(chan struct{})}
	rt, err := proxy.NewTransport(proxy.TransportOptions{ResponseHeaderTimeout: cfg.UpstreamTimeout, CAFile: cfg.UpstreamCAFile})
	if err != nil {
		return nil, err
	}
	p, err := proxy.New(proxy.Options{
		Transport: rt,
		API:       cfg.API, Upload: cfg.Upload, Public: cfg.Public,
		Tokens: a.Cache, DefaultSubject: a.Default,
		AsUserToken:     cfg.AsUser == config.AsUserToken,
		AllowedUsers:    cfg.AllowedUsers,
		RetryBodyLimit:  int64(cfg.RetryBodyLimit),
		UpstreamRetries: cfg.UpstreamRetries,
		LoginURL:        s.loginURL(),
		Metrics:         m,
		Logger:          log,
	})
	if err != nil {
		return nil, err
	}
	s.proxy = p
	if cfg.InboundKey != "" {
		h := sha256.Sum256([]byte(cfg.InboundKey))
		s.keyHash = h[:]
	}
	s.hosts = map[string]bool{strings.ToLower(cfg.Public.Hostname()): true}
	if h, _, err := net.SplitHostPort(cfg.Listen); err == nil {
		if ip := net.ParseIP(h); ip != nil && !ip.IsUnspecified() {
			s.hosts[ip.String()] = true
		}
	}
	s.origin = strings.ToLower(cfg.Public.Scheme + "://" + cfg.Public.Host)
	var b [6]byte
	_, _ = rand.Read(b[:])
	s.idBase = hex.EncodeToString(b[:]) + "-"
	if a.OAuth != nil {
		s.oauth = newOAuthWeb(s, a.OAuth)
	}
	m.DefaultTokenExpiry(func() float64 {
		t, ok := a.Cache.Peek(a.Default)
		switch {
		case !ok:
			return 0
		case t.Expiry.IsZero():
			return posInf
		}
		return max(0, time.Until(t.Expiry).Seconds())
	})
	headerTimeout := cfg.HeaderTimeout
	if headerTimeout <= 0 {
		headerTimeout = 10 * time.Second
	}
	s.http = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: headerTimeout,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          nil,
	}
	return s, nil
}

var posInf = func() float64 { var z float64; return 1 / z }()

// Auth returns the server's token side.
func (s *Server) Auth() *Auth { return s.auth }

func (s *Server) loginURL() string {
	return strings.TrimSuffix(s.cfg.Public.String(), "/") + "/auth/login"
}

// Quit is closed when POST /quitquitquit asks the server to stop.
func (s *Server) Quit() <-chan struct{} { return s.quit }

// Serve serves on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	// Warm the default subject's token, so that the first request does not wait.
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.TokenTimeout)
		defer cancel()
		_, _ = s.auth.Cache.Token(ctx, s.auth.Default)
	}()
	err := s.http.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting, lets in-flight requests finish until ctx ends,
// then closes what is left.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.http.Shutdown(ctx)
	if err != nil {
		_ = s.http.Close()
	}
	return err
}

// recorder notes the status and the bytes of the answer for the access log.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 && code >= 200 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach Flush, deadlines and full duplex.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Flush passes flushes on (ReverseProxy flushes streamed answers).
func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// exchange is what the server keeps of one request while it serves it, in
// one allocation: the recorder, the access-log record, the proxy's record
// and the X-Request-Id field's value.
type exchange struct {
	rec   recorder
	entry accesslog.Entry
	fwd   proxy.Forward // the proxy's, when it forwards the request
	id    [1]string
}

// ServeHTTP admits, routes, logs and counts every request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var start time.Time
	if s.log.GetLevel() <= zerolog.InfoLevel {
		start = time.Now() // for duration_ms; without access lines, no clock read
	}
	x := &exchange{rec: recorder{ResponseWriter: w}}
	rec, entry := &x.rec, &x.entry
	ids := s.requestID(r, &x.id)
	id := ids[0]
	w.Header()["X-Request-Id"] = ids
	if len(r.TransferEncoding) > 0 || (r.ContentLength != 0 && !r.ProtoAtLeast(1, 1)) {
		// net/http has read a chunked body, dropping any Content-Length
		// beside it. A front end that framed the request by that length
		// would take the bytes after the chunks for the next request: none
		// is read from this connection (request smuggling). Over HTTP/1.0
		// net/http ignores and removes Transfer-Encoding and frames by
		// Content-Length, so a front end that honoured chunked would see
		// what follows as part of this body: an HTTP/1.0 request with a body
		// does not keep its connection either.
		w.Header()["Connection"] = []string{"close"}
	}
	s.m.InFlight(1)
	// The bookkeeping runs even when ReverseProxy aborts the handler with
	// http.ErrAbortHandler (the client hung up mid-body); the panic then goes
	// on, so that the server cuts the connection instead of ending a chunked
	// body as if it were complete.
	defer func() {
		p := recover()
		s.finish(rec, r, id, entry, start, p != nil)
		if p != nil {
			panic(p)
		}
	}()
	s.serve(rec, r, x)
}

// finish counts and logs one request.
func (s *Server) finish(rec *recorder, r *http.Request, id string, e *accesslog.Entry, start time.Time, aborted bool) {
	if e.Route == "" {
		if e.Route = proxy.Route(r.URL.Path); e.Route == "" {
			e.Route = "other"
		}
	}
	status := rec.status
	if status == 0 {
		status = http.StatusOK
		if aborted {
			status = 499
		}
	}
	s.m.InFlight(-1)
	s.m.Request(e.Route, status)
	if e.Route == "healthz" || e.Route == "readyz" || e.Route == "metrics" {
		return // probes and scrapes would drown the log
	}
	ev := s.log.Info()
	if ev == nil {
		return
	}
	ev.Str("request_id", id).Str("client", r.RemoteAddr).Str("method", r.Method).Str("path", logPath(r.URL.EscapedPath())).
		Str("route", e.Route).Int("status", status).
		Float64("duration_ms", float64(time.Since(start).Microseconds())/1000).Int64("bytes", rec.bytes)
	if e.Code != "" {
		ev.Str("code", e.Code)
	}
	if e.Subject != "" {
		ev.Str("subject", e.Subject).Int("attempts", e.Attempts)
	}
	if e.BoxRequestID != "" {
		ev.Str("box_request_id", e.BoxRequestID)
	}
	if aborted {
		ev.Bool("aborted", true)
	}
	ev.Msg("request")
}

// logPath is the escaped path (without the query, which may carry a
// client's token), cut at 512 bytes.
func logPath(p string) string {
	if len(p) > 512 {
		p = p[:512] + "..."
	}
	return p
}

// serve admits and dispatches, naming the route in e for logs and metrics.
// Admission is here and only here: probes first (they forward nothing and
// reveal no secret: kubelet and Prometheus reach them by pod IP and without
// the inbound key), then the request target, then who may call (guard); the
// proxy then picks the upstream and the subject.
func (s *Server) serve(w http.ResponseWriter, r *http.Request, x *exchange) {
	e := &x.entry
	path := r.URL.Path
	switch path {
	case "/healthz":
		e.Route = "healthz"
		s.healthz(w, r)
		return
	case "/readyz":
		e.Route = "readyz"
		s.readyz(w, r)
		return
	case "/metrics":
		e.Route = "metrics"
		s.m.Handler().ServeHTTP(w, r)
		return
	}
	target := proxy.CheckTarget(r)
	var guard *apierr.Error
	if target == nil {
		guard = s.guard(r)
	}
	if target == nil && guard == nil && proxy.Route(path) != "" {
		s.proxy.Serve(w, r, e, &x.fwd) // puts e in the request's context beside its own state
		return
	}
	r = r.WithContext(e.In(r.Context()))
	switch {
	case target != nil:
		e.Route = "other"
		apierr.Refuse(w, r, target)
		return
	case guard != nil:
		e.Route = "refused"
		if guard.Status == http.StatusProxyAuthRequired {
			w.Header().Set("Proxy-Authenticate", `Bearer realm="boxproxy"`)
		}
		apierr.Refuse(w, r, guard)
		return
	case path == "/auth/login" || path == "/auth/callback":
		e.Route = "auth"
		if s.oauth == nil {
			apierr.Refuse(w, r, &apierr.Error{Status: http.StatusNotFound, Code: "not_found", Message: "the /auth/ pages serve the oauth method only (BOXPROXY_AUTH is " + s.cfg.Auth + ")"})
			return
		}
		s.oauth.ServeHTTP(w, r)
		return
	case path == "/quitquitquit" && s.cfg.QuitEndpoint:
		e.Route = "quit"
		s.quitquitquit(w, r)
		return
	}
	e.Route = "other"
	apierr.Refuse(w, r, &apierr.Error{Status: http.StatusNotFound, Code: "not_found", Message: "boxproxy serves /2.0/..., /api/2.0/..., /healthz, /readyz and /metrics; nothing else is forwarded"})
}

// guard refuses requests from where a Box token must not be usable: a Host
// that is not ours (DNS rebinding), a cross-origin browser page, a caller
// without the inbound key.
func (s *Server) guard(r *http.Request) *apierr.Error {
	if r.Host != "" && !s.hostAllowed(r.Host) {
		return &apierr.Error{Status: http.StatusForbidden, Code: "host_not_allowed",
			Message: "the Host header names neither a loopback address nor BOXPROXY_PUBLIC_URL's host (DNS rebinding protection)"}
	}
	if o, ok := r.Header["Origin"]; ok && (len(o) != 1 || strings.ToLower(o[0]) != s.origin) {
		return &apierr.Error{Status: http.StatusForbidden, Code: "cross_origin",
			Message: "cross-origin browser requests are refused; only pages from BOXPROXY_PUBLIC_URL may call the proxy"}
	}
	// Browsers send no Origin on a cross-site GET (<img>, a link, a form), but
	// they do send Sec-Fetch-Site. Only the OAuth pages are reached that way
	// on purpose (Box's page redirects to it), and /auth/login from a link.
	if site := first(r.Header["Sec-Fetch-Site"]); site != "" && site != "same-origin" && site != "none" && !strings.HasPrefix(r.URL.Path, "/auth/") {
		return &apierr.Error{Status: http.StatusForbidden, Code: "cross_origin",
			Message: "cross-site browser requests are refused (Sec-Fetch-Site: " + sanitizeHeader(site) + ")"}
	}
	if s.keyHash != nil && !s.keyOK(r.Header.Get("Proxy-Authorization")) {
		return &apierr.Error{Status: http.StatusProxyAuthRequired, Code: "proxy_auth_required",
			Message: "send Proxy-Authorization: Bearer <BOXPROXY_INBOUND_KEY>"}
	}
	return nil
}

// hostAllowed says whether a Host field names the proxy: a loopback address,
// the public URL's host, or the address it listens on.
func (s *Server) hostAllowed(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.Trim(host, "[]"))
	return s.hosts[host] || config.IsLoopback(host)
}

// keyOK says whether a Proxy-Authorization value carries the inbound key.
func (s *Server) keyOK(got string) bool {
	scheme, key, _ := strings.Cut(got, " ")
	h := sha256.Sum256([]byte(key))
	return strings.EqualFold(scheme, "Bearer") && subtle.ConstantTimeCompare(h[:], s.keyHash) == 1
}

// requestID is the client's X-Request-Id when it is sane (as a one-value
// field for the answer, sharing the request's, capped so that an append
// cannot write into it), else a new one held in buf. Only the client's own
// ID goes on to Box: Box names each request itself (Box-Request-Id, logged
// as box_request_id beside request_id), and a new value on every request
// would cost each HTTP/2 connection's header compression a table eviction
// per request. An unsafe client value is dropped from the request.
func (s *Server) requestID(r *http.Request, buf *[1]string) []string {
	if vals, ok := r.Header["X-Request-Id"]; ok {
		if len(vals) == 1 && vals[0] != "" && len(vals[0]) <= 128 && printable(vals[0]) {
			return vals[:1:1]
		}
		delete(r.Header, "X-Request-Id")
	}
	buf[0] = s.newID()
	return buf[:1:1]
}

// newID is a new request ID: the process's random prefix and a counter.
func (s *Server) newID() string {
	var b [40]byte
	return string(strconv.AppendUint(append(b[:0], s.idBase...), s.idSeq.Add(1), 10))
}

// first is a field's first value (Header.Get without canonicalizing a name
// written canonical already).
func first(vals []string) string {
	if len(vals) == 0 {
		return ""
	}
	return vals[0]
}

func sanitizeHeader(v string) string {
	if len(v) > 32 || !printable(v) {
		return "?"
	}
	return v
}

func printable(v string) bool {
	for i := 0; i < len(v); i++ {
		if v[i] <= 0x20 || v[i] >= 0x7f {
			return false
		}
	}
	return true
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
}

// readyz answers 200 when the default subject's token can be had now: from
// the cache, or by asking Box (bounded by a short timeout).
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), min(s.cfg.TokenTimeout, 5*time.Second))
	defer cancel()
	tok, err := s.auth.Cache.Token(ctx, s.auth.Default)
	if err != nil {
		e := proxy.ErrorFor(err, s.loginURL())
		e.Status = http.StatusServiceUnavailable
		apierr.WriteError(w, e)
		return
	}
	// No subject: its ID is a Box user or enterprise ID, and /readyz is
	// open to whoever reaches the admin listener (or the data port).
	body := map[string]any{"status": "ready", "auth": s.cfg.Auth}
	if d := s.auth.Degraded(); d != "" {
		body["degraded"] = d // still ready: it serves alone
	}
	if !tok.Expiry.IsZero() {
		body["token_expires_in"] = int(time.Until(tok.Expiry).Seconds())
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(body)
}

func (s *Server) quitquitquit(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		apierr.Write(w, http.StatusMethodNotAllowed, "method_not_allowed", "use POST /quitquitquit")
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("shutting down\n"))
	s.quitOne.Do(func() { close(s.quit) })
}

// ListenAndRun listens on the configured address and serves until ctx ends or
// /quitquitquit is called; then it drains in-flight requests within
// BOXPROXY_SHUTDOWN_TIMEOUT. ready, if not nil, is called with the address once
// the listener is open.
func (s *Server) ListenAndRun(ctx context.Context, ready func(addr net.Addr)) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return err
	}
	if _, err := s.StartAdmin(); err != nil {
		_ = ln.Close()
		return err
	}
	// The admin listener stops last, so that probes answer while requests drain.
	defer func() {
		actx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.StopAdmin(actx)
	}()
	if ready != nil {
		ready(ln.Addr())
	}
	bg, stopBG := context.WithCancel(ctx)
	defer stopBG()
	go s.auth.Run(bg) // the oauth keep-alive
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ln) }()
	select {
	case err := <-errc:
		s.closeAuth()
		return err
	case <-ctx.Done():
		s.log.Info().Msg("signal received: draining in-flight requests")
	case <-s.quit:
		s.log.Info().Msg("/quitquitquit called: draining in-flight requests")
	}
	// No new background work (renewals ahead of expiry, the oauth
	// keep-alive); the requests being drained still get their tokens.
	s.auth.StopRenewing()
	stopBG()
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := s.Shutdown(sctx); err != nil {
		s.log.Warn().Dur("shutdown_timeout_ms", s.cfg.ShutdownTimeout).Msg("in-flight requests did not finish in time; closed them")
	} else {
		s.log.Info().Msg("all requests finished; stopped")
	}
	err = <-errc
	s.closeAuth()
	return err
}

// closeAuth waits, after the drain, for the token requests in flight (an
// oauth refresh that Box may already have answered) to end and be saved,
// then closes the fleet's connections to Redis.
func (s *Server) closeAuth() {
	ctx, cancel := context.WithTimeout(context.Background(), CloseWait(s.cfg))
	defer cancel()
	_ = s.auth.Close(ctx) // Close logs what it waits for and when it gives up
}

// PublicURL is the public URL joined with path.
func (s *Server) PublicURL(path string) string {
	u := *s.cfg.Public
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
}

// Package upstream is boxproxy's HTTP client towards Box.
//
// Requests that carry no body and may be sent again (GET, HEAD, OPTIONS) to a
// plain-HTTP upstream go over a small HTTP/1.1 engine that writes the request
// and reads the answer on the caller's goroutine, from a pool of kept-alive
// connections. net/http's Transport runs a read and a write goroutine per
// connection and hands every request and answer between them over channels;
// on the proxy's hot path that costs about a fifth of its CPU per request
// (README, Performance).
//
// The proxy's fast path borrows the same pool's connections (Transport.Lend)
// and frames its messages itself; for an https upstream those connections
// speak HTTP/1.1 over TLS (ALPN http/1.1, the certificate verified).
//
// Every other request goes to the fallback RoundTripper (net/http's Transport):
// HTTPS upstreams (HTTP/2 where Box offers it), requests with a body (the
// Transport reads an early answer while the body is still being written),
// upgrades, and hosts that an HTTP(S)_PROXY environment variable routes through
// a proxy.
//
// The engine frames messages with net/http's own parser and writer
// (http.ReadResponse, Request.Write). A connection goes back to the pool only
// after its answer was read to the end and neither side asked to close it; an
// idle connection older than IdleTimeout is closed, not reused. A reused
// connection that fails before the first byte of the answer (the server closed
// it while it was idle) is replaced by a newly dialled one, the other idle
// connections to that host are dropped, and the request is sent once more,
// which is safe because only bodiless, idempotent requests come here.
package upstream

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure a Transport. Zero values take the defaults named.
type Options struct {
	// Fallback carries every request the engine does not take. Required.
	Fallback http.RoundTripper
	// MaxIdlePerHost is how many idle connections are kept per host (512).
	MaxIdlePerHost int
	// IdleTimeout: an idle connection older than this is closed instead of
	// reused (60 s).
	IdleTimeout time.Duration
	// DialTimeout bounds connecting (30 s).
	DialTimeout time.Duration
	// MaxResponseHeaderBytes bounds an answer's status line and headers (1 MiB).
	MaxResponseHeaderBytes int64
	// BufferSize is the size of each connection's read and write buffer (32 KiB).
	BufferSize int
	// Proxy says whether a request must go through a forward proxy; nil means
	// http.ProxyFromEnvironment. Hosts it names a proxy for use the Fallback.
	Proxy func(*http.Request) (*url.URL, error)
	// TLSConfig is used for the HTTPS connections lent out (Lend); nil means
	// the system's roots. Its NextProtos is replaced with http/1.1.
	TLSConfig *tls.Config
}

// Transport is an http.RoundTripper; see the package documentation.
type Transport struct {
	o      Options
	dialer net.Dialer

	mu   sync.Mutex
	idle map[string][]*conn // by host:port, most recently used last

	direct sync.Map // host (as in the URL) -> bool: no forward proxy applies
}

// New returns a Transport. It panics if o.Fallback is nil (a wiring error).
func New(o Options) *Transport {
	if o.Fallback == nil {
		panic("upstream: Options.Fallback is required")
	}
	if o.MaxIdlePerHost <= 0 {
		o.MaxIdlePerHost = 512
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 60 * time.Second
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 30 * time.Second
	}
	if o.MaxResponseHeaderBytes <= 0 {
		o.MaxResponseHeaderBytes = 1 << 20
	}
	if o.BufferSize <= 0 {
		o.BufferSize = 32 << 10
	}
	if o.Proxy == nil {
		o.Proxy = http.ProxyFromEnvironment
	}
	return &Transport{
		o:      o,
		dialer: net.Dialer{Timeout: o.DialTimeout, KeepAlive: 30 * time.Second},
		idle:   make(map[string][]*conn),
	}
}

// RoundTrip sends req and returns the answer, as http.RoundTripper describes.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !t.takes(req) {
		return t.o.Fallback.RoundTrip(req)
	}
	return t.roundTrip(req)
}

// CloseIdleConnections closes the idle connections of the engine and of the
// fallback.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = make(map[string][]*conn)
	t.mu.Unlock()
	for _, cs := range idle {
		closeAll(cs)
	}
	if ci, ok := t.o.Fallback.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

// takes says whether the engine sends req: plain HTTP, no body, a method that
// may be repeated, no upgrade, no forward proxy.
func (t *Transport) takes(req *http.Request) bool {
	if req.URL == nil || req.URL.Scheme != "http" || req.URL.Host == "" {
		return false
	}
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
	default:
		return false
	}
	if (req.Body != nil && req.Body != http.NoBody) || req.ContentLength != 0 {
		return false
	}
	if _, ok := req.Header["Upgrade"]; ok {
		return false
	}
	if len(req.TransferEncoding) > 0 || req.Trailer != nil {
		return false
	}
	return t.isDirect(req)
}

func (t *Transport) isDirect(req *http.Request) bool {
	if v, ok := t.direct.Load(req.URL.Host); ok {
		return v.(bool)
	}
	u, err := t.o.Proxy(req)
	direct := err == nil && u == nil
	t.direct.Store(req.URL.Host, direct)
	return direct
}

func (t *Transport) roundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	if err := validHeaders(req.Header); err != nil {
		return nil, err
	}
	var resp *http.Response
	err := t.Exchange(ctx, hostPort(req.URL), func(l *Lent) (mayRetry bool, err error) {
		var answered bool
		resp, answered, err = l.c.roundTrip(req)
		return !answered, err
	})
	return resp, err
}

// Exchange runs x on a pooled connection to addr (as Lend gives it); x
// releases or closes the connection itself. When x fails on a reused
// connection and says the request may be sent again (no byte of an answer
// came, so the server closed the connection while it was idle: it restarted,
// or its idle timeout struck), the older idle connections to addr are no
// better: they are dropped, and x runs once more on a new connection. The
// one retry policy of the engine and of the proxy's fast path.
func (t *Transport) Exchange(ctx context.Context, addr string, x func(l *Lent) (mayRetry bool, err error)) error {
	for fresh := false; ; fresh = true {
		if err := ctx.Err(); err != nil {
			return err
		}
		l, reused, err := t.Lend(ctx, addr, fresh)
		if err != nil {
			return err
		}
		mayRetry, err := x(l)
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case reused && mayRetry:
			t.dropIdle(addr)
			continue
		}
		return err
	}
}

// dropIdle closes the idle connections to addr.
func (t *Transport) dropIdle(addr string) {
	t.mu.Lock()
	cs := t.idle[addr]
	delete(t.idle, addr)
	t.mu.Unlock()
	closeAll(cs)
}

func closeAll(cs []*conn) {
	for _, c := range cs {
		_ = c.nc.Close()
	}
}

// getConn returns a recent idle connection to addr, or dials one (always, if dial).
func (t *Transport) getConn(ctx context.Context, addr string, dial bool) (c *conn, reused bool, err error) {
	now := time.Now()
	var stale []*conn
	t.mu.Lock()
	cs := t.idle[addr]
	for len(cs) > 0 && !dial {
		last := cs[len(cs)-1]
		cs[len(cs)-1] = nil
		cs = cs[:len(cs)-1]
		if now.Sub(last.idleSince) < t.o.IdleTimeout {
			c = last
			break
		}
		stale = append(stale, last)
	}
	t.idle[addr] = cs
	t.mu.Unlock()
	closeAll(stale)
	if c != nil {
		return c, true, nil
	}
	nc, err := t.dial(ctx, addr)
	if err != nil {
		return nil, false, err
	}
	c = &conn{t: t, nc: nc, addr: addr}
	c.lent.c = c
	c.lr = limitedReader{r: nc, n: math.MaxInt64}
	c.br = bufio.NewReaderSize(&c.lr, t.o.BufferSize)
	c.bw = bufio.NewWriterSize(nc, t.o.BufferSize)
	return c, false, nil
}

// tlsPrefix marks a pool key (Addr) whose connections speak TLS.
const tlsPrefix = "tls:"

// dial connects to addr: host:port, or tls:host:port for HTTP/1.1 over TLS
// (ALPN http/1.1, the server name checked against the host).
func (t *Transport) dial(ctx context.Context, addr string) (net.Conn, error) {
	hp, useTLS := strings.CutPrefix(addr, tlsPrefix)
	nc, err := t.dialer.DialContext(ctx, "tcp", hp)
	if err != nil || !useTLS {
		return nc, err
	}
	var cfg *tls.Config
	if t.o.TLSConfig != nil {
		cfg = t.o.TLSConfig.Clone()
	} else {
		cfg = &tls.Config{}
	}
	if cfg.ServerName == "" {
		cfg.ServerName, _, _ = net.SplitHostPort(hp)
	}
	cfg.NextProtos = []string{"http/1.1"}
	tc := tls.Client(nc, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = nc.Close()
		return nil, err
	}
	return tc, nil
}

// put returns c to the pool, or closes it when the pool is full.
func (t *Transport) put(c *conn) {
	c.idleSince = time.Now()
	t.mu.Lock()
	cs := t.idle[c.addr]
	if len(cs) < t.o.MaxIdlePerHost {
		t.idle[c.addr] = append(cs, c)
		t.mu.Unlock()
		return
	}
	t.mu.Unlock()
	_ = c.nc.Close()
}

// conn is one kept-alive connection. It is used by one request at a time.
type conn struct {
	t         *Transport
	nc        net.Conn
	addr      string
	lr        limitedReader
	br        *bufio.Reader
	bw        *bufio.Writer
	idleSince time.Time
	lent      Lent // c lent out (Transport.Lend), made once
}

// max1xx bounds the informational answers read before the final one (as in
// net/http's Transport).
const max1xx = 5

// aLongTimeAgo is a deadline that makes blocked reads and writes return at once.
var aLongTimeAgo = time.Unix(1, 0)

// roundTrip writes req and reads its answer. answered says whether any byte of
// an answer arrived; on error the connection is closed.
func (c *conn) roundTrip(req *http.Request) (resp *http.Response, answered bool, err error) {
	ctx := req.Context()
	stop := context.AfterFunc(ctx, func() { _ = c.nc.SetDeadline(aLongTimeAgo) })
	fail := func(err error) (*http.Response, bool, error) {
		stop()
		_ = c.nc.Close()
		return nil, answered, err
	}
	if err := req.Write(c.bw); err != nil {
		return fail(err)
	}
	if err := c.bw.Flush(); err != nil {
		return fail(err)
	}
	if _, err := c.br.Peek(1); err != nil {
		return fail(err)
	}
	answered = true
	trace := httptrace.ContextClientTrace(ctx)
	for n1xx := 0; ; n1xx++ {
		c.lr.n = c.t.o.MaxResponseHeaderBytes + int64(c.br.Buffered())
		resp, err = http.ReadResponse(c.br, req)
		c.lr.n = math.MaxInt64
		if err != nil {
			if errors.Is(err, errHeaderTooLarge) {
				err = fmt.Errorf("upstream answer's headers exceed %d bytes", c.t.o.MaxResponseHeaderBytes)
			}
			return fail(err)
		}
		if resp.StatusCode >= 200 {
			break
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			return fail(errors.New("upstream switched protocols without an upgrade request"))
		}
		if n1xx == max1xx {
			return fail(fmt.Errorf("upstream sent more than %d informational (1xx) answers", max1xx))
		}
		// 1xx: pass it to whoever listens (ReverseProxy forwards it) and read on.
		if trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(resp.StatusCode, textproto.MIMEHeader(resp.Header)); err != nil {
				return fail(err)
			}
		}
	}
	keep := !resp.Close && !req.Close
	if resp.Body == http.NoBody {
		keep = keep && c.br.Buffered() == 0 // bytes after the answer: out of step, do not reuse
		c.release(stop, keep)
		return resp, true, nil
	}
	resp.Body = &body{rc: resp.Body, c: c, stop: stop, keep: keep}
	return resp, true, nil
}

// release ends a request on c: back to the pool if keep and the context did
// not fire (which may have set a deadline), else closed.
func (c *conn) release(stop func() bool, keep bool) {
	if stop() && keep {
		c.t.put(c)
		return
	}
	_ = c.nc.Close()
}

// body is an answer's body; the end of it releases the connection.
type body struct {
	rc   io.ReadCloser
	c    *conn
	stop func() bool
	keep bool
	done atomic.Bool
}

func (b *body) Read(p []byte) (int, error) {
	if b.done.Load() {
		return 0, errBodyClosed
	}
	n, err := b.rc.Read(p)
	if err != nil && b.done.CompareAndSwap(false, true) {
		// io.EOF: read to the end, the connection may be reused. Any other
		// error leaves it in an unknown state.
		// Bytes after the end were not asked for: the connection is out of step.
		b.c.release(b.stop, b.keep && err == io.EOF && b.c.br.Buffered() == 0)
	}
	return n, err
}

// Close before the end closes the connection: what is left of the body is not
// read (it might be large).
func (b *body) Close() error {
	if b.done.CompareAndSwap(false, true) {
		b.c.release(b.stop, false)
	}
	return nil
}

var (
	errBodyClosed     = errors.New("upstream: read on a closed body")
	errHeaderTooLarge = errors.New("upstream: header limit reached")
)

// limitedReader bounds how much may be read while an answer's headers are
// parsed; n is MaxInt64 otherwise.
type limitedReader struct {
	r io.Reader
	n int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errHeaderTooLarge
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

func hostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	if u.Scheme == "https" {
		return net.JoinHostPort(u.Hostname(), "443")
	}
	return net.JoinHostPort(u.Hostname(), "80")
}

// validHeaders refuses header names and values that Request.Write would put on
// the wire unchecked (net/http's Transport checks them too): a value with CR,
// LF or NUL would split the request.
func validHeaders(h http.Header) error {
	for k, vs := range h {
		if k == "" {
			return errors.New("upstream: empty header name")
		}
		for i := 0; i < len(k); i++ {
			if !isTokenChar(k[i]) {
				return fmt.Errorf("upstream: invalid header name %q", k)
			}
		}
		for _, v := range vs {
			for i := 0; i < len(v); i++ {
				if b := v[i]; b == '\r' || b == '\n' || b == 0 {
					return fmt.Errorf("upstream: invalid value for header %q", k)
				}
			}
		}
	}
	return nil
}

func isTokenChar(b byte) bool {
	switch {
	case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9':
		return true
	}
	switch b {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

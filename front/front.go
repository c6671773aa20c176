// Package front is boxproxy's HTTP/1.1 connection loop.
//
// It reads each request head itself. A plain, bodiless request that the fast
// Handler takes (in boxproxy: a GET or HEAD to /2.0/ or /api/2.0/ with a
// cached token and a plain-HTTP upstream) is answered on the connection's own
// goroutine, without net/http's server: no per-request background read, no
// request object, no header map. Every other request, and with it the rest of
// its connection, is handed to net/http's server, which reads the very same
// bytes and answers as it would have without this package; so odd or hostile
// input always meets net/http's parser and the checks built on it.
//
// Why: on a proxy's hot path net/http's server costs about a third of the
// CPU per request (README, Performance).
package front

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"log"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Handler answers requests on the fast path.
type Handler interface {
	// ServeFast either answers h on c (served is true; keep says whether
	// the connection may carry another request), or returns served false
	// having written nothing and called nothing on c but Watch, to hand
	// the request and its connection to net/http.
	ServeFast(c *Conn, h *Head) (served, keep bool)
}

// Server serves connections, the simple requests itself and the rest through
// HTTP.
type Server struct {
	HTTP          *http.Server // takes every connection the fast path does not keep
	Fast          Handler      // nil: every connection goes to HTTP
	HeaderTimeout time.Duration
	IdleTimeout   time.Duration

	once    sync.Once
	mu      sync.Mutex
	ln      net.Listener
	conns   map[*Conn]struct{}
	closing atomic.Bool
	handoff *chanListener
}

const (
	stateIdle int32 = iota
	stateActive
	stateClosed
)

func (s *Server) init(ln net.Listener) {
	s.once.Do(func() {
		s.conns = make(map[*Conn]struct{})
		s.handoff = &chanListener{addr: ln.Addr(), ch: make(chan net.Conn), done: make(chan struct{})}
		// It returns when Shutdown or Close closes the listener.
		go func() { _ = s.HTTP.Serve(s.handoff) }()
	})
}

// Serve accepts connections on ln until Shutdown or Close, then returns
// http.ErrServerClosed.
func (s *Server) Serve(ln net.Listener) error {
	s.init(ln)
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		_ = ln.Close()
		return http.ErrServerClosed
	}
	s.ln = ln
	s.mu.Unlock()
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.closing.Load() {
				return http.ErrServerClosed
			}
			if retryable(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		if s.Fast == nil {
			s.handoff.deliver(nc)
			continue
		}
		c := &Conn{srv: s, nc: nc}
		c.src.nc = nc
		s.mu.Lock()
		if s.closing.Load() {
			s.mu.Unlock()
			_ = nc.Close()
			return http.ErrServerClosed
		}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		go c.serve()
	}
}

// retryable picks out accept errors worth a retry (too many open files), as
// net/http's server does.
func retryable(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// Shutdown stops accepting, closes idle connections, lets requests in flight
// finish and closes their connections after them; it returns when all are
// gone, or with ctx's error when ctx ends first (Close then ends the rest).
func (s *Server) Shutdown(ctx context.Context) error {
	s.stop()
	httpDone := make(chan error, 1)
	go func() { httpDone <- s.HTTP.Shutdown(ctx) }()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if s.closeIdle() == 0 {
			break
		}
		select {
		case <-ctx.Done():
			<-httpDone
			return ctx.Err()
		case <-tick.C:
		}
	}
	return <-httpDone
}

// Close closes the listener and every connection at once.
func (s *Server) Close() error {
	s.stop()
	err := s.HTTP.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.state.Store(stateClosed)
		_ = c.nc.Close()
	}
	s.mu.Unlock()
	return err
}

func (s *Server) stop() {
	s.mu.Lock()
	s.closing.Store(true)
	if s.ln != nil {
		_ = s.ln.Close()
	}
	s.mu.Unlock()
}

// closeIdle closes the idle fast-path connections and says how many
// connections are left.
func (s *Server) closeIdle() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.state.CompareAndSwap(stateIdle, stateClosed) {
			_ = c.nc.Close()
		}
	}
	return len(s.conns)
}

func (s *Server) forget(c *Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Conn is one client connection on the fast path.
type Conn struct {
	srv   *Server
	nc    net.Conn
	src   source
	br    *bufio.Reader
	bw    *bufio.Writer
	state atomic.Int32
	head  Head

	// The hang-up watch (see Watch).
	watchMu    sync.Mutex
	watchTimer *time.Timer
	onHangup   func()
	watchWG    sync.WaitGroup
	stopping   atomic.Bool
	stopFn     func() // c.stopWatch, made once
}

// Writer buffers the answer; the loop flushes it after the handler returns.
func (c *Conn) Writer() *bufio.Writer { return c.bw }

// NetConn is the client connection (a body may be copied to it directly).
func (c *Conn) NetConn() net.Conn { return c.nc }

// Consume takes the request: its head is dropped from the read buffer. The
// handler calls it once it will answer; h's slices stay valid until the
// connection reads again.
func (c *Conn) Consume(h *Head) { _, _ = c.br.Discard(h.size) }

// Closing says the server shuts down: the answer should say
// "Connection: close", and the connection will be closed after it.
func (c *Conn) Closing() bool { return c.srv.closing.Load() }

var crlfcrlf = []byte("\r\n\r\n")

// readBufferSize is the per-connection read buffer, as net/http's server has: a
// head that does not fit goes to net/http (which allows 64 KiB).
const readBufferSize = 4 << 10

func (c *Conn) serve() {
	defer c.srv.forget(c)
	defer func() {
		if p := recover(); p != nil {
			_ = c.nc.Close()
			if p != http.ErrAbortHandler {
				buf := make([]byte, 64<<10)
				buf = buf[:runtime.Stack(buf, false)]
				log.Printf("front: panic serving %v: %v\n%s", c.nc.RemoteAddr(), p, buf)
			}
		}
	}()
	c.br = bufio.NewReaderSize(&c.src, readBufferSize)
	c.bw = bufio.NewWriterSize(c.nc, 4<<10)
	wait := c.srv.HeaderTimeout
	for first := true; ; first = false {
		c.state.Store(stateIdle)
		if c.srv.closing.Load() {
			c.close()
			return
		}
		if c.br.Buffered() == 0 {
			if wait > 0 {
				_ = c.nc.SetReadDeadline(time.Now().Add(wait))
			}
			if _, err := c.br.Peek(1); err != nil {
				c.close()
				return
			}
		}
		if !c.state.CompareAndSwap(stateIdle, stateActive) {
			_ = c.nc.Close() // Shutdown closed it while idle
			return
		}
		wait = c.srv.IdleTimeout
		buf, _ := c.br.Peek(c.br.Buffered())
		end := bytes.Index(buf, crlfcrlf)
		if end < 0 && mayBeFast(buf) {
			var ok bool
			if buf, end, ok = c.readHead(first); !ok {
				c.close()
				return
			}
		}
		if end < 0 || !parseHead(buf[:end+4], &c.head) {
			c.handOff()
			return
		}
		served, keep := c.srv.Fast.ServeFast(c, &c.head)
		if !served {
			c.handOff()
			return
		}
		if err := c.bw.Flush(); err != nil {
			c.close()
			return
		}
		if !keep || c.srv.closing.Load() {
			c.closeAfterAnswer()
			return
		}
	}
}

// rstAvoidanceDelay is how long a connection closed after an answer waits,
// its sending side shut, before it is closed whole (as net/http's server
// does): closing a socket with unread bytes (a request the client sent
// after this one) resets it, and a reset can destroy the answer before the
// client has read it.
const rstAvoidanceDelay = 500 * time.Millisecond

func (c *Conn) closeAfterAnswer() {
	if cw, ok := c.nc.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		time.Sleep(rstAvoidanceDelay)
	}
	c.close()
}

// mayBeFast says whether the start of a head could be a fast-path request.
func mayBeFast(b []byte) bool {
	n := min(len(b), 6)
	return bytes.HasPrefix([]byte("GET /"), b[:min(n, 5)]) || bytes.HasPrefix([]byte("HEAD /"), b[:n])
}

// readHead reads on until the head is whole, under the header timeout (for
// the first request it runs from the connection's start, as net/http's
// does). It returns the buffered bytes and the end of the head, or end -1 when
// the head does not fit the buffer (net/http gets it). ok is false when the
// client stopped or was too slow: the connection is closed without an answer,
// as net/http closes it.
func (c *Conn) readHead(first bool) (buf []byte, end int, ok bool) {
	if !first && c.srv.HeaderTimeout > 0 {
		_ = c.nc.SetReadDeadline(time.Now().Add(c.srv.HeaderTimeout))
	}
	for {
		if c.br.Buffered() == c.br.Size() {
			buf, _ = c.br.Peek(c.br.Buffered())
			return buf, -1, true
		}
		if _, err := c.br.Peek(c.br.Buffered() + 1); err != nil {
			return nil, -1, false
		}
		buf, _ = c.br.Peek(c.br.Buffered()) // all that came, not just one byte more
		if end := bytes.Index(buf, crlfcrlf); end >= 0 {
			return buf, end, true
		}
	}
}

func (c *Conn) close() {
	c.state.Store(stateClosed)
	_ = c.nc.Close()
}

// handOff gives the connection, with what was read of it and not consumed, to
// net/http's server.
func (c *Conn) handOff() {
	_ = c.nc.SetReadDeadline(time.Time{})
	var pre []byte
	if n := c.br.Buffered(); n > 0 {
		b, _ := c.br.Peek(n)
		pre = append(pre, b...)
	}
	if c.src.has {
		pre = append(pre, c.src.pending)
	}
	c.srv.forget(c)
	c.srv.handoff.deliver(&handedConn{Conn: c.nc, pre: pre})
}

// Watch notices the client hanging up while a request is in flight: if the
// request is still going after d, a read on the connection starts, and
// onHangup runs if the client closes it. A byte that the client sends
// meanwhile (a pipelined request) is kept for the next request. The returned
// stop ends the watch; it must be called before the answer's end.
func (c *Conn) Watch(d time.Duration, onHangup func()) (stop func()) {
	c.watchMu.Lock()
	c.onHangup = onHangup
	c.stopping.Store(false)
	c.watchWG.Add(1)
	if c.watchTimer == nil {
		c.watchTimer = time.AfterFunc(d, c.watch)
	} else {
		c.watchTimer.Reset(d)
	}
	if c.stopFn == nil {
		c.stopFn = c.stopWatch
	}
	c.watchMu.Unlock()
	return c.stopFn
}

func (c *Conn) stopWatch() {
	if c.watchTimer.Stop() {
		c.watchWG.Done() // it never started
		return
	}
	c.stopping.Store(true)
	_ = c.nc.SetReadDeadline(aLongTimeAgo)
	c.watchWG.Wait()
	_ = c.nc.SetReadDeadline(time.Time{})
}

var aLongTimeAgo = time.Unix(1, 0)

// watch runs on the timer's goroutine: it reads one byte.
func (c *Conn) watch() {
	defer c.watchWG.Done()
	c.watchMu.Lock()
	onHangup := c.onHangup
	c.watchMu.Unlock()
	// The deadline is cleared before stopping is looked at: stopWatch sets
	// stopping before its own deadline, so one of the two sees the other.
	_ = c.nc.SetReadDeadline(time.Time{})
	if c.stopping.Load() || c.src.has {
		return
	}
	var one [1]byte
	for {
		n, err := c.nc.Read(one[:])
		if n == 1 {
			c.src.pending, c.src.has = one[0], true
			return
		}
		if err == nil {
			continue
		}
		if !c.stopping.Load() {
			onHangup()
		}
		return
	}
}

// source is what the connection's reader reads: a byte the hang-up watch read
// ahead, then the connection.
type source struct {
	nc      net.Conn
	pending byte
	has     bool
}

func (s *source) Read(p []byte) (int, error) {
	if s.has && len(p) > 0 {
		p[0], s.has = s.pending, false
		return 1, nil
	}
	return s.nc.Read(p)
}

// handedConn is a connection handed to net/http: it first returns the bytes
// the fast path had read.
type handedConn struct {
	net.Conn
	pre []byte
}

func (h *handedConn) Read(p []byte) (int, error) {
	if len(h.pre) > 0 {
		n := copy(p, h.pre)
		h.pre = h.pre[n:]
		return n, nil
	}
	return h.Conn.Read(p)
}

// chanListener is the listener net/http's server accepts handed-off
// connections from.
type chanListener struct {
	addr net.Addr
	ch   chan net.Conn
	once sync.Once
	done chan struct{}
}

func (l *chanListener) deliver(nc net.Conn) {
	select {
	case l.ch <- nc:
	case <-l.done:
		_ = nc.Close()
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case nc := <-l.ch:
		return nc, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

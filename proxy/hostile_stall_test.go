package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// stallingBox is an upstream (Box's front end, or an egress proxy) that
// accepts connections and never reads from them: a request body larger than
// the socket buffers can then never be written whole.
type stallingBox struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func startStallingBox(t *testing.T) *stallingBox {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &stallingBox{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.conns = append(b.conns, c)
			b.mu.Unlock()
		}
	}()
	return b
}

// close ends the upstream. Registered as a cleanup after the proxy's, it
// runs first: a handler still stuck on it (the bug) then ends, and the
// proxy's server can close.
func (b *stallingBox) close() {
	b.ln.Close()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.conns {
		c.Close()
	}
}

func (b *stallingBox) URL() string { return "http://" + b.ln.Addr().String() }

// openConns reads what each connection holds and reports the ones
// the proxy has not closed within a few seconds: a connection left open is
// a leak (its Transport goroutines wait on it for ever).
func (b *stallingBox) openConns(t *testing.T) int {
	t.Helper()
	b.mu.Lock()
	conns := append([]net.Conn(nil), b.conns...)
	b.mu.Unlock()
	if len(conns) == 0 {
		t.Fatal("the proxy never connected to the stalling upstream")
	}
	open := 0
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.Copy(io.Discard, c); err != nil { // nil: EOF, the proxy closed it
			open++
		}
	}
	return open
}

// stallProxy is a proxy towards up whose upstream timeout is bound, as
// BOXPROXY_UPSTREAM_TIMEOUT sets it, keeping bodies up to keep bytes. Its
// handler reports the status it answered with when it returns.
func stallProxy(t *testing.T, up string, bound time.Duration, keep int64) (*Proxy, *httptest.Server, chan int) {
	t.Helper()
	rt, err := NewTransport(TransportOptions{ResponseHeaderTimeout: bound})
	if err != nil {
		t.Fatal(err)
	}
	p := newTestProxy(t, up, rt)
	p.o.RetryBodyLimit = keep
	done := make(chan int, 4)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusW{ResponseWriter: w}
		p.ServeHTTP(sw, r)
		done <- sw.code
	}))
	t.Cleanup(front.Close)
	return p, front, done
}

// BOXPROXY_UPSTREAM_TIMEOUT bounds a body write that Box stopped taking,
// not only the wait for the answer head that follows it: a body larger
// than the socket buffers, kept or streamed, gets boxproxy's 504 promptly.
func TestStalledUpstreamBodyWriteGets504(t *testing.T) {
	const bound = time.Second
	for _, tc := range []struct {
		name string
		size int
		keep int64
		max  time.Duration // the bound, plus the wait for 100 Continue when streamed
	}{
		{"kept", 10 << 20, 16 << 20, bound + 3*time.Second},
		{"streamed", 64 << 20, 1 << 20, bound + expectContinueWait + 3*time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			box := startStallingBox(t)
			_, front, done := stallProxy(t, box.URL(), bound, tc.keep)
			t.Cleanup(box.close)
			c := &http.Client{Timeout: 15 * time.Second}
			start := time.Now()
			resp, err := c.Post(front.URL+"/api/2.0/files/content", "application/octet-stream", bytes.NewReader(make([]byte, tc.size)))
			if err != nil {
				t.Fatalf("no answer after %v (upstream timeout %v): %v", time.Since(start).Round(time.Millisecond), bound, err)
			}
			took := time.Since(start)
			var e struct {
				Status        int
				Code, Message string
			}
			err = json.NewDecoder(resp.Body).Decode(&e)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusGatewayTimeout || e.Status != 504 || e.Code != "upstream_timeout" ||
				!strings.Contains(e.Message, "stopped reading the request body") || resp.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("got %d %+v (%v), want boxproxy's 504 upstream_timeout naming the stalled body", resp.StatusCode, e, err)
			}
			if took > tc.max {
				t.Errorf("the 504 took %v; the upstream timeout is %v", took.Round(time.Millisecond), bound)
			}
			select {
			case code := <-done:
				if code != http.StatusGatewayTimeout {
					t.Errorf("handler answered %d", code)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the handler is still running after its 504")
			}
			if n := box.openConns(t); n > 0 {
				t.Errorf("%d connections to the stalled upstream left open", n)
			}
		})
	}
}

// A client that hangs up while its streamed body waits on a Box that
// stopped reading: Go's server cannot notice (it watches for a hang-up only
// once the body was read to the end), so the stall bound is what ends the
// handler. It must end, and leave no connection nor goroutine behind.
func TestStalledUpstreamWithTheClientGoneLeaksNothing(t *testing.T) {
	const bound = time.Second
	box := startStallingBox(t)
	_, front, done := stallProxy(t, box.URL(), bound, 1<<20)
	t.Cleanup(box.close)
	before := runtime.NumGoroutine()

	c, err := net.Dial("tcp", front.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "POST /api/2.0/files/content HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", 64<<20)
	// Enough to fill the buffers towards the upstream, which takes none.
	_ = c.SetWriteDeadline(time.Now().Add(3 * time.Second))
	chunk := make([]byte, 64<<10)
	for sent := 0; sent < 32<<20; sent += len(chunk) {
		if _, err := c.Write(chunk); err != nil {
			break // the proxy stopped reading: the upstream is full
		}
	}
	c.Close()
	start := time.Now()
	select {
	case code := <-done:
		if code != http.StatusGatewayTimeout {
			t.Errorf("the handler answered %d, want 504 (the access line records it)", code)
		}
	case <-time.After(bound + expectContinueWait + 10*time.Second):
		t.Fatalf("the handler still runs %v after the client left (upstream timeout %v)", time.Since(start).Round(time.Second), bound)
	}
	if n := box.openConns(t); n > 0 {
		t.Errorf("%d connections to the stalled upstream left open", n)
	}
	front.Close()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines, %d before the request:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

// The bound is on no progress, not on the whole upload: a client that
// sends its body at 1 KiB/s, with a pause longer than the bound, is not
// Box's stall (the Transport waits in Read for the client's bytes).
func TestSlowClientUploadIsNotCutByTheStallBound(t *testing.T) {
	const bound = time.Second
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, n)
	}))
	defer up.Close()
	_, front, done := stallProxy(t, up.URL, bound, 1<<10) // streamed above 1 KiB
	c, err := net.Dial("tcp", front.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const size = 6 << 10
	fmt.Fprintf(c, "POST /api/2.0/files/content HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", size)
	for i := 0; i < size>>10; i++ {
		if i == 3 {
			time.Sleep(bound + bound/2)
		} else {
			time.Sleep(bound / 4)
		}
		if _, err := c.Write(make([]byte, 1<<10)); err != nil {
			t.Fatal(err)
		}
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != fmt.Sprint(size) {
		t.Fatalf("a slow client's upload: %d %q, want 200 and all %d bytes at Box", resp.StatusCode, b, size)
	}
	<-done
}

// A Box that reads slowly but steadily, so that the upload takes several
// times the bound, is not stalled: kept and streamed bodies arrive. The
// progress the proxy sees comes in steps of what the kernel's send buffer
// (up to 4 MiB) frees at once: about 0.7 s at 2.5 MiB/s, so Box reads at
// 5 MiB/s here, with a 1 s bound. (Box
// reads the last 8 MiB at full speed, and its receive buffer is small, so
// that the request is written whole only as Box reads the end of it: the
// wait for the answer head, also bounded, is then short.)
func TestSlowButProgressingUpstreamReadIsNotCut(t *testing.T) {
	const bound = time.Second
	const size, fast = 24 << 20, 8 << 20
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var n int64
		for n < size-fast {
			m, err := io.CopyN(io.Discard, r.Body, 128<<10)
			n += m
			if err != nil {
				break
			}
			time.Sleep(25 * time.Millisecond) // 5 MiB/s
		}
		m, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, n+m)
	}))
	up.Listener = smallReadBuffer{up.Listener}
	up.Start()
	defer up.Close()
	for _, tc := range []struct {
		name string
		size int
		keep int64
	}{
		{"kept", size, 32 << 20},
		{"streamed", size, 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, front, done := stallProxy(t, up.URL, bound, tc.keep)
			start := time.Now()
			resp, err := http.Post(front.URL+"/api/2.0/files/content", "application/octet-stream", bytes.NewReader(make([]byte, tc.size)))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(b) != fmt.Sprint(tc.size) {
				t.Fatalf("after %v: %d %q, want 200 and all %d bytes at Box", time.Since(start).Round(time.Millisecond), resp.StatusCode, b, tc.size)
			}
			if took := time.Since(start); took < 2*bound {
				t.Errorf("the upload took %v: not slow enough to test the bound %v", took, bound)
			}
			<-done
		})
	}
}

// smallReadBuffer gives each accepted connection a 256 KiB receive buffer
// (the kernel's autotuning would let it grow to many MiB).
type smallReadBuffer struct{ net.Listener }

func (l smallReadBuffer) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(256 << 10)
	}
	return c, err
}

// A streamed body waits up to a second for Box's 100 Continue before it
// goes anyway: with a shorter upstream timeout, that wait is not a stall.
func TestExpectContinueWaitIsNotAStall(t *testing.T) {
	const bound = 300 * time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) { // never sends 100 Continue
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				n, _ := io.Copy(io.Discard, req.Body)
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%d", len(fmt.Sprint(n)), n)
			}(c)
		}
	}()
	_, front, done := stallProxy(t, "http://"+ln.Addr().String(), bound, 1<<10)
	const size = 256 << 10 // streamed
	resp, err := http.Post(front.URL+"/api/2.0/files/content", "application/octet-stream", bytes.NewReader(make([]byte, size)))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != fmt.Sprint(size) {
		t.Fatalf("%d %q, want 200 and all %d bytes at Box after the wait for 100 Continue", resp.StatusCode, b, size)
	}
	<-done
}

// Over HTTP/2 a Box that stops reading stops granting flow-control window:
// the body's write waits as long. The stall bound resets that stream.
func TestStalledUpstreamBodyWriteOverHTTP2Gets504(t *testing.T) {
	const bound = time.Second
	var proto atomic.Int32
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proto.Store(int32(r.ProtoMajor))
		<-r.Context().Done() // reads nothing, answers nothing
	}))
	up.EnableHTTP2 = true
	up.StartTLS()
	defer up.Close()
	rt, err := NewTransport(TransportOptions{ResponseHeaderTimeout: bound})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(up.Certificate())
	rt.TLSClientConfig = &tls.Config{RootCAs: pool}
	p := newTestProxy(t, up.URL, rt)
	for _, tc := range []struct {
		name string
		keep int64
	}{{"kept", 16 << 20}, {"streamed", 1 << 20}} {
		t.Run(tc.name, func(t *testing.T) {
			p.o.RetryBodyLimit = tc.keep
			front := httptest.NewServer(p)
			defer front.Close()
			defer up.CloseClientConnections() // first: a handler stuck on Box (the bug) then ends
			c := &http.Client{Timeout: 15 * time.Second}
			resp, err := c.Post(front.URL+"/api/2.0/files/content", "application/octet-stream", bytes.NewReader(make([]byte, 10<<20)))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusGatewayTimeout || !strings.Contains(string(b), "stopped reading the request body") {
				t.Fatalf("%d %s, want boxproxy's 504 naming the stalled body", resp.StatusCode, b)
			}
			if proto.Load() != 2 {
				t.Fatalf("the upstream saw HTTP/%d, want 2", proto.Load())
			}
		})
	}
}

// writeCounter counts the Writes on a connection towards the upstream.
type writeCounter struct {
	net.Conn
	n *atomic.Int64
}

func (c writeCounter) Write(p []byte) (int, error) {
	c.n.Add(1)
	return c.Conn.Write(p)
}

// A small kept body goes in the same write as the request's header, as
// net/http writes the in-memory readers it recognises, although its send is
// watched: a POST of a few bytes costs one write (one TLS record), not two.
func TestSmallKeptBodyIsSentWithTheHeaderInOneWrite(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusCreated)
	}))
	defer up.Close()
	tr, err := NewTransport(TransportOptions{ResponseHeaderTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var writes atomic.Int64
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return writeCounter{Conn: c, n: &writes}, nil
	}
	p := newTestProxy(t, up.URL, tr)
	w := httptest.NewRecorder()
	p.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/2.0/folders", strings.NewReader(`{"name":"x","parent":{"id":"0"}}`)))
	if w.Code != http.StatusCreated {
		t.Fatalf("POST = %d %s", w.Code, w.Body)
	}
	if n := writes.Load(); n != 1 {
		t.Errorf("the request went in %d writes, want 1 (header and body together)", n)
	}
}

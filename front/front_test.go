package front

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// fakeFast answers "fast" on the fast path; /hand-back is handed to
// net/http, /sleep takes 300 ms, /watch waits for the client to hang up.
type fakeFast struct {
	served  atomic.Int64
	hungUp  chan struct{}
	started chan struct{}
}

func (f *fakeFast) ServeFast(c *Conn, h *Head) (bool, bool) {
	switch string(h.Path) {
	case "/hand-back":
		return false, false
	case "/sleep":
		close(f.started)
		time.Sleep(300 * time.Millisecond)
	case "/watch":
		stop := c.Watch(10*time.Millisecond, func() { close(f.hungUp) })
		close(f.started)
		select {
		case <-f.hungUp:
		case <-time.After(5 * time.Second):
		}
		stop()
	}
	c.Consume(h)
	f.served.Add(1)
	_, _ = c.Writer().WriteString("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfast")
	return true, !h.Close
}

// startFront serves f, and for what it hands back a handler that answers
// "slow:" and the request body.
func startFront(t *testing.T, f *fakeFast, headerTimeout time.Duration) (*Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = io.WriteString(w, "slow:"+r.URL.Path+":"+string(b))
	})
	s := &Server{HTTP: &http.Server{Handler: h, ReadHeaderTimeout: headerTimeout}, Fast: f,
		HeaderTimeout: headerTimeout, IdleTimeout: 10 * time.Second}
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(func() { _ = s.Close() })
	return s, ln.Addr().String()
}

func dial(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, bufio.NewReader(c)
}

func readBody(t *testing.T, br *bufio.Reader) string {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading an answer: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// A head that arrives in pieces is still served on the fast path.
func TestHeadInPiecesStaysOnTheFastPath(t *testing.T) {
	f := &fakeFast{}
	_, addr := startFront(t, f, 5*time.Second)
	c, br := dial(t, addr)
	for _, part := range []string{"GE", "T /a HTTP/1.1\r\nHo", "st: x\r\n", "\r\n"} {
		_, _ = io.WriteString(c, part)
		time.Sleep(20 * time.Millisecond)
	}
	if got := readBody(t, br); got != "fast" {
		t.Fatalf("got %q, want the fast path's answer", got)
	}
}

// A request the fast path hands back reaches net/http with every byte, body
// included, and the connection stays with net/http.
func TestHandedBackRequestReachesNetHTTPWhole(t *testing.T) {
	f := &fakeFast{}
	_, addr := startFront(t, f, 5*time.Second)
	c, br := dial(t, addr)
	_, _ = io.WriteString(c, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"+
		"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"+
		"GET /hand-back HTTP/1.1\r\nHost: x\r\n\r\n")
	for _, want := range []string{"fast", "slow:/b:hello", "slow:/hand-back:"} {
		if got := readBody(t, br); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
	_, _ = io.WriteString(c, "GET /c HTTP/1.1\r\nHost: x\r\n\r\n")
	if got := readBody(t, br); got != "slow:/c:" {
		t.Fatalf("after the hand-off: %q", got)
	}
	if n := f.served.Load(); n != 1 {
		t.Errorf("the fast path served %d requests, want 1", n)
	}
}

// A head that never ends is cut off at the header timeout, without an answer.
func TestSlowHeadIsClosedAtTheHeaderTimeout(t *testing.T) {
	f := &fakeFast{}
	_, addr := startFront(t, f, 300*time.Millisecond)
	c, _ := dial(t, addr)
	start := time.Now()
	_, _ = io.WriteString(c, "GET /a HTTP/1.1\r\nHost: x\r\n")
	done := make(chan []byte)
	go func() { b, _ := io.ReadAll(c); done <- b }()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case b := <-done:
			if took := time.Since(start); took > 2*time.Second || len(b) != 0 {
				t.Fatalf("closed after %s with %q", took, b)
			}
			return
		case <-tick.C:
			_, _ = io.WriteString(c, "X")
		}
	}
}

// Shutdown closes idle connections at once, lets a request in flight finish
// and then closes its connection.
func TestShutdownClosesIdleConnectionsAndWaitsForRequestsInFlight(t *testing.T) {
	f := &fakeFast{started: make(chan struct{})}
	s, addr := startFront(t, f, 5*time.Second)
	idle, idleBR := dial(t, addr)
	_, _ = io.WriteString(idle, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
	if got := readBody(t, idleBR); got != "fast" {
		t.Fatal(got)
	}
	busy, busyBR := dial(t, addr)
	_, _ = io.WriteString(busy, "GET /sleep HTTP/1.1\r\nHost: x\r\n\r\n")
	<-f.started
	start := time.Now()
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Errorf("Shutdown returned after %s, before the request in flight ended", took)
	}
	if got := readBody(t, busyBR); got != "fast" {
		t.Errorf("the request in flight got %q", got)
	}
	if _, err := idleBR.ReadByte(); err == nil {
		t.Error("the idle connection is still open")
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Error("the listener still accepts")
	}
}

// Watch reports a client that hangs up while its request is in flight.
func TestWatchReportsAHangUp(t *testing.T) {
	f := &fakeFast{started: make(chan struct{}), hungUp: make(chan struct{})}
	_, addr := startFront(t, f, 5*time.Second)
	c, _ := dial(t, addr)
	_, _ = io.WriteString(c, "GET /watch HTTP/1.1\r\nHost: x\r\n\r\n")
	<-f.started
	time.Sleep(50 * time.Millisecond) // the watch is reading
	c.Close()
	select {
	case <-f.hungUp:
	case <-time.After(3 * time.Second):
		t.Fatal("the hang-up was not reported")
	}
}

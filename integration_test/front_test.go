package integration_test

// The front (package front): plain GETs and HEADs are served on boxproxy's
// own connection loop, everything else by net/http's server. These tests
// mix the two on one connection, pipeline requests, and hang up on a
// request that Box is slow to answer.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// frontConn is a raw keep-alive connection to the proxy.
type frontConn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialFront(t *testing.T, addr string) *frontConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	return &frontConn{t: t, c: c, br: bufio.NewReader(c)}
}

func (f *frontConn) send(raw string) {
	f.t.Helper()
	if _, err := io.WriteString(f.c, raw); err != nil {
		f.t.Fatal(err)
	}
}

// read reads one answer (to method) with its body.
func (f *frontConn) read(method string) (*http.Response, []byte) {
	f.t.Helper()
	resp, err := http.ReadResponse(f.br, &http.Request{Method: method})
	if err != nil {
		f.t.Fatalf("reading an answer: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatalf("reading a body: %v", err)
	}
	return resp, body
}

func echoPath(t *testing.T, body []byte) string {
	t.Helper()
	var e struct {
		Path    string `json:"path"`
		BodyLen int64  `json:"body_len"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("not an echo: %s", body)
	}
	return fmt.Sprintf("%s %d", e.Path, e.BodyLen)
}

// One keep-alive connection carries fast-path GETs, a GET that the fast path
// hands to net/http's server with the bytes already read (a percent-encoded
// path), more GETs (net/http keeps the connection), then a PUT with a body,
// after which the connection is closed (so that the client's next connection
// starts on the fast path). Sent at once, pipelined, they are answered in
// order.
func TestFrontOneConnectionCarriesFastAndHandedOffRequestsInOrder(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	p := startProxy(t, box, ccgEnv(box)...)
	fc := dialFront(t, p.Addr)
	get := func(path string) string { return "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" }
	fc.send(get("/2.0/test/echo/one") + get("/2.0/test/echo/two") + get("/2.0/test/echo/thr%20ee") +
		get("/2.0/test/echo/four") +
		"PUT /2.0/test/echo/five HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nhello" +
		get("/2.0/test/echo/six"))
	for _, want := range []string{"/2.0/test/echo/one 0", "/2.0/test/echo/two 0", "/2.0/test/echo/thr%20ee 0", "/2.0/test/echo/four 0", "/2.0/test/echo/five 5"} {
		resp, body := fc.read("GET")
		if resp.StatusCode != 200 || echoPath(t, body) != want {
			t.Fatalf("got %d %s, want %s", resp.StatusCode, body, want)
		}
		if resp.Close != strings.HasSuffix(want, "five 5") {
			t.Errorf("%s: Connection: close is %v", want, resp.Close)
		}
	}
	if _, err := http.ReadResponse(fc.br, nil); err == nil {
		t.Fatal("the connection carried a request after the PUT's answer said Connection: close")
	}
	fc = dialFront(t, p.Addr)
	fc.send(get("/2.0/users/me"))
	if resp, body := fc.read("GET"); resp.StatusCode != 200 || !strings.Contains(string(body), `"type":"user"`) {
		t.Fatalf("a GET on a new connection: %d %s", resp.StatusCode, body)
	}
	// Every request is logged once, whichever path served it.
	waitUntil(t, 3*time.Second, func() bool {
		n := 0
		for _, l := range p.AccessLines(t) {
			if strings.HasPrefix(fmt.Sprint(l["path"]), "/2.0/test/echo/") && l["status"] == float64(200) && l["attempts"] == float64(1) {
				n++
			}
		}
		return n == 5
	}, "five access-log lines for the echo requests")
}

// Many GETs pipelined on one connection come back in order, each with the
// request ID it was sent with.
func TestFrontPipelinedGetsAreAnsweredInOrder(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	p := startProxy(t, box, ccgEnv(box)...)
	fc := dialFront(t, p.Addr)
	var all strings.Builder
	for i := range 20 {
		fmt.Fprintf(&all, "GET /2.0/test/echo/%d HTTP/1.1\r\nHost: localhost\r\nX-Request-Id: req-%d\r\n\r\n", i, i)
	}
	fc.send(all.String())
	for i := range 20 {
		resp, body := fc.read("GET")
		if got, want := echoPath(t, body), fmt.Sprintf("/2.0/test/echo/%d 0", i); got != want || resp.Header.Get("X-Request-Id") != fmt.Sprintf("req-%d", i) {
			t.Fatalf("answer %d: %s (X-Request-Id %q)", i, got, resp.Header.Get("X-Request-Id"))
		}
	}
}

// A client that hangs up while Box has not answered yet ends the upstream
// request within about a tenth of a second, and the request is logged as
// aborted with status 499.
func TestFrontClientHangupWhileBoxIsSlowEndsTheUpstreamRequest(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	p := startProxy(t, box, ccgEnv(box)...)
	if resp, _ := p.Get(t, "/2.0/users/me"); resp.StatusCode != 200 {
		t.Fatalf("warm-up: %d", resp.StatusCode)
	}
	fc := dialFront(t, p.Addr)
	fc.send("GET /2.0/test/slow?ms=20000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	waitUntil(t, 5*time.Second, func() bool { return box.ActiveRequests() == 1 }, "the slow request reached the stand-in")
	fc.c.Close()
	start := time.Now()
	waitUntil(t, 3*time.Second, func() bool { return box.ActiveRequests() == 0 }, "the stand-in's handler ended after the hang-up")
	t.Logf("the upstream request ended %s after the hang-up", time.Since(start).Round(time.Millisecond))
	waitUntil(t, 3*time.Second, func() bool {
		for _, l := range p.AccessLines(t) {
			if l["path"] == "/2.0/test/slow" {
				if l["status"] != float64(499) || l["aborted"] != true {
					t.Errorf("access-log line: %v", l)
				}
				return true
			}
		}
		return false
	}, "the aborted request's access-log line")
}

// A pipelined request that arrives while the one before it waits for Box is
// not taken for a hang-up: both are answered.
func TestFrontRequestPipelinedBehindASlowOneIsKept(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	p := startProxy(t, box, ccgEnv(box)...)
	fc := dialFront(t, p.Addr)
	fc.send("GET /2.0/test/slow?ms=400 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	time.Sleep(200 * time.Millisecond) // the hang-up watch has started reading
	fc.send("GET /2.0/test/echo/next HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	if resp, body := fc.read("GET"); resp.StatusCode != 200 || !strings.Contains(string(body), "slept_ms") {
		t.Fatalf("slow request: %d %s", resp.StatusCode, body)
	}
	if resp, body := fc.read("GET"); resp.StatusCode != 200 || echoPath(t, body) != "/2.0/test/echo/next 0" {
		t.Fatalf("pipelined request: %d %s", resp.StatusCode, body)
	}
}

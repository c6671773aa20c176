package upstream_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/boxproxy/boxproxy/upstream"
)

// counting is a fallback that records what reached it.
type counting struct {
	n  atomic.Int64
	rt http.RoundTripper
}

func (c *counting) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.rt.RoundTrip(r)
}

func newTransport(t *testing.T, o upstream.Options) (*upstream.Transport, *counting) {
	t.Helper()
	std := http.DefaultTransport.(*http.Transport).Clone()
	fb := &counting{rt: std}
	o.Fallback = fb
	if o.Proxy == nil {
		o.Proxy = func(*http.Request) (*url.URL, error) { return nil, nil }
	}
	tr := upstream.New(o)
	t.Cleanup(tr.CloseIdleConnections)
	return tr, fb
}

// connCounter counts the TCP connections a test server accepted.
func connCounter(s *httptest.Server) *atomic.Int64 {
	var n atomic.Int64
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			n.Add(1)
		}
	}
	return &n
}

func get(t *testing.T, tr http.RoundTripper, method, u string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, u, err)
	}
	return resp.StatusCode, string(b), resp.Header
}

func TestReusesOneConnectionForSequentialRequests(t *testing.T) {
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer t" {
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		switch r.URL.Path {
		case "/chunked":
			w.Write([]byte("part1-"))
			w.(http.Flusher).Flush()
			w.Write([]byte("part2"))
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		default:
			io.WriteString(w, r.Method+" "+r.URL.RequestURI())
		}
	}))
	conns := connCounter(s)
	s.Start()
	defer s.Close()
	tr, fb := newTransport(t, upstream.Options{})

	for i := 0; i < 50; i++ {
		req, _ := http.NewRequest(http.MethodGet, s.URL+"/2.0/folders/0?fields=name", nil)
		req.Header.Set("Authorization", "Bearer t")
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "GET /2.0/folders/0?fields=name" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, b)
		}
	}
	for _, tc := range []struct{ method, path, want string }{
		{http.MethodGet, "/chunked", "part1-part2"},
		{http.MethodHead, "/x", ""},
		{http.MethodGet, "/empty", ""},
		{http.MethodOptions, "/x", ""},
	} {
		req, _ := http.NewRequest(tc.method, s.URL+tc.path, nil)
		req.Header.Set("Authorization", "Bearer t")
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatalf("%s %s: %v", tc.method, tc.path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if tc.method != http.MethodOptions && string(b) != tc.want {
			t.Fatalf("%s %s: body %q, want %q", tc.method, tc.path, b, tc.want)
		}
	}
	if got := conns.Load(); got != 1 {
		t.Fatalf("%d connections for 54 sequential requests, want 1", got)
	}
	if fb.n.Load() != 0 {
		t.Fatalf("%d requests went to the fallback, want 0", fb.n.Load())
	}
}

func TestConcurrentRequestsGetTheirOwnAnswers(t *testing.T) {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.URL.Query().Get("n"))
	}))
	defer s.Close()
	tr, _ := newTransport(t, upstream.Options{MaxIdlePerHost: 4})
	var wg sync.WaitGroup
	errs := make(chan error, 400)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				want := strings.Repeat("x", g) + string(rune('a'+i))
				req, _ := http.NewRequest(http.MethodGet, s.URL+"/?n="+want, nil)
				resp, err := tr.RoundTrip(req)
				if err != nil {
					errs <- err
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(b) != want {
					errs <- errors.New("got " + string(b) + ", want " + want)
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestRequestsTheEngineDoesNotTakeGoToTheFallback(t *testing.T) {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, r.Method+":"+string(b))
	}))
	defer s.Close()
	tls := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "tls") }))
	defer tls.Close()

	tr, fb := newTransport(t, upstream.Options{})
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/2.0/folders", strings.NewReader(`{"name":"a"}`))
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != `POST:{"name":"a"}` || fb.n.Load() != 1 {
		t.Fatalf("POST with body: %q, fallback used %d times; want the body passed and the fallback used", b, fb.n.Load())
	}
	fb.rt.(*http.Transport).TLSClientConfig = tls.Client().Transport.(*http.Transport).TLSClientConfig
	if _, body, _ := get(t, tr, http.MethodGet, tls.URL+"/x"); body != "tls" || fb.n.Load() != 2 {
		t.Fatalf("HTTPS: %q, fallback used %d times; want the fallback", body, fb.n.Load())
	}
	up, _ := http.NewRequest(http.MethodGet, s.URL+"/ws", nil)
	up.Header.Set("Upgrade", "websocket")
	if resp, err := tr.RoundTrip(up); err == nil {
		resp.Body.Close()
	}
	if fb.n.Load() != 3 {
		t.Fatalf("an upgrade request did not go to the fallback")
	}

	// A forward proxy from the environment: the fallback, which knows how to use it.
	proxied, fb2 := newTransport(t, upstream.Options{Proxy: func(*http.Request) (*url.URL, error) {
		return url.Parse(s.URL)
	}})
	fb2.rt.(*http.Transport).Proxy = nil
	get(t, proxied, http.MethodGet, s.URL+"/y")
	if fb2.n.Load() != 1 {
		t.Fatalf("a host with a forward proxy did not go to the fallback")
	}
}

// script is a raw TCP server: for each connection, handle reads requests and
// writes whatever the test wants, byte for byte.
func script(t *testing.T, handle func(c net.Conn, br *bufio.Reader, n int)) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns atomic.Int64
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n := int(conns.Add(1))
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c, bufio.NewReader(c), n)
			}()
		}
	}()
	return "http://" + ln.Addr().String(), &conns
}

func readRequest(br *bufio.Reader) (*http.Request, error) {
	r, err := http.ReadRequest(br)
	if err == nil {
		io.Copy(io.Discard, r.Body)
	}
	return r, err
}

func TestStaleIdleConnectionIsReplaced(t *testing.T) {
	// Every connection answers one request and then closes, without saying so.
	u, conns := script(t, func(c net.Conn, br *bufio.Reader, n int) {
		if _, err := readRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	tr, _ := newTransport(t, upstream.Options{})
	for i := 0; i < 3; i++ {
		if code, body, _ := get(t, tr, http.MethodGet, u+"/a"); code != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q", i, code, body)
		}
		time.Sleep(20 * time.Millisecond) // let the close arrive
	}
	if conns.Load() != 3 {
		t.Fatalf("%d connections, want 3 (one per request, each replacing a closed one)", conns.Load())
	}
}

func TestAllIdleConnectionsClosedByTheServerStillGiveAnAnswer(t *testing.T) {
	// The server keeps connections alive until the test closes them all, as a
	// restarting upstream would.
	var mu sync.Mutex
	var open []net.Conn
	u, conns := script(t, func(c net.Conn, br *bufio.Reader, n int) {
		mu.Lock()
		open = append(open, c)
		mu.Unlock()
		for {
			if _, err := readRequest(br); err != nil {
				return
			}
			time.Sleep(10 * time.Millisecond) // so that concurrent requests need their own connections
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	tr, _ := newTransport(t, upstream.Options{})
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodGet, u+"/warm", nil)
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}()
	}
	wg.Wait()
	before := conns.Load()
	if before < 2 {
		t.Fatalf("only %d connections after 4 concurrent requests; the test needs several idle ones", before)
	}
	mu.Lock()
	for _, c := range open {
		c.Close()
	}
	mu.Unlock()
	time.Sleep(20 * time.Millisecond)
	if code, body, _ := get(t, tr, http.MethodGet, u+"/after"); code != 200 || body != "ok" {
		t.Fatalf("after the server closed every idle connection: %d %q", code, body)
	}
	if got := conns.Load(); got != before+1 {
		t.Fatalf("%d connections after the restart, want %d (one new)", got, before+1)
	}
}

func TestConnectionCloseAndEarlyBodyCloseAreNotReused(t *testing.T) {
	u, conns := script(t, func(c net.Conn, br *bufio.Reader, n int) {
		for {
			r, err := readRequest(br)
			if err != nil {
				return
			}
			switch r.URL.Path {
			case "/close":
				io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
			case "/big":
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"+strings.Repeat("b", 100000))
			case "/extra":
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil")
			default:
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			}
		}
	})
	tr, _ := newTransport(t, upstream.Options{})
	get(t, tr, http.MethodGet, u+"/close")
	get(t, tr, http.MethodGet, u+"/plain")
	if conns.Load() != 2 {
		t.Fatalf("after Connection: close, %d connections; want a new one (2)", conns.Load())
	}
	req, _ := http.NewRequest(http.MethodGet, u+"/big", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Read(make([]byte, 10))
	resp.Body.Close()
	if _, body, _ := get(t, tr, http.MethodGet, u+"/plain"); body != "ok" {
		t.Fatalf("after an early Close the next answer is %q, want ok (a fresh connection)", body)
	}
	if conns.Load() != 3 {
		t.Fatalf("after an early Close, %d connections; want 3", conns.Load())
	}
	// Bytes after an answer put the connection out of step: it must not be reused.
	get(t, tr, http.MethodGet, u+"/extra")
	if _, body, _ := get(t, tr, http.MethodGet, u+"/plain"); body != "ok" {
		t.Fatalf("after unasked-for bytes the next answer is %q, want ok", body)
	}
}

func TestCancelledContextStopsAWaitingRequest(t *testing.T) {
	release := make(chan struct{})
	u, _ := script(t, func(c net.Conn, br *bufio.Reader, n int) {
		readRequest(br)
		<-release // never answers while the test waits
	})
	defer close(release)
	tr, _ := newTransport(t, upstream.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u+"/hang", nil)
	done := make(chan error, 1)
	go func() {
		resp, err := tr.RoundTrip(req)
		if resp != nil {
			resp.Body.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("error %v, want the context's deadline", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("RoundTrip did not return after its context ended")
	}
}

func TestCancelledContextStopsABodyRead(t *testing.T) {
	release := make(chan struct{})
	u, _ := script(t, func(c net.Conn, br *bufio.Reader, n int) {
		readRequest(br)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
		<-release
	})
	defer close(release)
	tr, _ := newTransport(t, upstream.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u+"/slow", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(50*time.Millisecond, cancel)
	done := make(chan error, 1)
	go func() { _, err := io.ReadAll(resp.Body); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a body cut short by a cancelled context read without error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("reading the body did not stop after the context was cancelled")
	}
	resp.Body.Close()
}

func TestHostileAnswers(t *testing.T) {
	cases := map[string]string{
		"huge headers":    "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("a", 2<<20) + "\r\n\r\n",
		"not http":        "SSH-2.0-OpenSSH\r\n\r\n",
		"bad status":      "HTTP/1.1 2x0 OK\r\n\r\n",
		"closed at once":  "",
		"switch protocol": "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
		"endless 1xx":     strings.Repeat("HTTP/1.1 103 Early Hints\r\n\r\n", 100),
	}
	for name, answer := range cases {
		t.Run(name, func(t *testing.T) {
			u, _ := script(t, func(c net.Conn, br *bufio.Reader, n int) {
				readRequest(br)
				io.WriteString(c, answer)
				if answer != "" {
					io.Copy(io.Discard, c) // keep the connection open: the client must give up by itself
				}
			})
			tr, _ := newTransport(t, upstream.Options{MaxResponseHeaderBytes: 64 << 10})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u+"/x", nil)
			resp, err := tr.RoundTrip(req)
			if err == nil {
				resp.Body.Close()
				t.Fatalf("answer %.40q: status %d, want an error", answer, resp.StatusCode)
			}
			if ctx.Err() != nil {
				t.Fatalf("answer %.40q: the client waited until its deadline instead of refusing the answer", answer)
			}
		})
	}
}

func TestInformationalAnswersAreReportedThenSkipped(t *testing.T) {
	u, _ := script(t, func(c net.Conn, br *bufio.Reader, n int) {
		readRequest(br)
		io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone")
	})
	tr, _ := newTransport(t, upstream.Options{})
	var got []int
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		got = append(got, code)
		return nil
	}}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, u+"/x", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "done" || len(got) != 1 || got[0] != 103 {
		t.Fatalf("status %d body %q, 1xx seen %v; want 200 done after one 103", resp.StatusCode, b, got)
	}
}

func TestHeaderValuesThatWouldSplitTheRequestAreRefused(t *testing.T) {
	u, conns := script(t, func(c net.Conn, br *bufio.Reader, n int) { readRequest(br) })
	tr, _ := newTransport(t, upstream.Options{})
	for _, h := range []http.Header{
		{"Authorization": {"Bearer x\r\nX-Evil: 1"}},
		{"X-A": {"a\nb"}},
		{"Bad Name": {"v"}},
	} {
		req, _ := http.NewRequest(http.MethodGet, u+"/x", nil)
		req.Header = h
		if resp, err := tr.RoundTrip(req); err == nil {
			resp.Body.Close()
			t.Fatalf("header %v was sent", h)
		}
	}
	if conns.Load() != 0 {
		t.Fatalf("a refused request opened %d connections", conns.Load())
	}
}

func TestIdleConnectionsOlderThanIdleTimeoutAreNotReused(t *testing.T) {
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	conns := connCounter(s)
	s.Start()
	defer s.Close()
	tr, _ := newTransport(t, upstream.Options{IdleTimeout: 30 * time.Millisecond})
	get(t, tr, http.MethodGet, s.URL+"/a")
	time.Sleep(60 * time.Millisecond)
	get(t, tr, http.MethodGet, s.URL+"/b")
	if conns.Load() != 2 {
		t.Fatalf("%d connections; want 2 (the idle one was too old)", conns.Load())
	}
}

// BenchmarkEngine and BenchmarkNetHTTPTransport compare a bodiless GET over
// loopback through this package's engine and through net/http's Transport.
func BenchmarkEngine(b *testing.B) {
	benchmarkRoundTrip(b, func(fb http.RoundTripper) http.RoundTripper {
		return upstream.New(upstream.Options{Fallback: fb})
	})
}

func BenchmarkNetHTTPTransport(b *testing.B) {
	benchmarkRoundTrip(b, func(fb http.RoundTripper) http.RoundTripper { return fb })
}

func benchmarkRoundTrip(b *testing.B, mk func(http.RoundTripper) http.RoundTripper) {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"type":"user","id":"11446498"}`)
	}))
	defer s.Close()
	std := http.DefaultTransport.(*http.Transport).Clone()
	std.MaxIdleConnsPerHost = 512
	tr := mk(std)
	defer std.CloseIdleConnections()
	if ci, ok := tr.(interface{ CloseIdleConnections() }); ok {
		defer ci.CloseIdleConnections()
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 512)
		for pb.Next() {
			req, _ := http.NewRequest(http.MethodGet, s.URL+"/2.0/users/me", nil)
			req.Header["Authorization"] = []string{"Bearer t"}
			resp, err := tr.RoundTrip(req)
			if err != nil {
				b.Error(err)
				return
			}
			for {
				if _, err := resp.Body.Read(buf); err != nil {
					break
				}
			}
			resp.Body.Close()
		}
	})
}

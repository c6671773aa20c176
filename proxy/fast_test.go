package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/boxproxy/boxproxy/auth"
	"github.com/boxproxy/boxproxy/front"
	"github.com/boxproxy/boxproxy/upstream"
)

// scriptedUpstream is a raw TCP upstream: answer(n, req) returns the bytes to
// send for the n-th request (from 1, over all connections); after "", an
// answer with "Connection: close" or one ending in closeAfter it closes the
// connection. The request heads
// it saw are kept, as sent.
type scriptedUpstream struct {
	URL   string
	conns atomic.Int64
	reqs  atomic.Int64
	mu    sync.Mutex
	heads []string
}

func startScripted(t *testing.T, answer func(n int, r *http.Request) string) *scriptedUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &scriptedUpstream{URL: "http://" + ln.Addr().String()}
	var wg sync.WaitGroup
	var open sync.Map
	t.Cleanup(func() {
		ln.Close()
		open.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			open.Store(c, true)
			u.conns.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				var raw bytes.Buffer
				br := bufio.NewReader(io.TeeReader(c, &raw))
				for {
					r, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					u.mu.Lock()
					u.heads = append(u.heads, raw.String()[:raw.Len()-br.Buffered()])
					u.mu.Unlock()
					raw.Reset()
					out := answer(int(u.reqs.Add(1)), r)
					out, hangUp := strings.CutSuffix(out, closeAfter)
					if _, err := io.WriteString(c, out); err != nil || hangUp || out == "" || strings.Contains(out, "Connection: close") {
						return
					}
				}
			}()
		}
	}()
	return u
}

// closeAfter, at the end of an answer, makes the scripted upstream close the
// connection after it without saying so (as a server whose idle timeout
// strikes).
const closeAfter = "\x00close"

func (u *scriptedUpstream) lastHead() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.heads[len(u.heads)-1]
}

// fastFront serves p through package front: the fast path first, the
// ReverseProxy path for what it hands back. fast counts the requests the
// fast path served; info is the last one's Info.
type fastFront struct {
	p      *Proxy
	URL    string
	fast   atomic.Int64
	mu     sync.Mutex
	info   Info
	result FastResult
}

func (f *fastFront) ServeFast(c *front.Conn, h *front.Head) (bool, bool) {
	var info Info
	ok, res := f.p.ServeFast(c, h, "rid-1", true, &info)

	if ok {
		f.fast.Add(1)
		f.mu.Lock()
		f.info, f.result = info, res
		f.mu.Unlock()
	}
	return ok, res.Keep
}

// served is how many requests the fast path has served, once the count stops
// changing: the client may read an answer before ServeFast returns.
func (f *fastFront) served() int64 {
	n := f.fast.Load()
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		m := f.fast.Load()
		if m == n {
			break
		}
		n = m
	}
	return n
}

func startFront(t *testing.T, p *Proxy) *fastFront {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fastFront{p: p, URL: "http://" + ln.Addr().String()}
	srv := &front.Server{HTTP: &http.Server{Handler: p}, Fast: f, HeaderTimeout: 5 * time.Second, IdleTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { _ = srv.Serve(ln); close(done) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		<-done
	})
	return f
}

func fastGet(t *testing.T, c *http.Client, method, u string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, u, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, u, err)
	}
	return resp, string(b)
}

const okHead = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"

// The fast path passes each kind of answer framing on intact, drops the
// answer's hop-by-hop fields, and keeps both connections for the next request.
func TestFastPathRelaysEveryAnswerFramingIntact(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB: copied by splice
	errBody := `{"type":"error","status":404,"request_id":"r9"}`
	cases := []struct {
		name, answer, method string
		status               int
		body                 string
		trailer              string // X-Sum trailer value
		keepsUpstream        bool
	}{
		{"content-length", okHead + "Content-Length: 5\r\nBox-Request-Id: b1\r\n\r\nhello", "GET", 200, "hello", "", true},
		{"large content-length", okHead + "Content-Length: 1048576\r\n\r\n" + big, "GET", 200, big, "", true},
		{"chunked with extension and trailer", okHead + "Transfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 42\r\n\r\n", "GET", 200, "hello world", "42", true},
		{"delimited by close", okHead + "Connection: close\r\n\r\nuntil the end", "GET", 200, "until the end", "", false},
		{"HTTP/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", "GET", 200, "ok", "", false},
		{"informational first", "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + okHead + "Content-Length: 2\r\n\r\nok", "GET", 200, "ok", "", true},
		{"HEAD keeps the length", okHead + "Content-Length: 10\r\n\r\n", "HEAD", 200, "", "", true},
		{"304", "HTTP/1.1 304 Not Modified\r\nEtag: \"1\"\r\n\r\n", "GET", 304, "", "", true},
		{"404 JSON", "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(errBody)) + "\r\n\r\n" + errBody, "GET", 404, errBody, "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			up := startScripted(t, func(int, *http.Request) string {
				return strings.Replace(tc.answer, "\r\n\r\n", "\r\nConnection-Secret: x\r\nKeep-Alive: timeout=5\r\n\r\n", 1)
			})
			f := startFront(t, newTestProxy(t, up.URL, nil))
			client := &http.Client{Transport: &http.Transport{}}
			for i := range 2 {
				resp, body := fastGet(t, client, tc.method, f.URL+"/2.0/files/1")
				if resp.StatusCode != tc.status || body != tc.body {
					t.Fatalf("request %d: %d %.80q, want %d %.80q", i, resp.StatusCode, body, tc.status, tc.body)
				}
				if got := resp.Trailer.Get("X-Sum"); got != tc.trailer {
					t.Errorf("trailer X-Sum = %q, want %q", got, tc.trailer)
				}
				if resp.Header.Get("Keep-Alive") != "" || resp.Header.Get("X-Request-Id") != "rid-1" {
					t.Errorf("answer fields: %v", resp.Header)
				}
				if tc.method == "HEAD" && resp.ContentLength != 10 {
					t.Errorf("HEAD answer's Content-Length = %d, want 10", resp.ContentLength)
				}
			}
			if f.served() != 2 {
				t.Errorf("the fast path served %d of 2 requests", f.served())
			}
			if want := map[bool]int64{true: 1, false: 2}[tc.keepsUpstream]; up.conns.Load() != want {
				t.Errorf("upstream connections: %d, want %d", up.conns.Load(), want)
			}
		})
	}
}

// Box's request ID is found in the header, or in a JSON error body.
func TestFastPathNotesBoxRequestID(t *testing.T) {
	up := startScripted(t, func(n int, _ *http.Request) string {
		if n == 1 {
			return okHead + "Box-Request-Id: abc\r\nContent-Length: 2\r\n\r\n{}"
		}
		return "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 21\r\n\r\n{\"request_id\":\"xyz\"}\n"
	})
	f := startFront(t, newTestProxy(t, up.URL, nil))
	for _, want := range []string{"abc", "xyz"} {
		fastGet(t, http.DefaultClient, "GET", f.URL+"/2.0/files/1")
		f.served()
		f.mu.Lock()
		got := f.info.BoxRequestID
		f.mu.Unlock()
		if got != want {
			t.Errorf("BoxRequestID = %q, want %q", got, want)
		}
	}
}

// The request goes upstream rewritten as the ReverseProxy path rewrites it:
// the upstream's Host, the token, no client credentials, no hop-by-hop or
// Forwarded fields, As-User taken as the subject, the request ID added.
func TestFastPathRewritesTheRequestLikeTheReverseProxyPath(t *testing.T) {
	up := startScripted(t, func(int, *http.Request) string { return okHead + "Content-Length: 2\r\n\r\n{}" })
	p := newTestProxy(t, up.URL, nil)
	f := startFront(t, p)
	hdr := []string{"Cookie", "c=1", "Authorization", "Bearer client", "Proxy-Authorization", "Bearer key",
		"Forwarded", "for=1.2.3.4", "X-Forwarded-For", "1.2.3.4", "Keep-Alive", "timeout=1", "Proxy-Connection", "keep-alive",
		"As-User", "77", "Accept", "application/json", "If-None-Match", `"e1"`}
	fastGet(t, http.DefaultClient, "GET", f.URL+"/2.0/folders/0/items?fields=id,name&limit=5", hdr...)
	fastHead := up.lastHead()

	// The same request on the ReverseProxy path.
	fastGet(t, http.DefaultClient, "GET", f.URL+"/2.0/folders/0/items?fields=id,name&limit=5&x%41=1", hdr...)
	slowHead := up.lastHead()
	if f.served() != 1 {
		t.Fatalf("the fast path served %d requests, want 1 (a query key with %% is not its)", f.served())
	}
	parse := func(head string) *http.Request {
		r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(head)))
		if err != nil {
			t.Fatalf("%q: %v", head, err)
		}
		return r
	}
	fr, sr := parse(fastHead), parse(slowHead)
	if fr.RequestURI != "/2.0/folders/0/items?fields=id,name&limit=5" || fr.Host != strings.TrimPrefix(up.URL, "http://") {
		t.Errorf("fast path sent %s to Host %s", fr.RequestURI, fr.Host)
	}
	if fr.Header.Get("Authorization") != "Bearer T" || fr.Header.Get("X-Request-Id") != "rid-1" {
		t.Errorf("fast path's Authorization %q, X-Request-Id %q", fr.Header.Get("Authorization"), fr.Header.Get("X-Request-Id"))
	}
	delete(fr.Header, "X-Request-Id")
	for k := range sr.Header {
		if k == "User-Agent" || k == "Accept-Encoding" {
			continue // Go's client adds them on each request alike
		}
		if fr.Header.Get(k) != sr.Header.Get(k) {
			t.Errorf("%s: fast path %q, ReverseProxy path %q", k, fr.Header.Get(k), sr.Header.Get(k))
		}
	}
	for k := range fr.Header {
		if _, ok := sr.Header[k]; !ok {
			t.Errorf("fast path sent %s: %q, which the ReverseProxy path does not", k, fr.Header.Get(k))
		}
	}
}

// Requests the fast path does not take are answered by the ReverseProxy path.
func TestFastPathHandsBackWhatItDoesNotTake(t *testing.T) {
	up := startScripted(t, func(_ int, r *http.Request) string {
		return okHead + "Content-Length: 2\r\n\r\n{}"
	})
	f := startFront(t, newTestProxy(t, up.URL, nil))
	for _, c := range []struct {
		target string
		hdr    []string
		status int
	}{
		{"/2.0/files/1?access_token=SECRET", nil, 200},
		{"/2.0/files/1?access%5Ftoken=SECRET", nil, 200},
		{"/api/2.0/files/upload_sessions/S", nil, 200},
		{"/2.0/files/1", []string{"As-User", "alice"}, 400},
		{"/2.0/files/1", []string{"Expect", "100-continue"}, 200},
	} {
		resp, body := fastGet(t, http.DefaultClient, "GET", f.URL+c.target, c.hdr...)
		if resp.StatusCode != c.status {
			t.Errorf("%s %v: %d %s", c.target, c.hdr, resp.StatusCode, body)
		}
		if strings.Contains(up.lastHead(), "SECRET") {
			t.Errorf("%s: the client's access_token went upstream", c.target)
		}
	}
	if n := f.served(); n != 0 {
		t.Errorf("the fast path served %d of them", n)
	}
}

// A 401 costs one new token and one more attempt; a second 401 reaches the
// client.
func TestFastPathRetriesOnceAfter401(t *testing.T) {
	up := startScripted(t, func(n int, _ *http.Request) string {
		if n == 1 || n >= 3 {
			return "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n"
		}
		return okHead + "Content-Length: 2\r\n\r\n{}"
	})
	p := newTestProxy(t, up.URL, nil)
	f := startFront(t, p)
	if resp, body := fastGet(t, http.DefaultClient, "GET", f.URL+"/2.0/users/me"); resp.StatusCode != 200 || body != "{}" {
		t.Fatalf("after one 401: %d %q", resp.StatusCode, body)
	}
	if resp, _ := fastGet(t, http.DefaultClient, "GET", f.URL+"/2.0/users/me"); resp.StatusCode != 401 {
		t.Fatalf("after two 401s: %d, want 401", resp.StatusCode)
	}
	if n := up.reqs.Load(); n != 4 {
		t.Errorf("upstream saw %d requests, want 4", n)
	}
	if n := p.o.Tokens.(*fixedTokens).invalidated.Load(); n != 3 {
		t.Errorf("%d invalidations, want 3", n)
	}
	n := f.served()
	f.mu.Lock()
	attempts := f.info.Attempts
	f.mu.Unlock()
	if n != 2 || attempts != 2 {
		t.Errorf("fast-path requests %d, attempts of the last %d", n, attempts)
	}
}

// A broken answer becomes boxproxy's JSON 502; an unreachable upstream too.
func TestFastPathAnswersBrokenUpstreamsWithJSONErrors(t *testing.T) {
	for name, answer := range map[string]string{
		"bad status line":     "HTTP/1.1 2xx OK\r\n\r\n",
		"two lengths":         okHead + "Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
		"unknown coding":      okHead + "Transfer-Encoding: gzip\r\n\r\n",
		"closed before head":  "",
		"switching protocols": "HTTP/1.1 101 Switching Protocols\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			up := startScripted(t, func(int, *http.Request) string { return answer })
			f := startFront(t, newTestProxy(t, up.URL, nil))
			resp, body := fastGet(t, http.DefaultClient, "GET", f.URL+"/2.0/users/me")
			var e struct {
				Code      string `json:"code"`
				RequestID string `json:"request_id"`
			}
			if resp.StatusCode != 502 || json.Unmarshal([]byte(body), &e) != nil || e.Code != "upstream_unreachable" || e.RequestID != "rid-1" {
				t.Fatalf("%d %s", resp.StatusCode, body)
			}
		})
	}
}

// One upstream connection carries request after request.
func TestFastPathReusesUpstreamConnections(t *testing.T) {
	up := startScripted(t, func(int, *http.Request) string { return okHead + "Content-Length: 2\r\n\r\n{}" })
	f := startFront(t, newTestProxy(t, up.URL, nil))
	for range 50 {
		fastGet(t, http.DefaultClient, "GET", f.URL+"/2.0/users/me")
	}
	if up.conns.Load() != 1 || f.served() != 50 {
		t.Errorf("%d upstream connections for %d fast requests", up.conns.Load(), f.served())
	}
}

// A developer token cannot be refreshed: its 401 becomes an error that says so.
func TestFastPathDeveloperToken401(t *testing.T) {
	up := startScripted(t, func(int, *http.Request) string {
		return "HTTP/1.1 401 Unauthorized\r\nWww-Authenticate: Bearer error=\"invalid_token\"\r\nContent-Length: 0\r\n\r\n"
	})
	p := newTestProxy(t, up.URL, nil)
	p.o.Tokens = staticTokens{auth.NewToken("T", time.Time{})}
	f := startFront(t, p)
	resp, body := fastGet(t, http.DefaultClient, "GET", f.URL+"/2.0/users/me")
	if resp.StatusCode != 401 || !strings.Contains(body, "developer_token_expired") || resp.Header.Get("Www-Authenticate") == "" {
		t.Fatalf("%d %v %s", resp.StatusCode, resp.Header, body)
	}
	if f.served() != 1 || up.reqs.Load() != 1 {
		t.Errorf("fast %d, upstream requests %d", f.served(), up.reqs.Load())
	}
}

type staticTokens struct{ tok auth.Token }

func (s staticTokens) Token(context.Context, auth.Subject) (auth.Token, error) { return s.tok, nil }
func (s staticTokens) Invalidate(auth.Subject, string) bool                    { return false }
func (s staticTokens) Refreshable() bool                                       { return false }

// rawUpstream answers every request head it reads with the same bytes, with
// no allocation per request, so that a benchmark's allocs/op are the proxy's.
func rawUpstream(b *testing.B, answer string) (string, *atomic.Int64) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var conns atomic.Int64
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer c.Close()
				buf := make([]byte, 16<<10)
				have := 0
				for {
					n, err := c.Read(buf[have:])
					if err != nil {
						return
					}
					have += n
					for {
						i := bytes.Index(buf[:have], []byte("\r\n\r\n"))
						if i < 0 {
							break
						}
						if _, err := io.WriteString(c, answer); err != nil {
							return
						}
						have = copy(buf, buf[i+4:have])
					}
				}
			}()
		}
	}()
	return "http://" + ln.Addr().String(), &conns
}

// BenchmarkFastPath is one proxied GET over loopback on the fast path, with a
// cached token: a raw keep-alive client → front → proxy.ServeFast → a raw
// upstream. Client and upstream allocate nothing per request, so allocs/op
// is the proxy's own count (the number the README reports).
func BenchmarkFastPath(b *testing.B) {
	const answer = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nDate: Sun, 29 Nov 2026 10:00:00 GMT\r\nBox-Request-Id: 0abc\r\nContent-Length: 39\r\n\r\n" + `{"type":"user","id":"1","name":"bench"}`
	upURL, conns := rawUpstream(b, answer)
	p := newTestProxy(b, upURL, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	f := &benchFront{p: p}
	srv := &front.Server{HTTP: &http.Server{Handler: p}, Fast: f, HeaderTimeout: 5 * time.Second, IdleTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() { _ = srv.Close() })
	b.RunParallel(func(pb *testing.PB) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		req := []byte("GET /2.0/users/me HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
		buf := make([]byte, 4096)
		for pb.Next() {
			if _, err := c.Write(req); err != nil {
				b.Error(err)
				return
			}
			// The answer ends with the 39-byte body after the empty line.
			have := 0
			for {
				n, err := c.Read(buf[have:])
				if err != nil {
					b.Error(err)
					return
				}
				have += n
				if i := bytes.Index(buf[:have], []byte("\r\n\r\n")); i >= 0 && have >= i+4+39 {
					break
				}
			}
		}
	})
	b.ReportMetric(float64(conns.Load()), "upstream-conns")
	// The client may read the last answer before ServeFast returns.
	for deadline := time.Now().Add(2 * time.Second); f.fast.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if f.fast.Load() == 0 {
		b.Fatal("the fast path served nothing")
	}
}

type benchFront struct {
	p    *Proxy
	fast atomic.Int64
}

func (f *benchFront) ServeFast(c *front.Conn, h *front.Head) (bool, bool) {
	var info Info
	ok, res := f.p.ServeFast(c, h, "rid-1", true, &info)
	if ok {
		f.fast.Add(1)
	}
	return ok, res.Keep
}

// newTLSProxy is newTestProxy towards an HTTPS upstream whose certificate
// the given pool trusts.
func newTLSProxy(t *testing.T, upstreamURL string, roots *x509.CertPool) *Proxy {
	t.Helper()
	fallback := NewTransport()
	fallback.TLSClientConfig = &tls.Config{RootCAs: roots}
	return newTestProxy(t, upstreamURL, upstream.New(upstream.Options{
		Fallback: fallback, MaxIdlePerHost: 64, TLSConfig: &tls.Config{RootCAs: roots},
	}))
}

// Towards an HTTPS upstream (Box itself) the fast path speaks HTTP/1.1 over
// TLS on kept-alive connections, and checks the certificate.
func TestFastPathSpeaksHTTP11OverVerifiedTLS(t *testing.T) {
	var conns atomic.Int64
	var protos sync.Map
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		protos.Store(r.Proto, true)
		if r.TLS == nil || r.Header.Get("Authorization") != "Bearer T" {
			w.WriteHeader(400)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"type":"user","id":"1"}`)
	}))
	up.EnableHTTP2 = true
	up.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	up.StartTLS()
	defer up.Close()
	roots := x509.NewCertPool()
	roots.AddCert(up.Certificate())

	f := startFront(t, newTLSProxy(t, up.URL, roots))
	for range 20 {
		if resp, body := fastGet(t, http.DefaultClient, "GET", f.URL+"/2.0/users/me"); resp.StatusCode != 200 || body != `{"type":"user","id":"1"}` {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
	}
	if n := f.served(); n != 20 {
		t.Errorf("the fast path served %d of 20", n)
	}
	if conns.Load() != 1 {
		t.Errorf("%d TLS connections for 20 requests", conns.Load())
	}
	protos.Range(func(k, _ any) bool {
		if k != "HTTP/1.1" {
			t.Errorf("the upstream saw %v", k)
		}
		return true
	})

	// A certificate the proxy does not trust: a JSON 502, nothing served.
	g := startFront(t, newTLSProxy(t, up.URL, x509.NewCertPool()))
	resp, body := fastGet(t, http.DefaultClient, "GET", g.URL+"/2.0/users/me")
	if resp.StatusCode != 502 || !strings.Contains(body, "upstream_unreachable") {
		t.Fatalf("untrusted certificate: %d %s", resp.StatusCode, body)
	}
}

// BenchmarkTLSUpstream compares the two ways to an HTTPS upstream (Box): the
// fast path (HTTP/1.1 over TLS on lent connections) and the ReverseProxy
// path (net/http's Transport, HTTP/2), each behind the front, with the same
// Go client and a Go HTTPS upstream that offers HTTP/2.
func BenchmarkTLSUpstream(b *testing.B) {
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"type":"user","id":"1","name":"bench"}`)
	}))
	up.EnableHTTP2 = true
	up.StartTLS()
	defer up.Close()
	roots := x509.NewCertPool()
	roots.AddCert(up.Certificate())
	for _, fast := range []bool{true, false} {
		name := map[bool]string{true: "fast-path-http1.1", false: "reverseproxy-http2"}[fast]
		b.Run(name, func(b *testing.B) {
			fallback := NewTransport()
			fallback.TLSClientConfig = &tls.Config{RootCAs: roots}
			p := newTestProxy(b, up.URL, upstream.New(upstream.Options{Fallback: fallback, TLSConfig: &tls.Config{RootCAs: roots}}))
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			srv := &front.Server{HTTP: &http.Server{Handler: p}, HeaderTimeout: 5 * time.Second, IdleTimeout: 5 * time.Second}
			if fast {
				srv.Fast = &benchFront{p: p}
			}
			go func() { _ = srv.Serve(ln) }()
			defer srv.Close()
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			u := "http://" + ln.Addr().String() + "/2.0/users/me"
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := client.Get(u)
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					_ = resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			})
		})
	}
}

// A kept-alive upstream connection that the server closed while it was idle
// costs no error: the request goes again on a new connection.
func TestFastPathReplacesAConnectionClosedWhileIdle(t *testing.T) {
	up := startScripted(t, func(int, *http.Request) string { return okHead + "Content-Length: 2\r\n\r\n{}" + closeAfter })
	f := startFront(t, newTestProxy(t, up.URL, nil))
	for i := range 3 {
		if resp, body := fastGet(t, http.DefaultClient, "GET", f.URL+"/2.0/users/me"); resp.StatusCode != 200 || body != "{}" {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
		}
		time.Sleep(20 * time.Millisecond) // the upstream's close arrives
	}
	if n := f.served(); n != 3 {
		t.Errorf("the fast path served %d of 3", n)
	}
	if up.reqs.Load() != 3 || up.conns.Load() != 3 {
		t.Errorf("upstream: %d requests on %d connections, want 3 on 3", up.reqs.Load(), up.conns.Load())
	}
}

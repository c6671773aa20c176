package proxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/boxproxy/boxproxy/accesslog"
	"github.com/boxproxy/boxproxy/auth"
)

// fixedTokens is a Tokens that always has a token.
type fixedTokens struct {
	tok         auth.Token
	invalidated atomic.Int64
}

func (f *fixedTokens) Token(context.Context, auth.Subject) (auth.Token, error) { return f.tok, nil }
func (f *fixedTokens) Invalidate(auth.Subject, string) bool                    { f.invalidated.Add(1); return true }
func (f *fixedTokens) Refreshable() bool                                       { return true }

func newTestProxy(tb testing.TB, upstream string, rt http.RoundTripper) *Proxy {
	tb.Helper()
	u, _ := url.Parse(upstream)
	pub, _ := url.Parse("http://127.0.0.1:8080")
	p, err := New(Options{
		API: u, Upload: u, Public: pub,
		Tokens:         &fixedTokens{tok: auth.NewToken("T", time.Now().Add(time.Hour))},
		DefaultSubject: auth.Subject{Type: auth.Enterprise, ID: "1"},
		AsUserToken:    true, RetryBodyLimit: 1 << 20, Transport: rt,
		Logger: zerolog.Nop(),
	})
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

func TestStripAccessTokenKeepsTheRestByteForByte(t *testing.T) {
	cases := map[string]string{
		"":                                "",
		"a=1&b=%20x;y":                    "a=1&b=%20x;y",
		"access_token=SECRET":             "",
		"a=1&access_token=SECRET&b=2":     "a=1&b=2",
		"a=1&access%5Ftoken=SECRET&b=%2F": "a=1&b=%2F",
		"access_tokens=keep&x=access":     "access_tokens=keep&x=access",
		"a=1&&b=2":                        "a=1&&b=2",
	}
	for in, want := range cases {
		if got := stripAccessToken(in); got != want {
			t.Errorf("stripAccessToken(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestTargetsThatCouldLeaveTheAPIAreRefused(t *testing.T) {
	bad := []string{
		"/2.0/../admin", "/2.0/./x", "/2.0/files/%2e%2e/x", "/2.0/files/a%2Fb", "/2.0/files/a%5cb", "/api/2.0/x/..",
		"/2.0/a%00b",
	}
	for _, target := range bad {
		r := httptest.NewRequest("GET", target, nil)
		if e := CheckTarget(r); e == nil || e.Status != 400 {
			t.Errorf("%s was accepted", target)
		}
	}
	r := httptest.NewRequest("GET", "/2.0/folders/0/items?fields=name,id&limit=10", nil)
	if e := CheckTarget(r); e != nil {
		t.Errorf("a plain target was refused: %v", e)
	}
	r = httptest.NewRequest("GET", "/2.0/users/me", nil)
	r.RequestURI = "http://evil.example/2.0/users/me"
	if e := CheckTarget(r); e == nil {
		t.Error("absolute-form target was accepted")
	}
}

func TestUploadSessionURLsPointAtThePublicURL(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"id":"S","session_endpoints":{"upload_part":"https://upload.box.com/api/2.0/files/upload_sessions/S",`+
			`"commit":"https:\/\/upload.app.box.com\/api\/2.0\/files\/upload_sessions\/S\/commit","other":"https://example.com/x"},`+
			`"description":"see \"https://upload.box.com/api/2.0/files/upload_sessions\"","url":"https://upload.box.com/api/2.0/files/upload_sessions/T"}`)
	}))
	defer up.Close()
	p := newTestProxy(t, up.URL, nil)
	w := httptest.NewRecorder()
	p.ServeHTTP(w, httptest.NewRequest("POST", "/api/2.0/files/upload_sessions", strings.NewReader(`{}`)))
	body := w.Body.String()
	for _, want := range []string{`"http://127.0.0.1:8080/api/2.0/files/upload_sessions/S"`, `"http://127.0.0.1:8080\/api\/2.0\/files\/upload_sessions\/S\/commit"`, `"https://example.com/x"`,
		// Text elsewhere is left alone: only session_endpoints' fields are rewritten.
		`"see \"https://upload.box.com/api/2.0/files/upload_sessions\""`, `"url":"https://upload.box.com/api/2.0/files/upload_sessions/T"`} {
		if !strings.Contains(body, want) {
			t.Errorf("body lacks %s: %s", want, body)
		}
	}
	if w.Header().Get("Content-Length") != "" && w.Header().Get("Content-Length") != strconv.Itoa(len(body)) {
		t.Errorf("Content-Length %s does not match the body (%d)", w.Header().Get("Content-Length"), len(body))
	}
}

func TestSecond401GoesBackToTheClient(t *testing.T) {
	var hits atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.WriteHeader(401)
	}))
	defer up.Close()
	p := newTestProxy(t, up.URL, nil)
	w := httptest.NewRecorder()
	p.ServeHTTP(w, httptest.NewRequest("GET", "/2.0/users/me", nil))
	if w.Code != 401 || hits.Load() != 2 {
		t.Fatalf("status %d after %d attempts, want 401 after 2", w.Code, hits.Load())
	}
}

// cannedTransport answers every request with the same small response, so
// that a benchmark measures the proxy's own work.
type cannedTransport struct{}

func (cannedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		_ = r.Body.Close()
	}
	return &http.Response{StatusCode: 200, ProtoMajor: 1, ProtoMinor: 1, Header: http.Header{"Content-Type": {"application/json"}},
		Body: http.NoBody, Request: r}, nil
}

// BenchmarkProxyCachedToken is the hot path: a GET with a cached token,
// through routing, header rewriting, token injection and response copying,
// without the network. Its allocs/op is the number the README reports.
func BenchmarkProxyCachedToken(b *testing.B) {
	p := newTestProxy(b, "http://upstream.invalid", cannedTransport{})
	req := httptest.NewRequest("GET", "/2.0/users/me?fields=id", nil)
	req.Header.Set("User-Agent", "bench")
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		p.ServeHTTP(w, req)
	}
}

type discardWriter struct {
	h    http.Header
	code int
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardWriter) WriteHeader(c int)           { d.code = c }

// BenchmarkProxyLoopback measures a whole request over loopback: client →
// proxy (real http.Server) → upstream (real http.Server), with keep-alive.
func BenchmarkProxyLoopback(b *testing.B) {
	var conns atomic.Int64
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"type":"user","id":"1","name":"bench"}`)
	}))
	up.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	up.Start()
	defer up.Close()
	p := newTestProxy(b, up.URL, nil)
	front := httptest.NewServer(p)
	defer front.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.Get(front.URL + "/2.0/users/me")
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
		}
	})
	b.ReportMetric(float64(conns.Load()), "upstream-conns")
}

// A server that already put the access-log entry in the request's context
// and then hands it to Serve must not make the entry its own ancestor (every
// look-up through it would recurse until the process dies).
func TestServeWithItsEntryAlreadyInTheContext(t *testing.T) {
	p := newTestProxy(t, "http://upstream.invalid", cannedTransport{})
	var e accesslog.Entry
	var f Forward
	r := httptest.NewRequest("GET", "/2.0/users/me", nil)
	r = r.WithContext(e.In(r.Context()))
	w := httptest.NewRecorder()
	p.Serve(w, r, &e, &f)
	if w.Code != 200 || e.Route != RouteAPI || e.Attempts != 1 {
		t.Fatalf("status %d, route %q, attempts %d; want 200 through the api route in one attempt", w.Code, e.Route, e.Attempts)
	}
	if e.Value(struct{}{}) != nil {
		t.Fatal("a look-up of a key nobody set found something")
	}
}

// The answer's fields reach the client as Box sent them, after the ones the
// answer already had (the server's X-Request-Id), less the never-forwarded
// ones; and the fields already there are not written into.
func TestAnswerFieldsReachTheClientAsBoxSentThem(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["Vary"] = []string{"Accept", "Origin"}
		h["X-Request-Id"] = []string{"box-own-id"}
		h["Box-Request-Id"] = []string{"b123"}
		h["Set-Cookie"] = []string{"session=box"}
		h["Content-Type"] = []string{"application/json"}
		_, _ = io.WriteString(w, `{"type":"user"}`)
	}))
	defer up.Close()
	p := newTestProxy(t, up.URL, nil)
	for i := 0; i < 3; i++ { // the Transport's pooled connection, too
		w := httptest.NewRecorder()
		ours := make([]string, 1, 4) // room to append into, which must not be used
		ours[0] = "proxy-id"
		w.Header()["X-Request-Id"] = ours
		p.ServeHTTP(w, httptest.NewRequest("GET", "/2.0/users/me", nil))
		got := w.Result().Header
		if w.Code != 200 || w.Body.String() != `{"type":"user"}` {
			t.Fatalf("%d %q", w.Code, w.Body.String())
		}
		want := map[string][]string{
			"Vary": {"Accept", "Origin"}, "X-Request-Id": {"proxy-id", "box-own-id"}, "Box-Request-Id": {"b123"},
			"Content-Type": {"application/json"}, "Content-Length": {"15"},
		}
		for k, v := range want {
			if strings.Join(got[k], "|") != strings.Join(v, "|") {
				t.Errorf("%s: %q, want %q", k, got[k], v)
			}
		}
		if _, ok := got["Set-Cookie"]; ok {
			t.Errorf("Set-Cookie reached the client: %q", got["Set-Cookie"])
		}
		if ours[:2][1] != "" {
			t.Errorf("Box's field was written into the answer's own array: %q", ours[:2])
		}
	}
}

// An event stream is flushed as it comes, even with a Content-Length: the
// client reads the first event while Box keeps the stream open.
func TestEventStreamWithALengthIsFlushedAtOnce(t *testing.T) {
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "Text/Event-Stream; charset=utf-8")
		w.Header().Set("Content-Length", "20")
		w.Header().Set("Set-Cookie", "s=box")
		_, _ = io.WriteString(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		<-release
		_, _ = io.WriteString(w, "data: 2")
	}))
	defer up.Close()
	front := httptest.NewServer(newTestProxy(t, up.URL, nil))
	defer front.Close()
	defer close(release)
	type answer struct {
		first  string
		cookie []string
		err    error
	}
	got := make(chan answer, 1)
	go func() {
		resp, err := http.Get(front.URL + "/2.0/events")
		if err != nil {
			got <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		b := make([]byte, 13)
		_, err = io.ReadFull(resp.Body, b)
		got <- answer{string(b), resp.Header["Set-Cookie"], err}
	}()
	select {
	case a := <-got:
		if a.err != nil || a.first != "data: first\n\n" || a.cookie != nil {
			t.Fatalf("first event %q, Set-Cookie %q, error %v", a.first, a.cookie, a.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the first event did not reach the client while Box kept the stream open")
	}
}

// A HEAD answer about an upload session keeps Box's Content-Length: there
// is no body to rewrite.
func TestUploadSessionHeadKeepsBoxsLength(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "123")
	}))
	defer up.Close()
	front := httptest.NewServer(newTestProxy(t, up.URL, nil))
	defer front.Close()
	resp, err := http.Head(front.URL + "/api/2.0/files/upload_sessions/S1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Length") != "123" {
		t.Fatalf("HEAD: %d, Content-Length %q, want 200 and Box's 123", resp.StatusCode, resp.Header.Get("Content-Length"))
	}
}

// An answer Box sent without Content-Type reaches the client without one:
// Go's server would otherwise sniff the body and name a type Box did not.
func TestAnswerWithoutContentTypeStaysWithoutOne(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Content-Type"] = nil // Go's server must not add one either
		_, _ = io.WriteString(w, "plain bytes, <html> even")
	}))
	defer up.Close()
	front := httptest.NewServer(newTestProxy(t, up.URL, nil))
	defer front.Close()
	resp, err := http.Get(front.URL + "/2.0/files/1/content")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if ct, ok := resp.Header["Content-Type"]; ok || string(body) != "plain bytes, <html> even" {
		t.Errorf("Content-Type %q (present %v), body %q; want no Content-Type and Box's body", ct, ok, body)
	}
}

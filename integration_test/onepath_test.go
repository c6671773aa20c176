package integration_test

// One request path (net/http server, one httputil.ReverseProxy, http.Transport):
// what a client sees of it, against the TLS stand-in offering HTTP/2.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/boxproxy/boxproxy/fakebox"
)

// The proxy reaches the stand-in the way it reaches Box: HTTPS, HTTP/2.
func TestOnePathSpeaksHTTP2OverTLSToBox(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	p := startProxy(t, box, ccgEnv(box)...)
	for _, path := range []string{"/2.0/users/me", "/api/2.0/test/echo"} {
		before := len(box.Requests())
		resp, body := p.Do(t, p.Request(t, http.MethodPost, path, strings.NewReader("x")))
		if resp.StatusCode >= 500 {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, body)
		}
		reqs := box.Requests()[before:]
		if len(reqs) != 1 || reqs[0].Proto != "HTTP/2.0" {
			t.Fatalf("%s: the stand-in saw %+v, want one HTTP/2.0 request", path, reqs)
		}
	}
}

// countingClient dials through a counter, so that a test can see how many
// TCP connections a client needed.
func countingClient(dials *atomic.Int64) *http.Client {
	d := &net.Dialer{}
	return &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: 1,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return d.DialContext(ctx, network, addr)
		},
	}}
}

// Every method keeps the client's connection: POST, PUT, DELETE and GET
// in a row take one TCP connection.
func TestOnePathKeepsTheConnectionAliveAfterEveryMethod(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	p := startProxy(t, box, ccgEnv(box)...)
	var dials atomic.Int64
	c := countingClient(&dials)
	for _, m := range []string{"POST", "PUT", "DELETE", "PATCH", "GET", "POST"} {
		resp, body := p.DoWith(t, c, p.Request(t, m, "/2.0/test/echo/x", strings.NewReader(`{"a":1}`), "Content-Type", "application/json"))
		if resp.StatusCode != http.StatusOK || resp.Close || resp.Header.Get("Connection") == "close" {
			t.Fatalf("%s: %d close=%v %s", m, resp.StatusCode, resp.Close, body)
		}
	}
	if n := dials.Load(); n != 1 {
		t.Fatalf("%d TCP connections for six requests, want 1 (keep-alive after every method)", n)
	}
}

// A refused upload is answered with its JSON error, which the client reads
// while it is still sending its 20 MiB body — not a reset — and the
// connection then serves the next request.
func TestOnePathRefusedLargeUploadGetsItsJSONErrorNotAReset(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	p := startProxy(t, box, append(ccgEnv(box), "BOXPROXY_ALLOWED_USERS="+userAlice)...)
	const size = 20 << 20
	cases := []struct {
		name, head string
		status     int
		code       string
	}{
		{"not allowed", "POST /api/2.0/files/content HTTP/1.1\r\nAs-User: " + userBob + "\r\n", 403, "user_not_allowed"},
		{"bad As-User", "POST /api/2.0/files/content HTTP/1.1\r\nAs-User: x\r\n", 400, "bad_as_user"},
		{"not a route", "POST /upload HTTP/1.1\r\n", 404, "not_found"},
		{"dot segment", "POST /api/2.0/x/../files/content HTTP/1.1\r\n", 400, "bad_path"},
	}
	for _, tc := range cases {
		for try := 0; try < 3; try++ {
			conn, err := net.Dial("tcp", p.Addr)
			if err != nil {
				t.Fatal(err)
			}
			_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
			head := tc.head + "Host: " + p.Addr + "\r\nContent-Type: application/octet-stream\r\nContent-Length: " + strconv.Itoa(size) + "\r\n\r\n"
			if _, err := io.WriteString(conn, head); err != nil {
				t.Fatal(err)
			}
			writeErr := make(chan error, 1)
			go func() {
				_, err := io.Copy(conn, io.LimitReader(fakebox.PatternReader(size), size))
				writeErr <- err
			}()
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("%s (try %d): reading the answer: %v (a reset instead of the error)", tc.name, try, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			e := decodeBoxError(t, resp, body)
			if resp.StatusCode != tc.status || e.Code != tc.code {
				t.Fatalf("%s: %d %+v, want %d %s", tc.name, resp.StatusCode, e, tc.status, tc.code)
			}
			if err := <-writeErr; err != nil {
				t.Fatalf("%s (try %d): the client could not send its body: %v", tc.name, try, err)
			}
			// The connection is still good.
			if _, err := io.WriteString(conn, "GET /2.0/users/me HTTP/1.1\r\nHost: "+p.Addr+"\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			next, err := http.ReadResponse(br, nil)
			if err != nil || next.StatusCode != http.StatusOK {
				t.Fatalf("%s: the next request on the connection: %v %v", tc.name, next, err)
			}
			next.Body.Close()
			_ = conn.Close()
		}
	}
	for _, r := range box.Requests() {
		if strings.Contains(r.Path, "files/content") {
			t.Fatalf("a refused upload reached the stand-in: %+v", r)
		}
	}
}

// multipartUpload is a streamed multipart upload of size bytes of the
// stand-in's pattern, and the SHA-1 of the file.
func multipartUpload(t *testing.T, name string, size int64) (io.Reader, string, string) {
	t.Helper()
	var head, tail bytes.Buffer
	mw := multipart.NewWriter(&head)
	if err := mw.WriteField("attributes", `{"name":"`+name+`","parent":{"id":"0"}}`); err != nil {
		t.Fatal(err)
	}
	if _, err := mw.CreateFormFile("file", name); err != nil {
		t.Fatal(err)
	}
	boundary := mw.Boundary()
	tail.WriteString("\r\n--" + boundary + "--\r\n")
	h := sha1.New()
	_, _ = io.Copy(h, fakebox.PatternReader(size))
	return io.MultiReader(bytes.NewReader(head.Bytes()), fakebox.PatternReader(size), bytes.NewReader(tail.Bytes())),
		mw.FormDataContentType(), hex.EncodeToString(h.Sum(nil))
}

// Box revoked the token, and the client uploads 40 MiB — four times more
// than the proxy keeps in memory. The body goes with Expect: 100-continue,
// the stand-in (like Box's front ends and Go's server) refuses the token
// before reading it, and the proxy sends the same body once more with a new
// token: the client sees a 201 and never the 401.
func TestOnePathRevokedTokenDuringA40MiBUploadIsReplayedWithoutTheClientNoticing(t *testing.T) {
	t.Parallel()
	cpuHeavy(t)
	for _, tls := range []bool{true, false} { // HTTP/2 over TLS; plain HTTP/1.1
		revokedUploadIsReplayed(t, tls)
	}
}

func revokedUploadIsReplayed(t *testing.T, tls bool) {
	const size = 40 << 20
	box := startBox(t, func(c *fakebox.Config) { c.TLS = tls })
	p := startProxy(t, box, ccgEnv(box)...)
	if resp, body := p.Get(t, "/2.0/users/me"); resp.StatusCode != http.StatusOK {
		t.Fatalf("warm-up: %d %s", resp.StatusCode, body)
	}
	box.RevokeAll()
	before := len(box.Requests())
	body, ctype, sum := multipartUpload(t, "revoked-40MiB.bin", size)
	req := p.Request(t, http.MethodPost, "/api/2.0/files/content", body, "Content-Type", ctype)
	resp, out := p.Do(t, req)
	if resp.StatusCode != http.StatusCreated {
		for _, r := range box.Requests()[before:] {
			t.Logf("%s %s %s: status %d, %d body bytes, Expect %q", r.Proto, r.Method, r.Path, r.Status, r.BodyLen, r.Header.Get("Expect"))
		}
		t.Fatalf("upload after revocation: %d %s", resp.StatusCode, out)
	}
	if !strings.Contains(string(out), sum) {
		t.Fatalf("the stored file's SHA-1 is not %s: %s", sum, out)
	}
	var uploads []fakebox.Request
	for _, r := range box.Requests()[before:] {
		if strings.HasSuffix(r.Path, "/files/content") {
			uploads = append(uploads, r)
		}
	}
	if len(uploads) != 2 || uploads[0].Status != 401 || uploads[0].BodyLen != 0 || uploads[1].Status != 201 ||
		(!tls && uploads[0].Header.Get("Expect") != "100-continue") {
		for _, u := range uploads {
			t.Logf("upload request: status %d, %d body bytes, Expect %q", u.Status, u.BodyLen, u.Header.Get("Expect"))
		}
		t.Fatalf("want a 401 without the body, then the body once with a new token")
	}
}

// Path and header spellings that could slip past the rules are refused or
// never forwarded.
func TestOnePathOddSpellingsOfPathsCredentialsAndAsUser(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	p := startProxy(t, box, append(ccgEnv(box), "BOXPROXY_ALLOWED_USERS="+userAlice)...)
	for _, target := range []string{"/2.0/..;/users/me", "/2.0/x/..;a=b/users", "/2.0/.;/users/me", "/2.0/x%3b/..", "/api/2.0/files/..;/content"} {
		code, resp := rawHTTP(t, p.Addr, "GET "+target+" HTTP/1.1\r\nHost: "+p.Addr+"\r\nConnection: close\r\n\r\n")
		if code != http.StatusBadRequest || !strings.Contains(resp, "bad_path") {
			t.Errorf("GET %s = %d, want 400 bad_path:\n%s", target, code, resp)
		}
	}
	// Methods Box's API does not use are refused before any token is
	// fetched: TRACE would have the upstream (or an egress proxy) echo the
	// request back with its Authorization.
	before := len(box.Requests())
	for _, method := range []string{"TRACE", "CONNECT", "PROPFIND", "get"} {
		code, resp := rawHTTP(t, p.Addr, method+" /2.0/users/me HTTP/1.1\r\nHost: "+p.Addr+"\r\nConnection: close\r\n\r\n")
		if code != http.StatusMethodNotAllowed || !strings.Contains(resp, "method_not_allowed") {
			t.Errorf("%s /2.0/users/me = %d, want 405 method_not_allowed:\n%s", method, code, resp)
		}
	}
	if n := len(box.Requests()) - before; n != 0 {
		t.Errorf("%d refused requests reached the stand-in", n)
	}
	resp, body := p.Get(t, "/2.0/test/echo/q?ACCESS_TOKEN=a1&a=1;access_token=a2&access_token+=a3&Access%5FToken=a4&b=2"+
		"&access_token%00x=a5&access.token=a6&access+token=a7&access%20token=a8&access[token=a9&access_token[]=a10&access_token%5B%5D=a11&access_tokens=k",
		"As_User", userBob, "Authorization_", "Bearer stolen", "Cookie", "c=1",
		"As.User", userBob, "As~User", userBob, "As-User-", userBob, "Authorization.", "Bearer stolen", "X-Kept", "1")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("echo: %d %s", resp.StatusCode, body)
	}
	got := box.Requests()[before:]
	if len(got) != 1 {
		t.Fatalf("%d requests forwarded, want 1", len(got))
	}
	r := got[0]
	if r.RawQuery != "a=1&b=2&access_tokens=k" {
		t.Errorf("forwarded query %q, want every access_token spelling gone: a=1&b=2&access_tokens=k", r.RawQuery)
	}
	for k := range r.Header {
		if strings.ContainsAny(k, "_.~") || strings.HasSuffix(k, "-") || k == "Cookie" {
			t.Errorf("forwarded field %s", k)
		}
	}
	if r.Header.Get("X-Kept") != "1" {
		t.Errorf("X-Kept was not forwarded: %v", r.Header)
	}
	if r.UserID != testServiceAccountID {
		t.Errorf("acted as %s, want the service account (As_User must not act)", r.UserID)
	}
}

// BOXPROXY_UPSTREAM_TIMEOUT bounds the wait for Box's answer head: a Box
// that accepts and never answers gives a prompt JSON 504.
func TestOnePathUpstreamTimeoutBoundsTheWaitForBoxsAnswer(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	p := startProxy(t, box, append(ccgEnv(box), "BOXPROXY_UPSTREAM_TIMEOUT=300ms")...)
	start := time.Now()
	resp, body := p.Get(t, "/2.0/test/slow?ms=5000")
	took := time.Since(start)
	e := decodeBoxError(t, resp, body)
	if resp.StatusCode != http.StatusGatewayTimeout || e.Code != "upstream_timeout" {
		t.Fatalf("slow Box: %d %+v, want 504 upstream_timeout", resp.StatusCode, e)
	}
	if took > 4*time.Second {
		t.Fatalf("the 504 took %s; the timeout is 300ms", took)
	}
	if resp, body := p.Get(t, "/2.0/test/slow?ms=10"); resp.StatusCode != http.StatusOK {
		t.Fatalf("a prompt answer: %d %s", resp.StatusCode, body)
	}
}

// BOXPROXY_UPSTREAM_TIMEOUT also bounds a request body that Box (or an
// egress proxy) stops reading: through the real binary, a kept and a
// streamed upload to an upstream that accepts and never reads get a prompt
// JSON 504, and so does (in its access line) one whose client hung up while
// it waited; nothing stays in flight.
func TestOnePathUpstreamTimeoutBoundsAStalledBodyWrite(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn // read nothing, close nothing until the end
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	box := startBox(t)
	bp := startBinary(t, box, append(ccgEnv(box), "BOXPROXY_UPLOAD_URL=http://"+ln.Addr().String(), "BOXPROXY_UPSTREAM_TIMEOUT=1s")...)
	c := &http.Client{Timeout: 20 * time.Second}
	for _, size := range []int{10 << 20, 40 << 20} { // kept (BOXPROXY_RETRY_BODY_LIMIT), streamed
		start := time.Now()
		resp, err := c.Post(bp.URL+"/api/2.0/files/content", "application/octet-stream", bytes.NewReader(make([]byte, size)))
		if err != nil {
			t.Fatalf("%d bytes to a Box that stopped reading: no answer after %s: %v", size, time.Since(start).Round(time.Millisecond), err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		took := time.Since(start)
		e := decodeBoxError(t, resp, body)
		if resp.StatusCode != http.StatusGatewayTimeout || e.Code != "upstream_timeout" || !strings.Contains(e.Message, "stopped reading the request body") {
			t.Fatalf("%d bytes to a Box that stopped reading: %d %+v, want 504 upstream_timeout naming the body", size, resp.StatusCode, e)
		}
		if took > 8*time.Second {
			t.Errorf("%d bytes: the 504 took %s; the timeout is 1s (plus 1s for 100 Continue)", size, took)
		}
	}

	// The client hangs up mid-body: Go's server cannot tell while the body
	// is unread, the stall bound ends the request.
	raw, err := net.Dial("tcp", bp.Addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(raw, "POST /api/2.0/files/content HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n", bp.Addr, 64<<20)
	_ = raw.SetWriteDeadline(time.Now().Add(3 * time.Second))
	chunk := make([]byte, 64<<10)
	for sent := 0; sent < 32<<20; sent += len(chunk) {
		if _, err := raw.Write(chunk); err != nil {
			break
		}
	}
	raw.Close()

	lines := func() (n int) {
		for _, l := range logLines(t, bp.Stderr.String()) {
			if l["message"] == "request" && fmt.Sprint(l["status"]) == "504" && l["code"] == "upstream_timeout" {
				n++
			}
		}
		return n
	}
	waitUntil(t, 15*time.Second, func() bool { return lines() == 3 }, "three access lines with 504 upstream_timeout")
	waitUntil(t, 5*time.Second, func() bool {
		resp, err := http.Get(bp.URL + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(b), "\nboxproxy_requests_in_flight 1\n") // the scrape itself
	}, "boxproxy_requests_in_flight back to 0")
}

// Every access line names the client's address; the proxy's own refusals
// carry their error code.
func TestOnePathAccessLinesNameTheClientAndTheRefusalCode(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	p := startProxy(t, box, append(ccgEnv(box), "BOXPROXY_ALLOWED_USERS="+userAlice)...)
	c := &http.Client{Transport: &http.Transport{}}
	var local string
	c.Transport.(*http.Transport).DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err == nil {
			local = conn.LocalAddr().String()
		}
		return conn, err
	}
	p.DoWith(t, c, p.Request(t, http.MethodGet, "/2.0/users/me", nil))
	p.DoWith(t, c, p.Request(t, http.MethodGet, "/2.0/users/me", nil, "As-User", userBob))
	p.DoWith(t, c, p.Request(t, http.MethodGet, "/nope", nil))
	want := map[string]string{"200": "", "403": "user_not_allowed", "404": "not_found"}
	lines := p.AccessLines(t)
	if len(lines) != 3 {
		t.Fatalf("%d access lines, want 3: %v", len(lines), lines)
	}
	for _, l := range lines {
		status := fmt.Sprint(l["status"])
		code, _ := l["code"].(string)
		if l["client"] != local || code != want[status] {
			t.Errorf("access line %v: want client %s and code %q", l, local, want[status])
		}
	}
}

package integration_test

// Issue 6: hostile input. Each request gets a 4xx and nothing reaches Box.

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// hardRefused checks that send gets status want (any 4xx when want is 0)
// and that the stand-in saw no request meanwhile.
func hardRefused(t *testing.T, p *testProxy, want int, send func() (status int, body string)) {
	t.Helper()
	before := len(p.Box.Requests())
	status, body := send()
	if (want == 0 && (status < 400 || status > 499)) || (want != 0 && status != want) {
		w := "a 4xx"
		if want != 0 {
			w = strconv.Itoa(want)
		}
		t.Errorf("answered %d %q, want %s", status, body, w)
	}
	if after := len(p.Box.Requests()); after != before {
		t.Errorf("%d request(s) reached the stand-in, want none: %+v", after-before, p.Box.Requests()[before:])
	}
}

// Hostile requests (bad As-User values, targets that are not origin-form or
// would leave /2.0/, foreign Host headers, smuggling attempts, oversized
// headers) get a 4xx, and none of them reaches Box. Two answers come from Go's
// server before boxproxy sees the request: OPTIONS * (200, empty) and an
// unknown Transfer-Encoding (501).
func TestHardHostileRequestsGet4xxAndNothingReachesBox(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	p := startProxy(t, box, ccgEnv(box)...)

	get := func(hdr ...string) func() (int, string) {
		return func() (int, string) {
			resp, body := p.Get(t, "/2.0/users/me", hdr...)
			return resp.StatusCode, string(body)
		}
	}
	raw := func(request string) func() (int, string) {
		return func() (int, string) {
			r := hardRaw(t, p.Addr, request, 10*time.Second)
			return r.Status, r.Body
		}
	}
	const host = "Host: 127.0.0.1\r\n"

	// The control: a plain request does reach the stand-in.
	before := len(box.Requests())
	if resp, body := p.Get(t, "/2.0/users/me"); resp.StatusCode != http.StatusOK || len(box.Requests()) != before+1 {
		t.Fatalf("a plain request: %d %s, %d forwarded; the checks below would prove nothing", resp.StatusCode, body, len(box.Requests())-before)
	}

	cases := []struct {
		name string
		want int // 0: any 4xx
		send func() (int, string)
	}{
		{"As-User empty", 400, get("As-User", "")},
		{"As-User not digits", 400, get("As-User", "alice")},
		{"As-User digits and letters", 400, get("As-User", "2001x")},
		{"As-User negative", 400, get("As-User", "-2001")},
		{"As-User 25 digits", 400, get("As-User", strings.Repeat("9", 25))},
		{"As-User 64 KiB", 0, get("As-User", strings.Repeat("1", 60<<10))},
		{"As-User twice", 400, get("As-User", userAlice, "As-User", userBob)},
		{"As-User fullwidth digits", 400, get("As-User", "２００１")},
		{"As-User Arabic-Indic digits", 400, get("As-User", "٢٠٠١")},
		{"As-User with CR", 0, raw("GET /2.0/users/me HTTP/1.1\r\n" + host + "As-User: 2001\r2002\r\n\r\n")},
		{"As-User with LF starting a header", 0, raw("GET /2.0/users/me HTTP/1.1\r\n" + host + "As-User: 2001\nAs-User: 2002\r\n\r\n")},
		{"As-User with NUL", 0, raw("GET /2.0/users/me HTTP/1.1\r\n" + host + "As-User: 2001\x002002\r\n\r\n")},
		{"As-User folded onto a second line", 0, raw("GET /2.0/users/me HTTP/1.1\r\n" + host + "As-User: 2001\r\n 2002\r\n\r\n")},
		{"As-User with an encoded CRLF", 400, get("As-User", "2001%0d%0aX-Evil: 1")},

		{"absolute-form target", 400, raw("GET http://other.host/2.0/users/me HTTP/1.1\r\nHost: other.host\r\n\r\n")},
		{"absolute-form target with our Host", 400, raw("GET http://127.0.0.1/2.0/users/me HTTP/1.1\r\n" + host + "\r\n")},
		{"authority-form CONNECT", 0, raw("CONNECT other.host:443 HTTP/1.1\r\nHost: other.host:443\r\n\r\n")},
		// Go's server answers OPTIONS * itself (200, empty), before any handler.
		{"asterisk-form OPTIONS", 200, raw("OPTIONS * HTTP/1.1\r\n" + host + "\r\n")},

		{"/2.0/../admin", 400, raw("GET /2.0/../admin HTTP/1.1\r\n" + host + "\r\n")},
		{"/2.0/files/../../oauth2/token", 400, raw("GET /2.0/files/../../oauth2/token HTTP/1.1\r\n" + host + "\r\n")},
		{"/2.0/./users/me", 400, raw("GET /2.0/./users/me HTTP/1.1\r\n" + host + "\r\n")},
		{"/2.0/%2e%2e/x", 400, raw("GET /2.0/%2e%2e/x HTTP/1.1\r\n" + host + "\r\n")},
		{"/2.0/%2E%2E/x", 400, raw("GET /2.0/%2E%2E/x HTTP/1.1\r\n" + host + "\r\n")},
		{"/2.0/.%2e/x", 400, raw("GET /2.0/.%2e/x HTTP/1.1\r\n" + host + "\r\n")},
		{"/2.0/files/a%2Fb", 400, raw("GET /2.0/files/a%2Fb HTTP/1.1\r\n" + host + "\r\n")},
		{"/2.0/files/a%5cb", 400, raw("GET /2.0/files/a%5cb HTTP/1.1\r\n" + host + "\r\n")},
		{"/2.0/files/a\\..\\b", 400, raw("GET /2.0/files/a\\..\\b HTTP/1.1\r\n" + host + "\r\n")},
		{"/api/2.0/..%2f..%2f", 400, raw("GET /api/2.0/..%2f..%2f HTTP/1.1\r\n" + host + "\r\n")},
		{"/2.0/x%00", 400, raw("GET /2.0/x%00 HTTP/1.1\r\n" + host + "\r\n")},
		{"/2.0/x%0d%0aSet-Cookie", 400, raw("GET /2.0/x%0d%0aSet-Cookie:%20a HTTP/1.1\r\n" + host + "\r\n")},
		{"//2.0/users/me", 404, raw("GET //2.0/users/me HTTP/1.1\r\n" + host + "\r\n")},
		{"/oauth2/token", 404, raw("POST /oauth2/token HTTP/1.1\r\n" + host + "Content-Length: 0\r\n\r\n")},

		{"Host evil.example", 403, func() (int, string) {
			req := p.Request(t, http.MethodGet, "/2.0/users/me", nil)
			req.Host = "evil.example"
			resp, body := p.Do(t, req)
			return resp.StatusCode, string(body)
		}},
		{"Host evil.example:80 over TCP", 403, raw("GET /2.0/users/me HTTP/1.1\r\nHost: evil.example:80\r\n\r\n")},
		{"Host 127.0.0.1.evil.example", 403, raw("GET /2.0/users/me HTTP/1.1\r\nHost: 127.0.0.1.evil.example\r\n\r\n")},
		{"Host localhost.evil.example", 403, raw("GET /2.0/users/me HTTP/1.1\r\nHost: localhost.evil.example\r\n\r\n")},
		{"two Host headers", 400, raw("GET /2.0/users/me HTTP/1.1\r\n" + host + "Host: evil.example\r\n\r\n")},
		{"cross-origin browser", 403, get("Origin", "https://evil.example")},

		// Go's server answers unknown transfer codings itself with 501.
		{"Transfer-Encoding chunked, identity", 501, raw("POST /2.0/test/echo/te HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n")},
		{"Transfer-Encoding xchunked", 501, raw("POST /2.0/test/echo/te HTTP/1.1\r\n" + host + "Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n")},
		{"two Content-Lengths that differ", 400, raw("POST /2.0/test/echo/cl HTTP/1.1\r\n" + host + "Content-Length: 1\r\nContent-Length: 5\r\n\r\nhello")},
		{"negative Content-Length", 400, raw("POST /2.0/test/echo/cl HTTP/1.1\r\n" + host + "Content-Length: -1\r\n\r\n")},

		{"headers over 64 KiB", 431, raw("GET /2.0/users/me HTTP/1.1\r\n" + host + "X-Big: " + strings.Repeat("a", 128<<10) + "\r\n\r\n")},
		{"request line over 64 KiB", 431, raw("GET /2.0/users/me?q=" + strings.Repeat("a", 128<<10) + " HTTP/1.1\r\n" + host + "\r\n")},
		{"many headers", 431, raw("GET /2.0/users/me HTTP/1.1\r\n" + host + strings.Repeat("X-Many: 1\r\n", 10000) + "\r\n")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { hardRefused(t, p, tc.want, tc.send) })
	}
}

// Content-Length together with Transfer-Encoding: chunked (the classic
// request-smuggling pair). Go's server follows RFC 9112 section 6.3: chunked
// wins and Content-Length is dropped, so the proxy forwards exactly one
// request whose body is the chunked body, re-framed by Go's client; the bytes
// after the last chunk are read as the next request on the connection (and
// refused there if they are hostile), never as part of the first.
func TestHardContentLengthWithChunkedIsOneWellDefinedRequest(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	p := startProxy(t, box, ccgEnv(box)...)
	if resp, body := p.Get(t, "/2.0/users/me"); resp.StatusCode != http.StatusOK {
		t.Fatalf("warm-up: %d %s", resp.StatusCode, body)
	}
	// The tail is a valid request: a front end that framed by
	// Content-Length would have sent it as part of the body.
	smuggled := "GET /2.0/test/echo/smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
	chunked := "5\r\nhello\r\n0\r\n\r\n"
	head := " /2.0/test/echo/smuggle HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
	// HTTP/1.0 is the other way round: Go ignores Transfer-Encoding there
	// (RFC 9112 section 6.1 says such a message must be treated as faulty) and
	// frames by Content-Length, which here covers only the first chunk's
	// size line; a front end that honours chunked sees the smuggled request
	// inside the chunk.
	sizeLine := strconv.FormatInt(int64(len(smuggled)), 16) + "\r\n"
	cases := []struct{ name, req string }{
		{"GET", "GET" + head + "Content-Length: " + strconv.Itoa(len(chunked)+len(smuggled)) + "\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked + smuggled},
		{"POST", "POST" + head + "Content-Length: " + strconv.Itoa(len(chunked)+len(smuggled)) + "\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked + smuggled},
		{"POST over HTTP/1.0 with keep-alive", "POST /2.0/test/echo/smuggle HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\nContent-Type: text/plain\r\n" +
			"Content-Length: " + strconv.Itoa(len(sizeLine)) + "\r\nTransfer-Encoding: chunked\r\n\r\n" + sizeLine + smuggled + "\r\n0\r\n\r\n"},
	}
	for _, tc := range cases {
		method, req := tc.name, tc.req
		wantLen := float64(5)
		if strings.Contains(method, "1.0") {
			wantLen = float64(len(sizeLine))
		}
		before := len(box.Requests())
		conn, err := net.Dial("tcp", p.Addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(conn, req); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(conn)
		first, firstBody := hardReadResponse(br)
		second, secondBody := hardReadResponse(br)
		_ = conn.Close()
		fwd := box.Requests()[before:]
		for _, r := range fwd {
			if strings.HasSuffix(r.Path, "/smuggled") {
				t.Errorf("%s: the bytes after the chunked body were forwarded as a request", method)
			}
		}
		switch {
		case first >= 400 && first < 500:
			if len(fwd) != 0 {
				t.Errorf("%s: refused with %d but %d request(s) reached the stand-in", method, first, len(fwd))
			}
		case first == http.StatusOK:
			if len(fwd) != 1 {
				t.Fatalf("%s: %d requests reached the stand-in, want exactly 1: %+v", method, len(fwd), fwd)
			}
			echo := jsonBody(t, []byte(firstBody))
			if echo["body_len"] != wantLen || echo["path"] != "/2.0/test/echo/smuggle" {
				t.Errorf("%s: the stand-in got %v, want the %v-byte body only", method, echo, wantLen)
			}
			// Nothing after such a body is read from the connection.
			if second != 0 {
				t.Errorf("%s: the bytes after the chunked body were answered %d %q, want the connection closed", method, second, secondBody)
			}
		default:
			t.Fatalf("%s: answered %d %q", method, first, firstBody)
		}
	}
}

// hardReadResponse reads one response from br: its status (0 when the
// connection ended first) and body.
func hardReadResponse(br *bufio.Reader) (int, string) {
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// A client that sends its headers too slowly is disconnected, and nothing
// is forwarded (BOXPROXY_HEADER_TIMEOUT, 1 s here).
func TestHardSlowHeadersAreDisconnectedAndNothingReachesBox(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	p := startProxy(t, box, append(ccgEnv(box), "BOXPROXY_HEADER_TIMEOUT=1s")...)
	before := len(box.Requests())
	conn, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	_ = conn.SetDeadline(start.Add(10 * time.Second))
	if _, err := io.WriteString(conn, "GET /2.0/users/me HTTP/1.1\r\nHost: 127.0.0.1\r\n"); err != nil {
		t.Fatal(err)
	}
	// One header byte every 200 ms: the connection is alive but never done.
	closed := make(chan time.Duration, 1)
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, err := conn.Read(buf); err != nil {
				closed <- time.Since(start)
				return
			}
		}
	}()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case took := <-closed:
			if took > 3*time.Second {
				t.Errorf("the connection was closed after %s, want about 1s", took)
			}
			if n := len(box.Requests()) - before; n != 0 {
				t.Errorf("%d request(s) reached the stand-in", n)
			}
			return
		case <-tick.C:
			_, _ = io.WriteString(conn, "X")
		}
	}
}

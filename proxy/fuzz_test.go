package proxy

// Fuzz tests for every parser of outside input in the proxy: the As-User
// header, the request target, the query (access_token removal), Box's JSON
// answers that carry upload-session URLs, and Box's Retry-After header.
// `go test` runs their seeds; a longer session is, e.g.:
//
//	go test -run '^$' -fuzz '^FuzzAsUser$' -fuzztime 5m ./proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/boxproxy/boxproxy/auth"
)

// fuzzTokens hands out one token and records the subjects asked for.
type fuzzTokens struct {
	mu       sync.Mutex
	subjects []auth.Subject
}

func (f *fuzzTokens) Token(_ context.Context, s auth.Subject) (auth.Token, error) {
	f.mu.Lock()
	f.subjects = append(f.subjects, s)
	f.mu.Unlock()
	return auth.NewToken("FUZZTOKEN", time.Now().Add(time.Hour)), nil
}
func (f *fuzzTokens) Invalidate(auth.Subject, string) bool { return true }
func (f *fuzzTokens) Refreshable() bool                    { return true }

// recordingTransport records what would have been sent upstream and answers
// with status, header and body.
type recordingTransport struct {
	mu     sync.Mutex
	sent   []*http.Request
	status int
	header http.Header
	body   []byte
}

func (rt *recordingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, r.Body)
		_ = r.Body.Close()
	}
	rt.mu.Lock()
	rt.sent = append(rt.sent, r)
	rt.mu.Unlock()
	status := rt.status
	if status == 0 {
		status = http.StatusOK
	}
	h := rt.header.Clone()
	if h == nil {
		h = http.Header{}
	}
	h.Set("Content-Length", strconv.Itoa(len(rt.body)))
	return &http.Response{StatusCode: status, ProtoMajor: 1, ProtoMinor: 1, Header: h,
		Body: io.NopCloser(bytes.NewReader(rt.body)), ContentLength: int64(len(rt.body)), Request: r}, nil
}

func (rt *recordingTransport) count() int {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return len(rt.sent)
}

const fuzzUpstream = "https://api.box.example"

func newFuzzProxy(tb testing.TB, rt http.RoundTripper, tokens Tokens) *Proxy {
	tb.Helper()
	up, _ := url.Parse(fuzzUpstream)
	pub, _ := url.Parse("http://127.0.0.1:8080")
	p, err := New(Options{
		API: up, Upload: up, Public: pub, Tokens: tokens,
		DefaultSubject: auth.Subject{Type: auth.Enterprise, ID: "500100"},
		AsUserToken:    true, RetryBodyLimit: 1 << 20, Transport: rt,
		Logger: zerolog.Nop(),
	})
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

func isASCIIDigits(s string) bool {
	if len(s) < 1 || len(s) > 20 {
		return false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// FuzzAsUser: an As-User value that is not 1 to 20 ASCII digits is refused
// with 400 and nothing is forwarded; a valid one picks that user's token and
// is removed from the forwarded request.
func FuzzAsUser(f *testing.F) {
	for _, s := range []string{"2001", "", "0", "12345678901234567890", "123456789012345678901", "-1", "+1", " 2001", "2001 ",
		"2001\r\n", "2001\x00", "２００１", "٢٠٠١", "1e3", "0x10", "2001,2002", "abc", "\xff\xfe", strings.Repeat("9", 25)} {
		f.Add(s, false)
	}
	f.Add("2001", true)
	f.Fuzz(func(t *testing.T, value string, twice bool) {
		rt := &recordingTransport{}
		tokens := &fuzzTokens{}
		p := newFuzzProxy(t, rt, tokens)
		r := httptest.NewRequest(http.MethodGet, "/2.0/users/me", nil)
		r.Header["As-User"] = []string{value}
		if twice {
			r.Header["As-User"] = append(r.Header["As-User"], value)
		}
		w := httptest.NewRecorder()
		p.ServeHTTP(w, r)

		if twice || !isASCIIDigits(value) {
			if w.Code != http.StatusBadRequest || rt.count() != 0 {
				t.Fatalf("As-User %q (twice %v): status %d, %d forwarded; want 400 and nothing forwarded", value, twice, w.Code, rt.count())
			}
			var body struct {
				Type, Code string
				Status     int
			}
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || body.Type != "error" || body.Status != 400 || body.Code != "bad_as_user" {
				t.Fatalf("As-User %q: error body %q is not Box's error shape with code bad_as_user", value, w.Body.Bytes())
			}
			return
		}
		if w.Code != http.StatusOK || rt.count() != 1 {
			t.Fatalf("As-User %q: status %d, %d forwarded; want 200 and one forwarded", value, w.Code, rt.count())
		}
		if got := rt.sent[0].Header.Values("As-User"); len(got) != 0 {
			t.Fatalf("As-User %q was forwarded (%q) although it picked the token", value, got)
		}
		if len(tokens.subjects) != 1 || tokens.subjects[0] != (auth.Subject{Type: auth.User, ID: value}) {
			t.Fatalf("As-User %q asked for tokens of %v", value, tokens.subjects)
		}
	})
}

// FuzzCheckTarget: for any request target Go's server accepts, CheckTarget
// does not panic, and a target the proxy forwards leads, after path.Clean,
// to a path under /2.0/ (or /api/2.0/) of the upstream, with no dot segment.
func FuzzCheckTarget(f *testing.F) {
	for _, s := range []string{"/2.0/users/me", "/2.0/folders/0/items?fields=name&limit=10", "/api/2.0/files/content",
		"/2.0/../admin", "/2.0/%2e%2e/x", "/2.0/files/a%2Fb", "/api/2.0/..%2f..%2f", "/2.0/./x", "/2.0//x", "/2.0/x/..",
		"/2.0/%252e%252e/x", "/2.0/a%5cb", "/2.0/a\\b", "/2.0/%00", "/2.0/%", "/2.0/%zz", "http://other.host/2.0/users/me",
		"other.host:443", "*", "/2.0/files/%E2%80%AE", "/2.0/;/../x", "/2.0/x?a=/../../", "/2.0/x#frag", "//2.0/x", "/2.0", "/2.0/", "/api/2.0/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, target string) {
		r, err := http.ReadRequest(bufio.NewReader(strings.NewReader("GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")))
		if err != nil {
			return // Go's server would answer 400 itself
		}
		e := CheckTarget(r)
		if e != nil && (e.Status != http.StatusBadRequest || e.Code == "" || e.Message == "") {
			t.Fatalf("CheckTarget(%q) = %+v, want a 400 with a code and a message", target, e)
		}
		if e != nil {
			return // the server refuses it before the proxy sees it
		}
		rt := &recordingTransport{}
		p := newFuzzProxy(t, rt, &fuzzTokens{})
		w := httptest.NewRecorder()
		p.ServeHTTP(w, r)
		if rt.count() == 0 {
			if w.Code < 400 || w.Code > 499 {
				t.Fatalf("target %q: nothing forwarded but status %d", target, w.Code)
			}
			return
		}
		out := rt.sent[0].URL
		if out.Scheme+"://"+out.Host != fuzzUpstream {
			t.Fatalf("target %q was sent to %s://%s", target, out.Scheme, out.Host)
		}
		// The upstream decodes the escaped path once: that must be the path checked.
		decoded, err := url.PathUnescape(out.EscapedPath())
		if err != nil {
			t.Fatalf("target %q: forwarded path %q does not decode: %v", target, out.EscapedPath(), err)
		}
		if decoded != out.Path {
			t.Fatalf("target %q: forwarded path %q decodes to %q, not the checked %q", target, out.EscapedPath(), decoded, out.Path)
		}
		if hasDotSegment(out.Path) || strings.Contains(out.Path, "\\") {
			t.Fatalf("target %q was forwarded with dot segments or backslashes: %q", target, out.Path)
		}
		clean := path.Clean(out.Path) + "/" // path.Clean("/2.0/") is "/2.0"
		if !strings.HasPrefix(clean, "/2.0/") && !strings.HasPrefix(clean, "/api/2.0/") {
			t.Fatalf("target %q was forwarded to %q, which leaves /2.0/ and /api/2.0/", target, clean)
		}
		if strings.HasPrefix(r.URL.Path, "/2.0/") != strings.HasPrefix(clean, "/2.0/") {
			t.Fatalf("target %q changed route: forwarded to %q", target, clean)
		}
	})
}

// accessTokenKey reports whether a query key names access_token for a
// server that decodes it (url.QueryUnescape) or compares it raw, in any case,
// with or without spaces around it.
func accessTokenKey(key string) bool {
	is := func(k string) bool { return strings.EqualFold(strings.TrimSpace(k), "access_token") }
	k, err := url.QueryUnescape(key)
	return is(key) || (err == nil && is(k))
}

// FuzzStripAccessToken: the output has no access_token parameter, and every
// other parameter is kept, byte for byte and in order.
func FuzzStripAccessToken(f *testing.F) {
	for _, s := range []string{"", "a=1", "access_token=SECRET", "a=1&access_token=SECRET&b=2", "access%5Ftoken=S&b=%2F",
		"access_tokens=keep&x=access", "a=1&&b=2", "&a=1&access_token=x", "access_token=x&&b", "access_token", "%",
		"a=%zz&access_token=1", "access_token=1;a=2", "ACCESS_TOKEN=1", "access_token+=1", "a=1;access_token=2&b", "Access%5FToken=1", "access%5ftoken=1&access_token=2&c", "&&&"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		out := stripAccessToken(q)
		// Parameters are split at & and, for servers that do, at ;.
		var want []string
		for _, part := range strings.Split(q, "&") {
			var subs []string
			for _, sub := range strings.Split(part, ";") {
				if key, _, _ := strings.Cut(sub, "="); !accessTokenKey(key) {
					subs = append(subs, sub)
				}
			}
			if len(subs) > 0 {
				want = append(want, strings.Join(subs, ";"))
			}
		}
		if w := strings.Join(want, "&"); out != w {
			t.Fatalf("stripAccessToken(%q) = %q, want %q", q, out, w)
		}
		for _, part := range strings.FieldsFunc(out, func(r rune) bool { return r == '&' || r == ';' }) {
			if key, _, _ := strings.Cut(part, "="); accessTokenKey(key) {
				t.Fatalf("stripAccessToken(%q) = %q still has access_token", q, out)
			}
		}
		if v, err := url.ParseQuery(out); err == nil && v.Has("access_token") {
			t.Fatalf("stripAccessToken(%q) = %q: url.ParseQuery finds access_token", q, out)
		}
	})
}

// FuzzRewriteSessionURLs: whatever JSON (or not) Box answers an upload-session
// call with, the proxy does not panic, the body the client gets matches its
// Content-Length, every upload-session URL in it points at the proxy, and
// valid JSON stays valid JSON.
func FuzzRewriteSessionURLs(f *testing.F) {
	f.Add(`{"id":"S","session_endpoints":{"upload_part":"https://upload.box.com/api/2.0/files/upload_sessions/S","commit":"https://upload.box.com/api/2.0/files/upload_sessions/S/commit"}}`, 201)
	f.Add(`{"upload_part":"https:\/\/upload.app.box.com\/api\/2.0\/files\/upload_sessions\/S"}`, 200)
	f.Add(`{"url":"http://x/api/2.0/files/upload_sessions","u2":"https://"}`, 200)
	f.Add(`{"commit" : "http://x/api/2.0/files/upload_sessions/S","description":"\"commit\":\"https://a/api/2.0/files/upload_sessions"}`, 200)
	f.Add(`"https://a"https://b/api/2.0/files/upload_sessions`, 200)
	f.Add(`{"type":"error","status":404,"code":"not_found","request_id":"abc"}`, 404)
	f.Add(`{"type":"error","status":400,"request_id":`, 400)
	f.Add(``, 200)
	f.Add(`not json`, 500)
	f.Fuzz(func(t *testing.T, body string, status int) {
		if status < 200 || status > 599 {
			status = 200
		}
		rt := &recordingTransport{status: status, body: []byte(body), header: http.Header{"Content-Type": {"application/json"}}}
		p := newFuzzProxy(t, rt, &fuzzTokens{})
		r := httptest.NewRequest(http.MethodPost, "/api/2.0/files/upload_sessions", strings.NewReader(`{}`))
		w := httptest.NewRecorder()
		p.ServeHTTP(w, r)
		got := w.Body.Bytes()
		if w.Code != status {
			t.Fatalf("status %d, want Box's %d", w.Code, status)
		}
		if cl := w.Header().Get("Content-Length"); cl != "" && cl != strconv.Itoa(len(got)) {
			t.Fatalf("Content-Length %s but %d bytes of body for %q", cl, len(got), body)
		}
		for _, m := range sessionURL.FindAllSubmatch(got, -1) {
			if string(m[2]) != p.public {
				t.Fatalf("an upload-session URL still points at %q: %q -> %q", m[1], body, got)
			}
		}
		if json.Valid([]byte(body)) && !json.Valid(got) {
			t.Fatalf("valid JSON %q became invalid: %q", body, got)
		}
	})
}

// FuzzRetryAfter: whatever Retry-After Box sends, the wait before a retry is
// between 0 and RetryWaitMax, and a Retry-After of at least RetryWaitMax
// seconds waits exactly RetryWaitMax.
func FuzzRetryAfter(f *testing.F) {
	for _, s := range []string{"", "0", "1", "1.5", "3600", "-1", "1e308", "1e10", "9223372036", "NaN", "Inf", "+Inf", "0x10",
		"Wed, 21 Oct 2015 07:28:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT", " 5", "5 "} {
		f.Add(s, 0)
	}
	f.Fuzz(func(t *testing.T, v string, n int) {
		n = max(0, n%8)
		p := newFuzzProxy(t, &recordingTransport{}, &fuzzTokens{})
		maxWait := p.o.RetryWaitMax
		resp := &http.Response{StatusCode: http.StatusTooManyRequests, Header: http.Header{"Retry-After": {v}}}
		wait := p.rt.retryWait(resp, n)
		if wait < 0 || wait > maxWait {
			t.Fatalf("Retry-After %q: wait %s, want between 0 and %s", v, wait, maxWait)
		}
		if s, err := strconv.ParseFloat(v, 64); err == nil && s >= maxWait.Seconds() && wait != maxWait {
			t.Fatalf("Retry-After %q: wait %s, want the cap %s", v, wait, maxWait)
		}
	})
}

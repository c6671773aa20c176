package front

import (
	"bufio"
	"bytes"
	"net/http"
	"net/textproto"
	"strings"
	"testing"
)

func parse(t testing.TB, raw string) (*Head, bool) {
	t.Helper()
	h := &Head{}
	return h, parseHead([]byte(raw), h)
}

func TestParseHeadTakesPlainRequests(t *testing.T) {
	h, ok := parse(t, "GET /2.0/folders/0/items?fields=id,name&limit=10 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAs-User: 42\r\nUser-Agent: curl/8\r\nConnection: close\r\n\r\n")
	if !ok {
		t.Fatal("refused a plain GET")
	}
	if h.Method != "GET" || string(h.Path) != "/2.0/folders/0/items" || string(h.Query) != "fields=id,name&limit=10" ||
		string(h.Host) != "127.0.0.1:8080" || !h.Close || len(h.Fields) != 4 {
		t.Fatalf("parsed %+v", h)
	}
	if v, n := h.Get("as-user"); string(v) != "42" || n != 1 {
		t.Fatalf("Get(as-user) = %q, %d", v, n)
	}
	if h, ok := parse(t, "HEAD /2.0/files/1 HTTP/1.1\r\nhost: localhost\r\nConnection: Keep-Alive\r\n\r\n"); !ok || h.Method != "HEAD" || h.Query != nil || h.Close {
		t.Fatalf("HEAD: ok=%v %+v", ok, h)
	}
}

// Everything that is not plainly simple goes to net/http: the fast path
// never sees a body, an odd framing, an odd target or a malformed field.
func TestParseHeadRefusesWhatNetHTTPMustJudge(t *testing.T) {
	for name, raw := range map[string]string{
		"POST":                "POST /2.0/x HTTP/1.1\r\nHost: a\r\n\r\n",
		"lowercase method":    "get /2.0/x HTTP/1.1\r\nHost: a\r\n\r\n",
		"HTTP/1.0":            "GET /2.0/x HTTP/1.0\r\nHost: a\r\n\r\n",
		"absolute target":     "GET http://a/2.0/x HTTP/1.1\r\nHost: a\r\n\r\n",
		"asterisk":            "GET * HTTP/1.1\r\nHost: a\r\n\r\n",
		"percent in path":     "GET /2.0/%2e%2e/x HTTP/1.1\r\nHost: a\r\n\r\n",
		"backslash":           "GET /2.0/a\\b HTTP/1.1\r\nHost: a\r\n\r\n",
		"space in target":     "GET /2.0/a b HTTP/1.1\r\nHost: a\r\n\r\n",
		"fragment":            "GET /2.0/a#b HTTP/1.1\r\nHost: a\r\n\r\n",
		"no Host":             "GET /2.0/x HTTP/1.1\r\nAccept: */*\r\n\r\n",
		"two Hosts":           "GET /2.0/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
		"Content-Length":      "GET /2.0/x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
		"Transfer-Encoding":   "GET /2.0/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
		"Expect":              "GET /2.0/x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
		"Upgrade":             "GET /2.0/x HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
		"TE":                  "GET /2.0/x HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n",
		"Connection: upgrade": "GET /2.0/x HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n",
		"obs-fold":            "GET /2.0/x HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n",
		"space before colon":  "GET /2.0/x HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n",
		"bare LF":             "GET /2.0/x HTTP/1.1\nHost: a\r\n\r\n",
		"bare CR in value":    "GET /2.0/x HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n",
		"NUL in value":        "GET /2.0/x HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n",
		"obs-text in value":   "GET /2.0/x HTTP/1.1\r\nHost: a\r\nX-A: caf\xc3\xa9\r\n\r\n",
		"empty field name":    "GET /2.0/x HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n",
		"leading empty line":  "\r\nGET /2.0/x HTTP/1.1\r\nHost: a\r\n\r\n",
		"bytes after head":    "GET /2.0/x HTTP/1.1\r\nHost: a\r\n\r\nX",
		"too many fields":     "GET /2.0/x HTTP/1.1\r\nHost: a\r\n" + strings.Repeat("X-A: b\r\n", maxFields) + "\r\n",
	} {
		if _, ok := parse(t, raw); ok {
			t.Errorf("%s: taken by the fast path: %q", name, raw)
		}
	}
}

// FuzzParseHead checks parseHead against net/http's own parser: whatever the
// fast path takes, net/http reads as the same request (method, target, Host
// and every field), so that no input means one thing to the fast path and
// another to the server behind the guards.
func FuzzParseHead(f *testing.F) {
	for _, s := range []string{
		"GET /2.0/users/me HTTP/1.1\r\nHost: localhost\r\n\r\n",
		"HEAD /api/2.0/files/content?x=1 HTTP/1.1\r\nHost: [::1]:80\r\nAs-User: 1\r\nX-Request-Id: abc\r\n\r\n",
		"GET /2.0/x?a=%20&b=c HTTP/1.1\r\nHost: a\r\nConnection: close\r\nX-A:\t b \t\r\n\r\n",
		"GET /2.0/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
		"GET /2.0/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h := &Head{}
		if !parseHead(b, h) {
			return
		}
		r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(b)))
		if err != nil {
			t.Fatalf("the fast path took %q, net/http refuses it: %v", b, err)
		}
		if r.Method != h.Method || r.RequestURI != string(h.Target) || r.Host != string(h.Host) {
			t.Fatalf("%q: net/http reads %s %s Host %q; the fast path %s %s Host %q", b, r.Method, r.RequestURI, r.Host, h.Method, h.Target, h.Host)
		}
		if r.URL.Path != string(h.Path) || r.URL.RawQuery != string(h.Query) {
			t.Fatalf("%q: net/http's path %q query %q; the fast path's %q %q", b, r.URL.Path, r.URL.RawQuery, h.Path, h.Query)
		}
		seen := map[string][]string{}
		for _, fl := range h.Fields {
			k := textproto.CanonicalMIMEHeaderKey(string(fl.Name))
			if k == "Host" {
				continue
			}
			seen[k] = append(seen[k], string(fl.Value))
		}
		for k, vs := range r.Header {
			if strings.Join(vs, "\x00") != strings.Join(seen[k], "\x00") {
				t.Fatalf("%q: field %s: net/http %q, the fast path %q", b, k, vs, seen[k])
			}
			delete(seen, k)
		}
		if len(seen) > 0 {
			t.Fatalf("%q: fields net/http does not have: %v", b, seen)
		}
		if r.Close != h.Close {
			t.Fatalf("%q: Close: net/http %v, the fast path %v", b, r.Close, h.Close)
		}
	})
}

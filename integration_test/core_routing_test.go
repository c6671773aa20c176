package integration_test

// Issue 2, points 5-8: routing, the client's credentials, chunked uploads
// through the proxy, and Box's answers passed back unchanged.

import (
	"bytes"
	"compress/gzip"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/boxproxy/boxproxy/fakebox"
)

// --- 5. Routing

func TestPathAndQueryReachTheRightUpstreamByteForByte(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	p := startProxy(t, box, ccgEnv(box)...)

	targets := []struct{ host, target string }{
		{"api", "/2.0/test/echo/a%20b/%C3%A9/%c3%a9/x;y=1/~t/%7E/'(!)*/@:$,+?b=2&&a=%20x&c=1;d=2&b=1&e=&%C3%A9=%c3%a9&plus=a+b&semi=;&last"},
		{"api", "/2.0/test/echo/q?a=1&&&b=%41&a=0"},
		{"api", "/2.0/test/echo/plain?z=1&y=2&x=3&z=0"},
		{"api", "/2.0/test/echo/no-query"},
		{"api", "/2.0/test/echo/empty-query?"},
		{"upload", "/api/2.0/test/echo/files/%C3%A9t%C3%A9%20file.txt?fields=id,name&&x=%2F;y"},
	}
	for _, tc := range targets {
		raw := "GET " + tc.target + " HTTP/1.1\r\nHost: " + p.Addr + "\r\nConnection: close\r\n\r\n"
		status, body := rawHTTP(t, p.Addr, raw)
		if status != http.StatusOK {
			t.Errorf("GET %s = %d %s", tc.target, status, body)
			continue
		}
		echo := jsonBody(t, []byte(body))
		wantPath, wantQuery, _ := strings.Cut(tc.target, "?")
		if echo["path"] != wantPath || echo["raw_query"] != wantQuery {
			t.Errorf("GET %s reached the stand-in as path %q query %q, want %q and %q", tc.target, echo["path"], echo["raw_query"], wantPath, wantQuery)
		}
	}
	reqs := box.Requests()
	if len(reqs) != len(targets) {
		t.Fatalf("the stand-in saw %d requests, want %d", len(reqs), len(targets))
	}
	for i, r := range reqs {
		if r.Host != targets[i].host {
			t.Errorf("%s went to the %s host, want %s", targets[i].target, r.Host, targets[i].host)
		}
	}
}

// Empty query parameters at either end are legal; the query must still reach
// Box byte for byte, whatever characters it holds.
func TestQueryWithLeadingOrTrailingAmpersandReachesBoxByteForByte(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	p := startProxy(t, box, ccgEnv(box)...)

	for _, query := range []string{"&x=1&", "&x=%20&", "x=%20&", "&x=%20", "&&x=%41&&", "&access=1&"} {
		want := query
		target := "/2.0/test/echo/edges?" + query
		status, body := rawHTTP(t, p.Addr, "GET "+target+" HTTP/1.1\r\nHost: "+p.Addr+"\r\nConnection: close\r\n\r\n")
		if status != http.StatusOK {
			t.Errorf("GET %s = %d %s", target, status, body)
			continue
		}
		if got := jsonBody(t, []byte(body))["raw_query"]; got != want {
			t.Errorf("query %q reached the stand-in as %q, want %q", query, got, want)
		}
	}
}

func TestPathsOutsideTheBoxAPIGetJSON404AndAreNeverForwarded(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	p := startProxy(t, box, ccgEnv(box)...)
	waitUntil(t, 10*time.Second, func() bool { return len(box.TokenRequests()) == 1 }, "the default token is fetched")

	for _, path := range []string{"/foo", "/", "/2.0", "/api/2.0", "/api", "/2.0x/users/me", "/3.0/users/me",
		"/oauth2/token", "/oauth2/revoke", "/api/oauth2/authorize", "/API/2.0/files/content", "/d/1/x/download"} {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			resp, body := p.Do(t, p.Request(t, method, path, strings.NewReader("grant_type=client_credentials"),
				"Content-Type", "application/x-www-form-urlencoded"))
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("%s %s = %d %s, want 404", method, path, resp.StatusCode, body)
				continue
			}
			if e := decodeBoxError(t, resp, body); e.Code != "not_found" {
				t.Errorf("%s %s: code %q, want not_found", method, path, e.Code)
			}
		}
	}
	if reqs := box.Requests(); len(reqs) != 0 {
		t.Errorf("unknown paths reached the stand-in: %+v", reqs)
	}
	if n := len(box.TokenRequests()); n != 1 {
		t.Errorf("%d token requests, want only the default subject's (nothing reaches the token endpoint)", n)
	}
}

func TestAbsoluteFormAndEscapingTargetsAreRefusedAndNeverFollowed(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	p := startProxy(t, box, ccgEnv(box)...)
	waitUntil(t, 10*time.Second, func() bool { return len(box.TokenRequests()) == 1 }, "the default token is fetched")

	var canaryHits atomic.Int32
	canary := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		canaryHits.Add(1)
		w.WriteHeader(http.StatusTeapot)
	}))
	t.Cleanup(canary.Close)
	canaryHost := strings.TrimPrefix(canary.URL, "http://")

	cases := map[string]string{
		"absolute form, other host":          "GET http://other.host/2.0/users/me HTTP/1.1\r\nHost: other.host\r\n",
		"absolute form, reachable host":      "GET " + canary.URL + "/2.0/users/me HTTP/1.1\r\nHost: " + canaryHost + "\r\n",
		"absolute form, our host":            "GET http://" + p.Addr + "/2.0/users/me HTTP/1.1\r\nHost: " + p.Addr + "\r\n",
		"absolute form, root":                "GET http://other.host/ HTTP/1.1\r\nHost: other.host\r\n",
		"CONNECT":                            "CONNECT " + canaryHost + " HTTP/1.1\r\nHost: " + canaryHost + "\r\n",
		"dot segments to the token endpoint": "POST /2.0/../oauth2/token HTTP/1.1\r\nHost: " + p.Addr + "\r\nContent-Length: 0\r\n",
		"encoded dot segments":               "GET /2.0/%2e%2e/oauth2/token HTTP/1.1\r\nHost: " + p.Addr + "\r\n",
		"encoded slash":                      "GET /2.0/files%2F..%2F..%2Foauth2%2Ftoken HTTP/1.1\r\nHost: " + p.Addr + "\r\n",
	}
	for name, raw := range cases {
		status, body := rawHTTP(t, p.Addr, raw+"Connection: close\r\n\r\n")
		if status < 400 || status > 499 {
			t.Errorf("%s: status %d %q, want 4xx", name, status, body)
		}
	}
	if n := canaryHits.Load(); n != 0 {
		t.Errorf("the proxy followed an absolute-form target to another server (%d hits)", n)
	}
	if reqs := box.Requests(); len(reqs) != 0 {
		t.Errorf("refused targets reached the stand-in: %+v", reqs)
	}
	if n := len(box.TokenRequests()); n != 1 {
		t.Errorf("%d token requests, want only the default subject's", n)
	}
}

func TestDownloadRedirectComesBackUnchangedAndIsNotFollowed(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	p := startProxy(t, box, ccgEnv(box)...)
	content := []byte("hello from the stand-in\n")
	id := box.AddFile("hello.txt", content)

	resp, body := p.Get(t, "/2.0/files/"+id+"/content")
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("GET /2.0/files/%s/content = %d %s, want 302", id, resp.StatusCode, body)
	}
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, box.DownloadURL()+"/d/1/") || !strings.HasSuffix(loc, "/download") || len(body) != 0 {
		t.Fatalf("302 Location %q body %q, want the stand-in's download URL and no body", loc, body)
	}
	if n := len(requestsTo(box, "download")); n != 0 {
		t.Fatalf("the proxy followed the redirect (%d download requests)", n)
	}
	// The client follows it itself, without any token.
	dl, err := http.Get(loc)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(dl.Body)
	dl.Body.Close()
	if dl.StatusCode != http.StatusOK || !bytes.Equal(got, content) {
		t.Fatalf("download = %d %q", dl.StatusCode, got)
	}

	// An odd Location and headers come back byte for byte.
	const odd = "https://dl.boxcloud.com/d/1/b1!Ab%2Fc%3D%3D/download?x=1&&y=%20#frag"
	h := http.Header{}
	h.Set("Location", odd)
	h.Set("Cache-Control", "private, max-age=900")
	box.Inject("/2.0/files/777/content", 1, fakebox.Injected{Status: http.StatusFound, Header: h})
	resp, _ = p.Get(t, "/2.0/files/777/content")
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != odd || resp.Header.Get("Cache-Control") != "private, max-age=900" {
		t.Fatalf("injected 302 came back as %d Location %q Cache-Control %q", resp.StatusCode, resp.Header.Get("Location"), resp.Header.Get("Cache-Control"))
	}
}

func TestLargeResponsesStreamBackIntact(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	p := startProxy(t, box, ccgEnv(box)...)
	const n = 8 << 20
	resp, err := p.Client.Get(p.URL + "/2.0/test/bytes?n=" + fmt.Sprint(n))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	hGot, hWant := sha1.New(), sha1.New()
	got, err := io.Copy(hGot, resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(hWant, fakebox.PatternReader(n))
	if resp.StatusCode != http.StatusOK || got != n || !bytes.Equal(hGot.Sum(nil), hWant.Sum(nil)) || resp.ContentLength != n {
		t.Fatalf("GET /2.0/test/bytes: %d, %d bytes (Content-Length %d), sha1 match %v", resp.StatusCode, got, resp.ContentLength, bytes.Equal(hGot.Sum(nil), hWant.Sum(nil)))
	}
}

// Box's answer reaches the client as it arrives: the proxy does not wait for
// the whole body (an upstream that pauses half-way would otherwise stall it).
func TestResponsesAreStreamedBackAsBoxSendsThem(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	release := make(chan struct{})
	first := bytes.Repeat([]byte("a"), 64<<10)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") || !isIssued(box, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")) {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(first)
		http.NewResponseController(w).Flush()
		select {
		case <-release:
		case <-time.After(20 * time.Second):
		}
		_, _ = w.Write([]byte("the end"))
	}))
	t.Cleanup(upstream.Close)
	p := startProxy(t, box, append(ccgEnv(box), "BOXPROXY_API_URL="+upstream.URL)...)

	resp, err := p.Client.Get(p.URL + "/2.0/files/1/content")
	if err != nil {
		close(release)
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got := make(chan error, 1)
	go func() {
		buf := make([]byte, len(first))
		_, err := io.ReadFull(resp.Body, buf)
		got <- err
	}()
	select {
	case err := <-got:
		close(release)
		if err != nil {
			t.Fatalf("reading the first 64 KiB: %v", err)
		}
	case <-time.After(10 * time.Second):
		close(release)
		t.Fatal("the first 64 KiB did not arrive while Box paused: the proxy buffers answers")
	}
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(rest) != "the end" {
		t.Fatalf("rest of the body %q, %v", rest, err)
	}
}

// --- 6. The client's credentials

func TestClientsAuthorizationAndAccessTokenQueryNeverReachBox(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	p := startProxy(t, box, ccgEnv(box)...)

	const leak = "CLIENTLEAK"
	reqs := []*http.Request{
		p.Request(t, http.MethodGet, "/2.0/test/echo/a?access_token="+leak+"1&x=1", nil, "Authorization", "Bearer "+leak+"2"),
		p.Request(t, http.MethodGet, "/2.0/test/echo/b?x=1&access_token="+leak+"3&access_token="+leak+"4", nil, "Authorization", "Basic "+leak+"5"),
		p.Request(t, http.MethodGet, "/2.0/test/echo/c?access%5Ftoken="+leak+"6&x=1", nil),
		p.Request(t, http.MethodPost, "/api/2.0/test/echo/d?x=1&access_token="+leak+"7", strings.NewReader(`{"a":1}`),
			"Authorization", "Bearer "+leak+"8", "Content-Type", "application/json"),
	}
	for _, req := range reqs {
		resp, body := p.Do(t, req)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s %s = %d %s", req.Method, req.URL.Path, resp.StatusCode, body)
		}
	}
	recs := box.Requests()
	if len(recs) != len(reqs) {
		t.Fatalf("the stand-in saw %d requests, want %d", len(recs), len(reqs))
	}
	for _, r := range recs {
		if r.RawQuery != "x=1" {
			t.Errorf("%s reached the stand-in with query %q, want x=1", r.Path, r.RawQuery)
		}
		auth := r.Header.Values("Authorization")
		if len(auth) != 1 || auth[0] != "Bearer "+r.Token || !isIssued(box, r.Token) {
			t.Errorf("%s carried Authorization %q, want the proxy's own issued token only", r.Path, auth)
		}
		if r.UserID != testServiceAccountID {
			t.Errorf("%s acted as %q, want the Service Account", r.Path, r.UserID)
		}
		dump, _ := json.Marshal(r)
		if bytes.Contains(dump, []byte(leak)) {
			t.Errorf("the client's credentials reached the stand-in: %s", dump)
		}
	}
}

// --- 7. Chunked uploads

func TestChunkedUploadPassesThroughTheProxyEndToEnd(t *testing.T) {
	t.Parallel()
	const partSize = 1 << 20
	box := startBox(t, func(c *fakebox.Config) { c.PartSize = partSize })
	p := startProxy(t, box, ccgEnv(box)...) // BOXPROXY_PUBLIC_URL = the proxy's real URL

	size := int64(2*partSize + 12345)
	content, err := io.ReadAll(io.LimitReader(fakebox.PatternReader(size+7), size))
	if err != nil {
		t.Fatal(err)
	}
	for i := range content { // not the stand-in's pattern: a file it keeps
		content[i] ^= byte(i / 7)
	}
	whole := sha1.Sum(content)

	session := createUploadSession(t, p, size, "big.bin")
	ep := session.Endpoints
	for name, u := range map[string]string{"upload_part": ep.UploadPart, "commit": ep.Commit, "abort": ep.Abort,
		"list_parts": ep.ListParts, "status": ep.Status, "log_event": ep.LogEvent} {
		if !strings.HasPrefix(u, p.URL+"/api/2.0/files/upload_sessions/") {
			t.Errorf("session_endpoints.%s = %q, want it under BOXPROXY_PUBLIC_URL %s", name, u, p.URL)
		}
	}
	if session.TotalParts != 3 || session.PartSize != partSize {
		t.Fatalf("session %+v, want 3 parts of %d", session, partSize)
	}

	var parts []json.RawMessage
	for off := int64(0); off < size; off += partSize {
		end := min(off+partSize, size)
		chunk := content[off:end]
		sum := sha1.Sum(chunk)
		req, _ := http.NewRequest(http.MethodPut, ep.UploadPart, bytes.NewReader(chunk))
		req.Header.Set("Content-Type", "application/octet-stream")
		req.Header.Set("Digest", "sha="+base64.StdEncoding.EncodeToString(sum[:]))
		req.Header.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", off, end-1, size))
		resp, body := p.Do(t, req)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("PUT part at %d = %d %s", off, resp.StatusCode, body)
		}
		var pr struct {
			Part json.RawMessage `json:"part"`
		}
		if err := json.Unmarshal(body, &pr); err != nil || pr.Part == nil {
			t.Fatalf("part answer %s", body)
		}
		parts = append(parts, pr.Part)
	}

	resp, body := p.Get(t, strings.TrimPrefix(ep.ListParts, p.URL))
	var list struct {
		Entries    []json.RawMessage `json:"entries"`
		TotalCount int               `json:"total_count"`
	}
	if err := json.Unmarshal(body, &list); resp.StatusCode != http.StatusOK || err != nil || list.TotalCount != 3 || len(list.Entries) != 3 {
		t.Fatalf("GET list_parts = %d %s", resp.StatusCode, body)
	}

	commitBody, _ := json.Marshal(map[string]any{"parts": parts, "attributes": map[string]any{"name": "big.bin"}})
	req, _ := http.NewRequest(http.MethodPost, ep.Commit, bytes.NewReader(commitBody))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Digest", "sha="+base64.StdEncoding.EncodeToString(whole[:]))
	resp, body = p.Do(t, req)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST commit = %d %s", resp.StatusCode, body)
	}
	var files struct {
		Entries []struct {
			ID, Name, SHA1 string
			Size           int64
		} `json:"entries"`
	}
	if err := json.Unmarshal(body, &files); err != nil || len(files.Entries) != 1 {
		t.Fatalf("commit answer %s", body)
	}
	f := files.Entries[0]
	if f.SHA1 != hex.EncodeToString(whole[:]) || f.Size != size || f.Name != "big.bin" {
		t.Fatalf("committed file %+v, want sha1 %x and %d bytes", f, whole, size)
	}
	if got, ok := box.FileContent(f.ID); !ok || !bytes.Equal(got, content) {
		t.Fatalf("the stand-in holds different content")
	}

	// Abort a second session through the proxy.
	s2 := createUploadSession(t, p, size, "aborted.bin")
	resp, body = p.Do(t, p.Request(t, http.MethodDelete, strings.TrimPrefix(s2.Endpoints.Abort, p.URL), nil))
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE abort = %d %s", resp.StatusCode, body)
	}
	if resp, body = p.Get(t, strings.TrimPrefix(s2.Endpoints.Status, p.URL)); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET status after abort = %d %s, want 404", resp.StatusCode, body)
	}

	// Every call went to the upload host, with the proxy's token.
	for _, r := range box.Requests() {
		if r.Host != "upload" || !isIssued(box, r.Token) || r.UserID != testServiceAccountID {
			t.Errorf("%s %s went to %s as %q with an issued token %v", r.Method, r.Path, r.Host, r.UserID, isIssued(box, r.Token))
		}
	}
	if n := len(box.Requests()); n != 1+3+1+1+1+1+1 {
		t.Errorf("the stand-in saw %d requests, want 9", n)
	}
}

// Box compresses its JSON answers for clients that accept gzip (most SDKs
// send Accept-Encoding: gzip). The session URLs must be rewritten all the same.
func TestUploadSessionURLsAreRewrittenWhenTheClientAcceptsGzip(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	front := gzipFront(t, box.UploadURL())
	p := startProxy(t, box, append(ccgEnv(box), "BOXPROXY_UPLOAD_URL="+front)...)

	for _, enc := range []string{"gzip", "gzip, deflate, br"} {
		req := p.Request(t, http.MethodPost, "/api/2.0/files/upload_sessions",
			strings.NewReader(`{"folder_id":"0","file_size":20000000,"file_name":"gz.bin"}`),
			"Content-Type", "application/json", "Accept-Encoding", enc)
		resp, body := p.Do(t, req)
		if resp.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			if body, err = io.ReadAll(zr); err != nil {
				t.Fatal(err)
			}
		}
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("Accept-Encoding %q: POST upload_sessions = %d %q", enc, resp.StatusCode, body)
		}
		var s uploadSession
		if err := json.Unmarshal(body, &s); err != nil {
			t.Fatalf("Accept-Encoding %q: session answer %q: %v", enc, body, err)
		}
		if !strings.HasPrefix(s.Endpoints.UploadPart, p.URL+"/api/2.0/files/upload_sessions/") ||
			!strings.HasPrefix(s.Endpoints.Commit, p.URL+"/api/2.0/files/upload_sessions/") {
			t.Errorf("Accept-Encoding %q: session_endpoints %+v not rewritten to BOXPROXY_PUBLIC_URL %s", enc, s.Endpoints, p.URL)
		}
	}
}

// gzipFront is an upload host that behaves like Box: it forwards to target
// and gzips JSON answers when the request accepts gzip.
func gzipFront(t *testing.T, target string) string {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(u); pr.Out.Host = "" },
		Transport: &http.Transport{DisableCompression: true, TLSClientConfig: testTLS.Clone()},
		ModifyResponse: func(resp *http.Response) error {
			if !strings.Contains(resp.Request.Header.Get("Accept-Encoding"), "gzip") ||
				!strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") || resp.Header.Get("Content-Encoding") != "" {
				return nil
			}
			var buf bytes.Buffer
			zw := gzip.NewWriter(&buf)
			if _, err := io.Copy(zw, resp.Body); err != nil {
				return err
			}
			_ = resp.Body.Close()
			if err := zw.Close(); err != nil {
				return err
			}
			resp.Body = io.NopCloser(&buf)
			resp.ContentLength = int64(buf.Len())
			resp.Header.Set("Content-Length", fmt.Sprint(buf.Len()))
			resp.Header.Set("Content-Encoding", "gzip")
			resp.Header.Add("Vary", "Accept-Encoding")
			return nil
		},
	}
	srv := httptest.NewServer(rp)
	t.Cleanup(srv.Close)
	return srv.URL
}

type uploadSession struct {
	ID         string `json:"id"`
	PartSize   int64  `json:"part_size"`
	TotalParts int    `json:"total_parts"`
	Endpoints  struct {
		UploadPart string `json:"upload_part"`
		Commit     string `json:"commit"`
		Abort      string `json:"abort"`
		ListParts  string `json:"list_parts"`
		Status     string `json:"status"`
		LogEvent   string `json:"log_event"`
	} `json:"session_endpoints"`
}

func createUploadSession(t *testing.T, p *testProxy, size int64, name string) uploadSession {
	t.Helper()
	reqBody := fmt.Sprintf(`{"folder_id":"0","file_size":%d,"file_name":%q}`, size, name)
	resp, body := p.Do(t, p.Request(t, http.MethodPost, "/api/2.0/files/upload_sessions", strings.NewReader(reqBody),
		"Content-Type", "application/json"))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /api/2.0/files/upload_sessions = %d %s", resp.StatusCode, body)
	}
	var s uploadSession
	if err := json.Unmarshal(body, &s); err != nil {
		t.Fatalf("session answer %s: %v", body, err)
	}
	if cl := resp.Header.Get("Content-Length"); cl != fmt.Sprint(len(body)) {
		t.Errorf("rewritten session answer has Content-Length %q for %d bytes", cl, len(body))
	}
	return s
}

// --- 8. 202 and 429 pass through

func TestBoxs202And429WithRetryAfterReachTheClientUnchanged(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	p := startProxy(t, box, ccgEnv(box)...)

	rateLimited := `{"type":"error","status":429,"code":"rate_limit_exceeded","help_url":"http://developers.box.com/docs/#errors","message":"Request rate limit exceeded, please try again later","request_id":"abc123"}`
	cases := []struct {
		method, path string
		status       int
		retryAfter   string
		body         string
	}{
		{http.MethodGet, "/2.0/files/42/content", http.StatusAccepted, "7", ""},
		{http.MethodGet, "/2.0/users/me", http.StatusTooManyRequests, "3", rateLimited},
		{http.MethodGet, "/2.0/folders/0/items", http.StatusTooManyRequests, "1", rateLimited},
		{http.MethodPost, "/api/2.0/files/upload_sessions/ABC/commit", http.StatusAccepted, "2", ""},
		{http.MethodPut, "/api/2.0/files/upload_sessions/ABC", http.StatusTooManyRequests, "5", rateLimited},
	}
	for _, tc := range cases {
		h := http.Header{}
		h.Set("Retry-After", tc.retryAfter)
		h.Set("Box-Request-Id", "req-"+tc.retryAfter)
		box.Inject(tc.path, 1, fakebox.Injected{Status: tc.status, Header: h, Body: tc.body})
		resp, body := p.Do(t, p.Request(t, tc.method, tc.path, strings.NewReader("{}"), "Content-Type", "application/json"))
		if resp.StatusCode != tc.status || resp.Header.Get("Retry-After") != tc.retryAfter || string(body) != tc.body ||
			resp.Header.Get("Box-Request-Id") != "req-"+tc.retryAfter {
			t.Errorf("%s %s: got %d Retry-After %q body %q, want %d Retry-After %q body %q unchanged",
				tc.method, tc.path, resp.StatusCode, resp.Header.Get("Retry-After"), body, tc.status, tc.retryAfter, tc.body)
		}
	}
	if n := len(box.Requests()); n != len(cases) {
		t.Errorf("the stand-in saw %d requests, want %d (no retries by default)", n, len(cases))
	}
}

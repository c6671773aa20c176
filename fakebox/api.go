package fakebox

import (
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"hash"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

const (
	helpURL         = "https://developer.box.com/guides/api-calls/permissions-and-errors/common-errors/"
	wwwAuthenticate = `Bearer realm="Service", error="invalid_token", error_description="The access token provided is invalid."`
)

// boxError is the body of Box's API errors.
type boxError struct {
	Type      string `json:"type"`
	Status    int    `json:"status"`
	Code      string `json:"code"`
	HelpURL   string `json:"help_url"`
	Message   string `json:"message"`
	RequestID string `json:"request_id"`
}

func writeBoxError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("BOX-REQUEST-ID", randHex(16))
	writeJSON(w, status, boxError{Type: "error", Status: status, Code: code, HelpURL: helpURL, Message: msg, RequestID: randHex(8)})
}

func writeNotFound(w http.ResponseWriter) {
	writeBoxError(w, http.StatusNotFound, "not_found", "Not Found")
}

func writeMethodNotAllowed(w http.ResponseWriter) {
	writeBoxError(w, http.StatusMethodNotAllowed, "method_not_allowed", "Method Not Allowed")
}

func writeBadRequest(w http.ResponseWriter, msg string) {
	writeBoxError(w, http.StatusBadRequest, "bad_request", msg)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status, body = http.StatusInternalServerError, []byte(`{"type":"error","status":500,"code":"internal_server_error"}`)
	}
	body = append(body, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func writeRaw(w http.ResponseWriter, status int, contentType, body string) {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

// hijackClose drops the connection without an answer. It reports whether
// the connection could be hijacked.
func hijackClose(w http.ResponseWriter) bool {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		// Not hijackable (HTTP/2): abort the response instead.
		return false
	}
	_ = conn.Close()
	return true
}

const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

func randAlnum(n int) string {
	out := make([]byte, 0, n)
	buf := make([]byte, n+n/2)
	for len(out) < n {
		_, _ = rand.Read(buf)
		for _, c := range buf {
			if c < 248 { // 248 = 4*62: no modulo bias
				out = append(out, alnum[int(c)%62])
				if len(out) == n {
					break
				}
			}
		}
	}
	return string(out)
}

func randHex(n int) string {
	buf := make([]byte, n)
	_, _ = rand.Read(buf)
	return hex.EncodeToString(buf)
}

func sha1Hex(p []byte) string {
	s := sha1.Sum(p)
	return hex.EncodeToString(s[:])
}

// recorder captures the status written.
type recorder struct {
	http.ResponseWriter
	status   int
	hijacked bool
}

func (w *recorder) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recorder) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *recorder) Flush() { _ = http.NewResponseController(w.ResponseWriter).Flush() }

// bodyTap hashes and counts the request body as it is read.
type bodyTap struct {
	rc io.ReadCloser
	h  hash.Hash
	n  int64
}

func (t *bodyTap) Read(p []byte) (int, error) {
	n, err := t.rc.Read(p)
	t.h.Write(p[:n])
	t.n += int64(n)
	return n, err
}

func (t *bodyTap) Close() error { return t.rc.Close() }

// call is what a route handler knows about an authenticated request.
type call struct {
	host   string
	token  accessToken
	user   string // acting user (after As-User)
	asUser string // As-User header value, if any
	tap    *bodyTap
}

// record appends a Request for r and wraps r.Body in a bodyTap. finish
// reads the rest of the body and completes the record.
func (b *Box) record(host string, r *http.Request) (finish func(w *recorder, user string)) {
	tap := &bodyTap{rc: r.Body, h: sha1.New()}
	r.Body = tap
	rec := Request{Host: host, Method: r.Method, Proto: r.Proto, Path: r.URL.EscapedPath(), RawQuery: r.URL.RawQuery,
		Header: r.Header.Clone(), Token: bearerToken(r)}
	b.mu.Lock()
	idx, gen := len(b.reqs), b.recGen
	if b.canRecordLocked(idx) {
		b.reqs = append(b.reqs, rec)
	} else {
		idx = -1
	}
	b.mu.Unlock()
	return func(w *recorder, user string) {
		// Read the rest so that BodyLen and BodySHA1 describe the whole body,
		// but, as a real server, not after refusing the token before the
		// body: a client that holds its body back until 100 Continue (Go's
		// HTTP/2 server hides that Expect from handlers) must get the 401
		// without sending it, and may send the request again.
		refusedEarly := tap.n == 0 && w.status == http.StatusUnauthorized
		if !w.hijacked && !refusedEarly {
			_, _ = io.Copy(io.Discard, tap)
		}
		// Give net/http its own body back: it looks at the body's type to
		// tell a client waiting for 100 Continue (close, read nothing more)
		// from one that sent its body (read the rest).
		r.Body = tap.rc
		b.mu.Lock()
		defer b.mu.Unlock()
		if idx >= 0 && gen == b.recGen && idx < len(b.reqs) {
			r := &b.reqs[idx]
			r.BodyLen, r.BodySHA1 = tap.n, hex.EncodeToString(tap.h.Sum(nil))
			r.UserID, r.Status = user, w.status
		}
	}
}

type route func(w *recorder, r *http.Request, c *call)

// boxHost serves one of Box's authenticated hosts: it records the request,
// checks the access token and As-User, applies injections and routes.
func (b *Box) boxHost(host, prefix string, rt route) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w := &recorder{ResponseWriter: rw}
		c := &call{host: host}
		finish := b.record(host, r)
		c.tap = r.Body.(*bodyTap)
		defer func() { finish(w, c.user) }()

		if !strings.HasPrefix(r.URL.Path, prefix) {
			writeNotFound(w)
			return
		}
		if b.cfg.ReadBodyBeforeAuth {
			_, _ = io.Copy(io.Discard, c.tap)
		}
		tok, ok := b.lookupToken(bearerToken(r))
		if !ok {
			w.Header().Set("WWW-Authenticate", wwwAuthenticate)
			w.Header().Set("BOX-REQUEST-ID", randHex(16))
			w.Header().Set("Content-Length", "0")
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		c.token, c.user = tok, tok.userID
		if in, ok := b.takeInjection(r.URL.Path, r.URL.EscapedPath()); ok {
			b.serveInjected(w, in)
			return
		}
		if vals, present := r.Header["As-User"]; present && len(vals) > 0 && vals[0] != "" {
			target := strings.TrimSpace(vals[0])
			c.asUser = target
			b.mu.Lock()
			caller, callerKnown := b.users[tok.userID]
			_, targetKnown := b.users[target]
			b.mu.Unlock()
			if tok.userID != b.cfg.ServiceAccountID && !(callerKnown && caller.Admin) {
				writeBoxError(w, http.StatusForbidden, "access_denied_insufficient_permissions", "Access denied - insufficient permission")
				return
			}
			if !targetKnown {
				writeBoxError(w, http.StatusNotFound, "not_found", "The user named in the As-User header was not found")
				return
			}
			c.user = target
		}
		rt(w, r, c)
	})
}

func (b *Box) serveInjected(w *recorder, in Injected) {
	if in.Reset {
		if hijackClose(w) {
			w.hijacked = true
			return
		}
		panic(http.ErrAbortHandler)
	}
	for k, v := range in.Header {
		w.Header()[k] = append([]string(nil), v...)
	}
	if in.Body != "" && w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "application/json")
	}
	if w.Header().Get("BOX-REQUEST-ID") == "" {
		w.Header().Set("BOX-REQUEST-ID", randHex(16))
	}
	status := in.Status
	if status == 0 {
		status = http.StatusOK
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(in.Body)))
	w.WriteHeader(status)
	_, _ = io.WriteString(w, in.Body)
}

// bearerToken returns the token of an Authorization: Bearer header, or
// else of an access_token query parameter (which Box also accepts).
func bearerToken(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
			return strings.TrimSpace(h[7:])
		}
		return ""
	}
	return r.URL.Query().Get("access_token")
}

func (b *Box) userJSON(id string) (map[string]any, bool) {
	if id == b.cfg.ServiceAccountID {
		sa := b.ServiceAccount()
		return map[string]any{"type": "user", "id": sa.ID, "name": sa.Name, "login": sa.Login}, true
	}
	b.mu.Lock()
	u, ok := b.users[id]
	b.mu.Unlock()
	if !ok {
		return nil, false
	}
	return map[string]any{"type": "user", "id": u.ID, "name": u.Name, "login": u.Login}, true
}

// routeAPI serves the api.box.com paths under /2.0/.
func (b *Box) routeAPI(w *recorder, r *http.Request, c *call) {
	rest := strings.TrimPrefix(r.URL.Path, "/2.0")
	seg := strings.Split(strings.TrimPrefix(rest, "/"), "/")
	get := r.Method == http.MethodGet || r.Method == http.MethodHead
	switch {
	case seg[0] == "test" && len(seg) >= 2 && seg[1] == "echo":
		b.serveEcho(w, r, c)
	case rest == "/test/bytes":
		serveBytes(w, r)
	case rest == "/test/slow":
		b.serveSlow(w, r)
	case len(seg) == 2 && seg[0] == "users" && (seg[1] == "me" || isDigits(seg[1])):
		if !get {
			writeMethodNotAllowed(w)
			return
		}
		id := seg[1]
		if id == "me" {
			id = c.user
		}
		u, ok := b.userJSON(id)
		if !ok {
			writeNotFound(w)
			return
		}
		writeJSON(w, http.StatusOK, u)
	case len(seg) == 2 && seg[0] == "files" && isDigits(seg[1]):
		if !get {
			writeMethodNotAllowed(w)
			return
		}
		b.mu.Lock()
		f, ok := b.files[seg[1]]
		var v map[string]any
		if ok {
			v = f.json()
		}
		b.mu.Unlock()
		if !ok {
			writeNotFound(w)
			return
		}
		writeJSON(w, http.StatusOK, v)
	case len(seg) == 3 && seg[0] == "files" && isDigits(seg[1]) && seg[2] == "content":
		if !get {
			writeMethodNotAllowed(w)
			return
		}
		b.serveContentRedirect(w, r, seg[1])
	case (len(seg) == 2 || len(seg) == 3 && seg[2] == "items") && seg[0] == "folders" && isDigits(seg[1]):
		if !get {
			writeMethodNotAllowed(w)
			return
		}
		b.serveFolder(w, seg[1], len(seg) == 3)
	default:
		writeNotFound(w)
	}
}

func (b *Box) serveEcho(w *recorder, r *http.Request, c *call) {
	_, _ = io.Copy(io.Discard, c.tap)
	writeJSON(w, http.StatusOK, map[string]any{
		"method":            r.Method,
		"path":              r.URL.EscapedPath(),
		"raw_query":         r.URL.RawQuery,
		"host":              r.Host,
		"as_user":           c.asUser,
		"user_id":           c.user,
		"headers":           r.Header,
		"content_length":    r.ContentLength,
		"transfer_encoding": r.TransferEncoding,
		"body_len":          c.tap.n,
		"body_sha1":         hex.EncodeToString(c.tap.h.Sum(nil)),
	})
}

func serveBytes(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
	if err != nil || n < 0 {
		writeBadRequest(w, "n must be a non-negative integer")
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	buf := make([]byte, 32<<10)
	ctx := r.Context()
	for off := int64(0); off < n; {
		if ctx.Err() != nil {
			return
		}
		chunk := buf[:min(int64(len(buf)), n-off)]
		fillPattern(off, chunk)
		m, err := w.Write(chunk)
		off += int64(m)
		if err != nil {
			return
		}
	}
}

func (b *Box) serveSlow(w http.ResponseWriter, r *http.Request) {
	ms, err := strconv.ParseInt(r.URL.Query().Get("ms"), 10, 64)
	if err != nil || ms < 0 || ms > 24*3600*1000 {
		writeBadRequest(w, "ms must be a non-negative integer")
		return
	}
	t := time.NewTimer(time.Duration(ms) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
		return
	case <-b.closing:
		return
	}
	writeJSON(w, http.StatusOK, map[string]int64{"slept_ms": ms})
}

func (b *Box) serveFolder(w http.ResponseWriter, id string, items bool) {
	b.mu.Lock()
	entries := []map[string]any{}
	for _, f := range b.files {
		if f.parent == id {
			entries = append(entries, f.mini())
		}
	}
	b.mu.Unlock()
	sortEntries(entries)
	list := map[string]any{"total_count": len(entries), "entries": entries, "offset": 0, "limit": 100,
		"order": []map[string]string{{"by": "type", "direction": "ASC"}, {"by": "name", "direction": "ASC"}}}
	if items {
		writeJSON(w, http.StatusOK, list)
		return
	}
	name := "Folder " + id
	if id == "0" {
		name = "All Files"
	}
	writeJSON(w, http.StatusOK, map[string]any{"type": "folder", "id": id, "name": name, "item_collection": list})
}

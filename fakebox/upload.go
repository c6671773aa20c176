package fakebox

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"mime"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The deterministic byte pattern served by /2.0/test/bytes: byte i of a
// stream is byte(i % 251). Uploads that consist of it are remembered as
// such, so that large ones can be downloaded again without being kept.
const patternPeriod = 251

// patBuf is the pattern's first 64 KiB and a period, made on first use:
// boxproxy links the stand-in for demo, and every other process would
// otherwise hold it too.
var patBuf = sync.OnceValue(func() []byte {
	p := make([]byte, 64<<10+patternPeriod)
	for i := range p {
		p[i] = byte(i % patternPeriod)
	}
	return p
})

func fillPattern(off int64, p []byte) {
	for len(p) > 0 {
		s := int(off % patternPeriod)
		n := copy(p, patBuf()[s:s+min(len(p), 64<<10)])
		p = p[n:]
		off += int64(n)
	}
}

func matchesPattern(off int64, p []byte) bool {
	for len(p) > 0 {
		s := int(off % patternPeriod)
		n := min(len(p), 64<<10)
		if !bytes.Equal(p[:n], patBuf()[s:s+n]) {
			return false
		}
		p = p[n:]
		off += int64(n)
	}
	return true
}

// PatternReader returns the first n bytes of the pattern that
// /2.0/test/bytes serves (byte i is byte(i % 251)), without holding them
// in memory. Upload it to get files of any size that can be downloaded.
func PatternReader(n int64) io.ReadSeeker { return &patternReader{size: n} }

type patternReader struct{ off, size int64 }

func (p *patternReader) Read(b []byte) (int, error) {
	if p.off >= p.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(b)), p.size-p.off))
	fillPattern(p.off, b[:n])
	p.off += int64(n)
	return n, nil
}

func (p *patternReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += p.off
	case io.SeekEnd:
		offset += p.size
	default:
		return 0, errors.New("fakebox: bad whence")
	}
	if offset < 0 {
		return 0, errors.New("fakebox: negative position")
	}
	p.off = offset
	return offset, nil
}

// contentSink hashes and counts content, keeps it while it is at most
// MaxRetained bytes, and notes whether it is the pattern.
type contentSink struct {
	h       hash.Hash
	n       int64
	buf     []byte
	keep    bool
	pattern bool
}

func newSink() *contentSink { return &contentSink{h: sha1.New(), keep: true, pattern: true} }

func (s *contentSink) Write(p []byte) (int, error) {
	s.h.Write(p)
	if s.pattern && !matchesPattern(s.n, p) {
		s.pattern = false
	}
	if s.keep {
		need := len(s.buf) + len(p)
		if need > MaxRetained {
			s.keep, s.buf = false, nil
		} else {
			if need > cap(s.buf) {
				nb := make([]byte, len(s.buf), min(max(2*cap(s.buf), need, 64<<10), MaxRetained))
				copy(nb, s.buf)
				s.buf = nb
			}
			s.buf = append(s.buf, p...)
		}
	}
	s.n += int64(len(p))
	return len(p), nil
}

func (s *contentSink) sum() string { return hex.EncodeToString(s.h.Sum(nil)) }

// store puts the sink's content into f. Use Box.setContentLocked.
func (s *contentSink) store(f *file, now time.Time) {
	f.size, f.sha1 = s.n, s.sum()
	f.data, f.pattern = nil, false
	switch {
	case s.keep:
		f.data = s.buf
		if f.data == nil {
			f.data = []byte{}
		}
	case s.pattern:
		f.pattern = true
	}
	f.retained = s.keep || s.pattern
	f.modified = now
	f.etag++
}

func (f *file) mini() map[string]any {
	return map[string]any{"type": "file", "id": f.id, "etag": strconv.Itoa(f.etag), "sequence_id": strconv.Itoa(f.etag),
		"name": f.name, "sha1": f.sha1}
}

func (f *file) json() map[string]any {
	m := f.mini()
	m["size"] = f.size
	m["parent"] = map[string]any{"type": "folder", "id": f.parent}
	m["owned_by"] = map[string]any{"type": "user", "id": f.owner}
	m["created_at"] = f.created.Format(time.RFC3339)
	m["modified_at"] = f.modified.Format(time.RFC3339)
	m["file_version"] = map[string]any{"type": "file_version", "id": f.id + strconv.Itoa(f.etag), "sha1": f.sha1}
	return m
}

func sortEntries(entries []map[string]any) {
	slices.SortFunc(entries, func(x, y map[string]any) int {
		a, b := x["id"].(string), y["id"].(string)
		if len(a) != len(b) {
			return len(a) - len(b)
		}
		return strings.Compare(a, b)
	})
}

func writeFiles(w http.ResponseWriter, f map[string]any) {
	writeJSON(w, http.StatusCreated, map[string]any{"total_count": 1, "entries": []any{f}})
}

// routeUpload serves the upload.box.com paths under /api/2.0/.
func (b *Box) routeUpload(w *recorder, r *http.Request, c *call) {
	rest := strings.TrimPrefix(r.URL.Path, "/api/2.0")
	seg := strings.Split(strings.TrimPrefix(rest, "/"), "/")
	post := r.Method == http.MethodPost
	switch {
	case seg[0] == "test" && len(seg) >= 2 && seg[1] == "echo":
		b.serveEcho(w, r, c)
	case len(seg) < 2 || seg[0] != "files":
		writeNotFound(w)
	case len(seg) == 2 && seg[1] == "content":
		if !post {
			writeMethodNotAllowed(w)
			return
		}
		b.serveUpload(w, r, c, "")
	case len(seg) == 2 && seg[1] == "upload_sessions":
		if !post {
			writeMethodNotAllowed(w)
			return
		}
		b.serveCreateSession(w, r, c, "")
	case len(seg) == 3 && isDigits(seg[1]) && seg[2] == "content":
		if !post {
			writeMethodNotAllowed(w)
			return
		}
		b.serveUpload(w, r, c, seg[1])
	case len(seg) == 3 && isDigits(seg[1]) && seg[2] == "upload_sessions":
		if !post {
			writeMethodNotAllowed(w)
			return
		}
		b.serveCreateSession(w, r, c, seg[1])
	case len(seg) >= 3 && len(seg) <= 4 && seg[1] == "upload_sessions":
		b.routeSession(w, r, c, seg[2], seg[3:])
	default:
		writeNotFound(w)
	}
}

type uploadAttributes struct {
	Name   string `json:"name"`
	Parent *struct {
		ID string `json:"id"`
	} `json:"parent"`
	ContentCreatedAt  string `json:"content_created_at"`
	ContentModifiedAt string `json:"content_modified_at"`
}

// serveUpload handles a direct multipart upload: a new file (fileID "")
// or a new version of fileID.
func (b *Box) serveUpload(w http.ResponseWriter, r *http.Request, c *call, fileID string) {
	if fileID != "" && !b.fileExists(fileID) {
		writeNotFound(w)
		return
	}
	mr, err := r.MultipartReader()
	if err != nil {
		writeBadRequest(w, "The request body must be multipart/form-data")
		return
	}
	var attrs uploadAttributes
	gotAttrs := false
	var sink *contentSink
	for sink == nil {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			writeBadRequest(w, "Malformed multipart body")
			return
		}
		switch part.FormName() {
		case "attributes":
			raw, err := io.ReadAll(io.LimitReader(part, 1<<20))
			if err != nil {
				writeBadRequest(w, "Malformed multipart body")
				return
			}
			if err := json.Unmarshal(raw, &attrs); err != nil {
				writeBadRequest(w, "The attributes part is not valid JSON")
				return
			}
			gotAttrs = true
		case "file":
			if !gotAttrs && fileID == "" {
				writeBadRequest(w, "The attributes part must come before the file part")
				return
			}
			sink = newSink()
			if _, err := io.Copy(sink, part); err != nil {
				if r.Context().Err() == nil {
					writeBadRequest(w, "Malformed multipart body")
				}
				return
			}
		default:
			if _, err := io.Copy(io.Discard, part); err != nil {
				writeBadRequest(w, "Malformed multipart body")
				return
			}
		}
	}
	if sink == nil {
		writeBadRequest(w, "The file part is missing")
		return
	}
	if fileID == "" {
		if !gotAttrs || attrs.Name == "" {
			writeBoxError(w, http.StatusBadRequest, "item_name_invalid", "Item name invalid")
			return
		}
		if attrs.Parent == nil || !isDigits(attrs.Parent.ID) {
			writeBadRequest(w, "attributes.parent.id is required")
			return
		}
	}
	if want := r.Header.Get("Content-MD5"); want != "" && !strings.EqualFold(want, sink.sum()) {
		writeBoxError(w, http.StatusPreconditionFailed, "sha1_mismatch", "The Content-MD5 header does not match the SHA-1 of the file")
		return
	}
	b.mu.Lock()
	var f *file
	if fileID == "" {
		f = b.newFileLocked(attrs.Name, attrs.Parent.ID, c.user)
	} else if f = b.files[fileID]; f == nil {
		b.mu.Unlock()
		writeNotFound(w)
		return
	} else if attrs.Name != "" {
		f.name = attrs.Name
	}
	b.setContentLocked(f, sink)
	v := f.json()
	b.mu.Unlock()
	b.logf("upload: file %s, %d bytes", f.id, sink.n)
	writeFiles(w, v)
}

func (b *Box) fileExists(id string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, ok := b.files[id]
	return ok
}

// --- chunked upload sessions ---

type uploadPart struct {
	PartID string `json:"part_id"`
	Offset int64  `json:"offset"`
	Size   int64  `json:"size"`
	SHA1   string `json:"sha1"`
}

type session struct {
	id, owner, folderID, fileName, fileID string
	fileSize, partSize                    int64
	totalParts                            int
	expires                               time.Time

	mu    sync.Mutex
	f     *os.File
	parts map[int64]uploadPart
	done  bool
}

func (s *session) discard() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.done = true
	if s.f != nil {
		_ = s.f.Close()
		_ = os.Remove(s.f.Name())
		s.f = nil
	}
}

// file returns the session's spool file, creating it when needed.
func (s *session) file() (*os.File, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return nil, errors.New("session closed")
	}
	if s.f == nil {
		f, err := os.CreateTemp("", "fakebox-session-*")
		if err != nil {
			return nil, err
		}
		s.f = f
	}
	return s.f, nil
}

func (b *Box) sessionJSON(s *session) map[string]any {
	base := b.upURL + "/api/2.0/files/upload_sessions/" + s.id
	s.mu.Lock()
	n := len(s.parts)
	s.mu.Unlock()
	return map[string]any{
		"type":                "upload_session",
		"id":                  s.id,
		"session_expires_at":  s.expires.Format(time.RFC3339),
		"part_size":           s.partSize,
		"total_parts":         s.totalParts,
		"num_parts_processed": n,
		"session_endpoints": map[string]string{
			"upload_part": base,
			"commit":      base + "/commit",
			"abort":       base,
			"list_parts":  base + "/parts",
			"status":      base,
			"log_event":   base + "/log",
		},
	}
}

func (b *Box) serveCreateSession(w http.ResponseWriter, r *http.Request, c *call, fileID string) {
	var req struct {
		FolderID *string `json:"folder_id"`
		FileSize *int64  `json:"file_size"`
		FileName *string `json:"file_name"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		writeBadRequest(w, "The request body is not valid JSON")
		return
	}
	if req.FileSize == nil || *req.FileSize <= 0 {
		writeBadRequest(w, "file_size is required and must be positive")
		return
	}
	s := &session{id: strings.ToUpper(randHex(16)), owner: c.user, fileSize: *req.FileSize,
		partSize: b.cfg.PartSize, parts: map[int64]uploadPart{}, fileID: fileID}
	if req.FileName != nil {
		s.fileName = *req.FileName
	}
	if fileID == "" {
		if req.FolderID == nil || !isDigits(*req.FolderID) {
			writeBadRequest(w, "folder_id is required")
			return
		}
		if s.fileName == "" {
			writeBoxError(w, http.StatusBadRequest, "item_name_invalid", "Item name invalid")
			return
		}
		s.folderID = *req.FolderID
	} else if !b.fileExists(fileID) {
		writeNotFound(w)
		return
	}
	s.totalParts = int((s.fileSize + s.partSize - 1) / s.partSize)
	b.mu.Lock()
	s.expires = time.Now().Add(b.skew).Add(sessionTTL)
	b.sessions[s.id] = s
	b.mu.Unlock()
	b.logf("upload session %s created: %d bytes in %d parts", s.id, s.fileSize, s.totalParts)
	writeJSON(w, http.StatusCreated, b.sessionJSON(s))
}

func (b *Box) routeSession(w http.ResponseWriter, r *http.Request, c *call, sid string, tail []string) {
	b.mu.Lock()
	s, ok := b.sessions[sid]
	expired := ok && !time.Now().Add(b.skew).Before(s.expires)
	b.mu.Unlock()
	if !ok || expired || s.owner != c.user {
		writeNotFound(w)
		return
	}
	switch {
	case len(tail) == 0:
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			writeJSON(w, http.StatusOK, b.sessionJSON(s))
		case http.MethodPut:
			b.servePart(w, r, s)
		case http.MethodDelete:
			b.mu.Lock()
			delete(b.sessions, s.id)
			b.mu.Unlock()
			s.discard()
			w.WriteHeader(http.StatusNoContent)
		default:
			writeMethodNotAllowed(w)
		}
	case tail[0] == "parts":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			writeMethodNotAllowed(w)
			return
		}
		parts := s.sortedParts()
		writeJSON(w, http.StatusOK, map[string]any{"entries": parts, "total_count": len(parts), "offset": 0, "limit": 1000})
	case tail[0] == "commit":
		if r.Method != http.MethodPost {
			writeMethodNotAllowed(w)
			return
		}
		b.serveCommit(w, r, c, s)
	default:
		writeNotFound(w)
	}
}

func (s *session) sortedParts() []uploadPart {
	s.mu.Lock()
	defer s.mu.Unlock()
	parts := make([]uploadPart, 0, len(s.parts))
	for _, p := range s.parts {
		parts = append(parts, p)
	}
	slices.SortFunc(parts, func(x, y uploadPart) int { return int(x.Offset - y.Offset) })
	return parts
}

// parseDigest reads a "sha=<base64 SHA-1>" Digest header.
func parseDigest(h string) ([]byte, bool) {
	for _, item := range strings.Split(h, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok || !strings.EqualFold(k, "sha") {
			continue
		}
		sum, err := base64.StdEncoding.DecodeString(strings.TrimSpace(v))
		if err != nil || len(sum) != sha1.Size {
			return nil, false
		}
		return sum, true
	}
	return nil, false
}

// parseContentRange reads "bytes a-b/total".
func parseContentRange(h string) (first, last, total int64, ok bool) {
	rest, found := strings.CutPrefix(strings.TrimSpace(h), "bytes ")
	if !found {
		return 0, 0, 0, false
	}
	rng, tot, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, 0, false
	}
	a, z, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, 0, false
	}
	var err1, err2, err3 error
	first, err1 = strconv.ParseInt(a, 10, 64)
	last, err2 = strconv.ParseInt(z, 10, 64)
	total, err3 = strconv.ParseInt(tot, 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || first < 0 || last < first || total <= last {
		return 0, 0, 0, false
	}
	return first, last, total, true
}

func (b *Box) servePart(w http.ResponseWriter, r *http.Request, s *session) {
	want, ok := parseDigest(r.Header.Get("Digest"))
	if !ok {
		writeBadRequest(w, "The Digest header must be sha=<base64 SHA-1 of the part>")
		return
	}
	first, last, total, ok := parseContentRange(r.Header.Get("Content-Range"))
	if !ok {
		writeBadRequest(w, "The Content-Range header must be bytes <first>-<last>/<total>")
		return
	}
	size := last - first + 1
	if total != s.fileSize || first%s.partSize != 0 || size > s.partSize || size != s.partSize && last != total-1 {
		writeBoxError(w, http.StatusRequestedRangeNotSatisfiable, "requested_range_not_satisfiable",
			"The Content-Range does not match a part of this upload session")
		return
	}
	f, err := s.file()
	if err != nil {
		writeNotFound(w)
		return
	}
	h := sha1.New()
	n, err := io.Copy(io.MultiWriter(io.NewOffsetWriter(f, first), h), io.LimitReader(r.Body, size+1))
	if err != nil {
		if r.Context().Err() == nil {
			writeBadRequest(w, "Could not read the part")
		}
		return
	}
	if n != size {
		writeBadRequest(w, fmt.Sprintf("The part has %d bytes but Content-Range says %d", n, size))
		return
	}
	got := h.Sum(nil)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		writeNotFound(w)
		return
	}
	if !bytes.Equal(got, want) {
		delete(s.parts, first) // its bytes were overwritten
		writeBoxError(w, http.StatusPreconditionFailed, "sha1_mismatch", "The Digest does not match the part's content")
		return
	}
	p := uploadPart{PartID: strings.ToUpper(randHex(4)), Offset: first, Size: size, SHA1: hex.EncodeToString(got)}
	s.parts[first] = p
	writeJSON(w, http.StatusOK, map[string]any{"part": p})
}

func (b *Box) serveCommit(w http.ResponseWriter, r *http.Request, c *call, s *session) {
	want, ok := parseDigest(r.Header.Get("Digest"))
	if !ok {
		writeBadRequest(w, "The Digest header must be sha=<base64 SHA-1 of the whole file>")
		return
	}
	var req struct {
		Parts      []uploadPart      `json:"parts"`
		Attributes *uploadAttributes `json:"attributes"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 16<<20)).Decode(&req); err != nil {
		writeBadRequest(w, "The request body is not valid JSON")
		return
	}
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		writeNotFound(w)
		return
	}
	if len(s.parts) != s.totalParts {
		s.mu.Unlock()
		writeBadRequest(w, fmt.Sprintf("%d of %d parts were uploaded", len(s.parts), s.totalParts))
		return
	}
	if len(req.Parts) != len(s.parts) {
		s.mu.Unlock()
		writeBadRequest(w, "The parts list does not match the uploaded parts")
		return
	}
	for _, p := range req.Parts {
		have, ok := s.parts[p.Offset]
		if !ok || have.PartID != p.PartID || have.Size != p.Size || (p.SHA1 != "" && !strings.EqualFold(have.SHA1, p.SHA1)) {
			s.mu.Unlock()
			writeBadRequest(w, "The parts list does not match the uploaded parts")
			return
		}
	}
	sink := newSink()
	var err error
	if s.f != nil {
		_, err = io.Copy(sink, io.NewSectionReader(s.f, 0, s.fileSize))
	}
	if err != nil || sink.n != s.fileSize {
		s.mu.Unlock()
		writeBoxError(w, http.StatusInternalServerError, "internal_server_error", "Could not assemble the file")
		return
	}
	if !bytes.Equal(sink.h.Sum(nil), want) {
		s.mu.Unlock()
		writeBoxError(w, http.StatusPreconditionFailed, "sha1_mismatch", "The Digest does not match the SHA-1 of the assembled file")
		return
	}
	s.mu.Unlock()
	s.discard()

	b.mu.Lock()
	delete(b.sessions, s.id)
	var f *file
	if s.fileID == "" {
		f = b.newFileLocked(s.fileName, s.folderID, c.user)
	} else if f = b.files[s.fileID]; f == nil {
		b.mu.Unlock()
		writeNotFound(w)
		return
	}
	if s.fileID != "" && s.fileName != "" {
		f.name = s.fileName
	}
	b.setContentLocked(f, sink)
	v := f.json()
	b.mu.Unlock()
	b.logf("upload session %s committed as file %s", s.id, f.id)
	writeFiles(w, v)
}

// --- downloads ---

func (b *Box) serveContentRedirect(w http.ResponseWriter, r *http.Request, id string) {
	b.mu.Lock()
	_, ok := b.files[id]
	var loc string
	if ok {
		opaque := randAlnum(48)
		b.downloads[opaque] = download{fileID: id, expires: time.Now().Add(b.skew).Add(downloadTTL)}
		loc = b.dlURL + "/d/1/" + opaque + "/download"
	}
	b.mu.Unlock()
	if !ok {
		writeNotFound(w)
		return
	}
	w.Header().Set("Location", loc)
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusFound)
}

// handleDownload serves the dl.boxcloud.com stand-in: no auth needed.
func (b *Box) handleDownload(rw http.ResponseWriter, r *http.Request) {
	w := &recorder{ResponseWriter: rw}
	finish := b.record("download", r)
	defer func() { finish(w, "") }()

	rest, ok := strings.CutPrefix(r.URL.Path, "/d/1/")
	opaque, ok2 := strings.CutSuffix(rest, "/download")
	if !ok || !ok2 || strings.Contains(opaque, "/") {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	b.mu.Lock()
	d, ok := b.downloads[opaque]
	var f file
	if ok && time.Now().Add(b.skew).Before(d.expires) {
		if ff := b.files[d.fileID]; ff != nil {
			f = *ff
		} else {
			ok = false
		}
	} else {
		ok = false
	}
	b.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	if !f.retained {
		http.Error(w, "fakebox did not keep this file's content", http.StatusGone)
		return
	}
	var rs io.ReadSeeker = bytes.NewReader(f.data)
	if f.pattern {
		rs = PatternReader(f.size)
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": f.name}))
	w.Header().Set("ETag", `"`+f.sha1+`"`)
	http.ServeContent(w, r, "", time.Time{}, rs)
}

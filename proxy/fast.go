package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/boxproxy/boxproxy/apierr"
	"github.com/boxproxy/boxproxy/auth"
	"github.com/boxproxy/boxproxy/config"
	"github.com/boxproxy/boxproxy/front"
	"github.com/boxproxy/boxproxy/upstream"
)

// The fast path: a GET or HEAD without a body, to an upstream reached over
// HTTP or HTTPS with no forward proxy (HTTP/1.1 on the upstream package's lent
// connections, over TLS for https), is forwarded here with the request and
// answer heads copied field by field, instead of through ReverseProxy and
// http.Request/http.Response. It does what the
// ReverseProxy path does for such a request (rewrite, the token, the 401
// retry, hop-by-hop fields, Box's request ID, JSON errors); whatever it does
// not take goes back to the server's ReverseProxy path before anything is
// sent (ServeFast returns false): requests with As-User errors, an
// access_token or percent-encoding in a query key, upload-session paths
// (their answers are rewritten), and every request when upstream retries are
// on or when the Transport is not the upstream engine.

// fastRoute is an upstream that the fast path can reach.
type fastRoute struct {
	ok     bool
	route  string // api, upload
	addr   string // host:port to dial
	host   string // the Host field sent upstream
	prefix string // the upstream URL's path, put before the request's
}

// hangupWatchAfter is how long a fast-path request runs before a read on the
// client's connection starts watching for a hang-up (a quick request never
// starts one: it costs a goroutine and system calls).
const hangupWatchAfter = 50 * time.Millisecond

func (p *Proxy) initFast() {
	eng, ok := p.o.Transport.(*upstream.Transport)
	if !ok || p.o.UpstreamRetries > 0 {
		return
	}
	p.engine = eng
	for i, u := range []*url.URL{p.o.API, p.o.Upload} {
		if !eng.Direct(u) || u.RawQuery != "" || u.User != nil {
			continue
		}
		p.fast[i] = fastRoute{ok: true, route: [...]string{"api", "upload"}[i],
			addr: upstream.Addr(u), host: u.Host, prefix: u.EscapedPath()}
	}
}

// FastResult is what the server logs and counts of a fast-path request.
type FastResult struct {
	Status  int
	Bytes   int64 // body bytes sent to the client
	Keep    bool  // the client connection may carry another request
	Aborted bool  // the client hung up
}

// ServeFast forwards h (see the comment at the top of this file). requestID
// is the X-Request-Id of the answer; addID says the client sent none, so the
// request carries it upstream too. It returns false, having sent nothing, for
// a request the ReverseProxy path must serve.
func (p *Proxy) ServeFast(c *front.Conn, h *front.Head, requestID string, addID bool, info *Info) (bool, FastResult) {
	var fr *fastRoute
	switch {
	case bytes.HasPrefix(h.Path, []byte("/2.0/")):
		fr = &p.fast[0]
	case bytes.HasPrefix(h.Path, []byte("/api/2.0/")):
		fr = &p.fast[1]
	default:
		return false, FastResult{}
	}
	if !fr.ok || bytes.Contains(h.Path, []byte("/upload_sessions")) || hasDotSegmentBytes(h.Path) || !plainQuery(h.Query) {
		return false, FastResult{}
	}
	subject, stripAs := p.o.DefaultSubject, false
	if v, n := h.Get("As-User"); n > 0 {
		if n != 1 || !config.IsBoxID(string(v)) {
			return false, FastResult{}
		}
		if p.allowed != nil {
			if _, ok := p.allowed[string(v)]; !ok {
				return false, FastResult{}
			}
		}
		if p.o.AsUserToken {
			subject, stripAs = auth.Subject{Type: auth.User, ID: string(v)}, true
		}
	}
	info.Route, info.Subject = fr.route, p.subjectName(subject)
	c.Consume(h)

	x := exchanges.Get().(*fastExchange)
	x.p, x.c, x.h, x.fr, x.info, x.requestID, x.addID, x.stripAs, x.subject =
		p, c, h, fr, info, requestID, addID, stripAs, subject
	stop := c.Watch(hangupWatchAfter, x.hangupFn)
	res := x.run()
	stop()
	if x.gone.Load() {
		res.Aborted, res.Keep = true, false
		if res.Status == 0 {
			res.Status = 499
		}
	}
	x.reset()
	exchanges.Put(x)
	return true, res
}

// exchanges keeps fastExchanges (with their answer's field array) for reuse:
// the fast path allocates little per request.
var exchanges = sync.Pool{New: func() any {
	x := &fastExchange{}
	x.hangupFn = x.hangup
	return x
}}

// reset clears x for the pool; the watch has ended, so nothing else holds it.
func (x *fastExchange) reset() {
	hangupFn := x.hangupFn
	clear(x.fieldBuf[:])
	x.ans = answer{}
	x.p, x.c, x.h, x.fr, x.info, x.requestID, x.subject, x.lent = nil, nil, nil, nil, nil, "", auth.Subject{}, nil
	x.gone.Store(false)
	x.hangupFn = hangupFn
}

func hasDotSegmentBytes(p []byte) bool {
	for len(p) > 0 {
		var seg []byte
		seg, p, _ = bytes.Cut(p, []byte("/"))
		if len(seg) > 0 && len(seg) <= 2 && (string(seg) == "." || string(seg) == "..") {
			return true
		}
	}
	return false
}

// plainQuery says whether every parameter name of q is plain: no
// access_token (which is stripped) and no percent-encoding (which could
// spell it).
func plainQuery(q []byte) bool {
	for len(q) > 0 {
		var part []byte
		part, q, _ = bytes.Cut(q, []byte("&"))
		key, _, _ := bytes.Cut(part, []byte("="))
		if string(key) == "access_token" || bytes.IndexByte(key, '%') >= 0 {
			return false
		}
	}
	return true
}

// fastExchange is one fast-path request.
type fastExchange struct {
	p         *Proxy
	c         *front.Conn
	h         *front.Head
	fr        *fastRoute
	info      *Info
	requestID string
	addID     bool
	stripAs   bool
	subject   auth.Subject

	mu       sync.Mutex
	lent     *upstream.Lent // the upstream connection in use, for hangup
	gone     atomic.Bool    // the client hung up
	hangupFn func()         // x.hangup, made once
	ans      answer         // the answer being read
	fieldBuf [32]front.Field
}

// hangup runs when the client closed its connection: the upstream request is
// abandoned.
func (x *fastExchange) hangup() {
	x.gone.Store(true)
	x.mu.Lock()
	if x.lent != nil {
		_ = x.lent.NetConn().SetDeadline(aLongTimeAgo)
	}
	x.mu.Unlock()
}

var aLongTimeAgo = time.Unix(1, 0)

// release ends the use of l; after a hang-up (which may have set a deadline
// on it) it is closed.
func (x *fastExchange) release(l *upstream.Lent, keep bool) {
	x.setLent(nil) // from here on hangup leaves l alone
	l.Release(keep && !x.gone.Load())
}

func (x *fastExchange) setLent(l *upstream.Lent) {
	x.mu.Lock()
	x.lent = l
	x.mu.Unlock()
	if l != nil && x.gone.Load() {
		_ = l.NetConn().SetDeadline(aLongTimeAgo)
	}
}

func (x *fastExchange) run() FastResult {
	p := x.p
	tokens := p.o.Tokens
	ctx := context.Background()
	tok, err := tokens.Token(ctx, x.subject)
	if err != nil {
		return x.writeError(ErrorFor(err, p.o.LoginURL))
	}
	a, err := x.attempt(tok)
	if err == nil && a.status == http.StatusUnauthorized {
		if !tokens.Refreshable() {
			// a's fields live in the connection's buffer: copy what is
			// kept before the connection goes back to the pool.
			wwwAuth, boxID := string(a.get("Www-Authenticate")), string(a.boxID)
			x.discard(a)
			return x.developerTokenExpired(wwwAuth, boxID)
		}
		tokens.Invalidate(x.subject, tok.Access())
		x.discard(a)
		p.o.Metrics.Retry("401")
		if tok, err = tokens.Token(ctx, x.subject); err != nil {
			return x.writeError(ErrorFor(err, p.o.LoginURL))
		}
		a, err = x.attempt(tok)
		if err == nil && a.status == http.StatusUnauthorized {
			tokens.Invalidate(x.subject, tok.Access())
		}
	}
	if err != nil {
		if x.gone.Load() {
			return FastResult{Status: 499}
		}
		return x.writeError(p.upstreamError(x.fr.route, err))
	}
	return x.relay(a)
}

// writeError answers with e, as apierr does on the ReverseProxy path.
func (x *fastExchange) writeError(e *apierr.Error) FastResult {
	w := x.c.NewResponseWriter(x.h.Close)
	w.Header()["X-Request-Id"] = []string{x.requestID}
	apierr.WriteError(w, e)
	return FastResult{Status: e.Status, Keep: !x.h.Close}
}

// developerTokenExpired replaces Box's 401 for a developer token, as the
// ReverseProxy path does.
func (x *fastExchange) developerTokenExpired(wwwAuth, boxID string) FastResult {
	w := x.c.NewResponseWriter(x.h.Close)
	w.Header()["X-Request-Id"] = []string{x.requestID}
	if wwwAuth != "" {
		w.Header().Set("Www-Authenticate", wwwAuth)
	}
	if boxID != "" {
		w.Header().Set("Box-Request-Id", boxID)
		x.info.BoxRequestID = boxID
	}
	apierr.Write(w, http.StatusUnauthorized, "developer_token_expired",
		"Box rejected the developer token (BOXPROXY_DEVELOPER_TOKEN): it has expired or was revoked, and it cannot be refreshed; make a new one in the Box Developer Console")
	return FastResult{Status: http.StatusUnauthorized, Keep: !x.h.Close}
}

// requestDropped are the fields not forwarded: hop-by-hop fields (as ReverseProxy
// drops them), the client's credentials, the Forwarded family (as
// ReverseProxy drops them with Rewrite), and Host, which is rewritten.
var requestDropped = []string{"Host", "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
	"Authorization", "Cookie", "Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"}

func (x *fastExchange) writeRequest(bw *bufio.Writer, tok auth.Token) error {
	bw.WriteString(x.h.Method)
	bw.WriteByte(' ')
	bw.WriteString(x.fr.prefix)
	bw.Write(x.h.Target)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(x.fr.host)
	bw.WriteString("\r\n")
fields:
	for _, f := range x.h.Fields {
		for _, d := range requestDropped {
			if front.EqualFold(f.Name, d) {
				continue fields
			}
		}
		if x.stripAs && front.EqualFold(f.Name, "As-User") {
			continue
		}
		bw.Write(f.Name)
		bw.WriteString(": ")
		bw.Write(f.Value)
		bw.WriteString("\r\n")
	}
	if x.addID {
		bw.WriteString("X-Request-Id: ")
		bw.WriteString(x.requestID)
		bw.WriteString("\r\n")
	}
	bw.WriteString("Authorization: ")
	bw.WriteString(tok.AuthorizationHeader()[0])
	_, err := bw.WriteString("\r\n\r\n")
	if err != nil {
		return err
	}
	return bw.Flush()
}

// attempt sends the request once with tok and reads the answer's head. A
// reused connection that the server had closed while idle is replaced, as
// the upstream engine does.
func (x *fastExchange) attempt(tok auth.Token) (a *answer, err error) {
	x.info.Attempts++
	start := time.Now()
	err = x.p.engine.Exchange(context.Background(), x.fr.addr, func(l *upstream.Lent) (bool, error) {
		if x.gone.Load() {
			l.Release(false)
			return false, context.Canceled
		}
		x.setLent(l)
		var answered bool
		if a, answered, err = x.exchange(l, tok); err != nil {
			x.release(l, false)
			return !answered && !x.gone.Load(), err
		}
		return false, nil
	})
	x.p.o.Metrics.Upstream(x.fr.route, time.Since(start))
	return a, err
}

func (x *fastExchange) exchange(l *upstream.Lent, tok auth.Token) (a *answer, answered bool, err error) {
	if err := x.writeRequest(l.Writer(), tok); err != nil {
		return nil, false, err
	}
	br := l.Reader()
	if _, err := br.Peek(1); err != nil {
		return nil, false, err
	}
	for n1xx := 0; ; n1xx++ {
		a = &x.ans
		if err = readAnswer(br, x.h.Method == http.MethodHead, a, x.fieldBuf[:0]); err != nil {
			return nil, true, err
		}
		if a.status >= 200 {
			break
		}
		if a.status == http.StatusSwitchingProtocols {
			return nil, true, errors.New("upstream switched protocols without an upgrade request")
		}
		if n1xx == max1xx {
			return nil, true, fmt.Errorf("upstream sent more than %d informational (1xx) answers", max1xx)
		}
		_, _ = br.Discard(a.size)
	}
	a.l = l
	return a, true, nil
}

const max1xx = 5

// answer is an upstream answer's head, parsed in place in the connection's
// read buffer (valid until the body is read).
type answer struct {
	l       *upstream.Lent
	size    int    // bytes of the head
	status  int    // status code
	line    []byte // the status line after "HTTP/1.x "
	fields  []front.Field
	length  int64 // Content-Length, -1 when none
	chunked bool
	noBody  bool // HEAD, 1xx, 204, 304
	close   bool // the upstream connection cannot be reused
	dropped []byte
	boxID   []byte
}

func (a *answer) get(name string) []byte {
	for _, f := range a.fields {
		if front.EqualFold(f.Name, name) {
			return f.Value
		}
	}
	return nil
}

var errAnswerHead = errors.New("malformed answer head")

// readAnswer peeks at one answer head (up to the reader's buffer size) and
// parses it into a, without consuming it; a's fields are appended to fields.
func readAnswer(br *bufio.Reader, head bool, a *answer, fields []front.Field) error {
	var buf []byte
	for {
		b, _ := br.Peek(br.Buffered())
		if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 {
			buf = b[:i+4]
			break
		}
		if br.Buffered() == br.Size() {
			return fmt.Errorf("upstream answer's headers exceed %d bytes", br.Size())
		}
		if _, err := br.Peek(br.Buffered() + 1); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	*a = answer{size: len(buf), length: -1, fields: fields}
	line, rest, ok := cutLine(buf)
	if !ok || len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return errAnswerHead
	}
	http10 := line[7] == '0'
	if !http10 && line[7] != '1' {
		return errAnswerHead
	}
	a.line = line[9:]
	code := line[9:12]
	if len(line) > 12 && line[12] != ' ' {
		return errAnswerHead
	}
	for _, c := range code {
		if c < '0' || c > '9' {
			return errAnswerHead
		}
	}
	a.status = int(code[0]-'0')*100 + int(code[1]-'0')*10 + int(code[2]-'0')
	if a.status < 100 {
		return errAnswerHead
	}
	keepAlive := false
	for {
		line, rest, ok = cutLine(rest)
		if !ok {
			return errAnswerHead
		}
		if len(line) == 0 {
			break
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return errAnswerHead
		}
		name, value := line[:colon], bytes.Trim(line[colon+1:], " \t")
		for _, c := range name {
			if !front.IsTokenChar(c) {
				return errAnswerHead
			}
		}
		if bytes.IndexByte(value, 0) >= 0 || bytes.IndexByte(value, '\r') >= 0 {
			return errAnswerHead
		}
		switch {
		case front.EqualFold(name, "Content-Length"):
			n, err := strconv.ParseInt(string(value), 10, 64)
			if err != nil || n < 0 || (a.length >= 0 && a.length != n) {
				return errors.New("upstream answer has a bad Content-Length")
			}
			a.length = n
		case front.EqualFold(name, "Transfer-Encoding"):
			if !front.EqualFold(value, "chunked") || a.chunked {
				return errors.New("upstream answer has an unsupported Transfer-Encoding")
			}
			a.chunked = true
		case front.EqualFold(name, "Connection"):
			for _, tok := range bytes.Split(value, []byte(",")) {
				tok = bytes.Trim(tok, " \t")
				switch {
				case front.EqualFold(tok, "close"):
					a.close = true
				case front.EqualFold(tok, "keep-alive"):
					keepAlive = true
				case len(tok) > 0:
					a.dropped = append(append(a.dropped, tok...), ',')
				}
			}
		case front.EqualFold(name, "Box-Request-Id"):
			a.boxID = value
		}
		a.fields = append(a.fields, front.Field{Name: name, Value: value})
	}
	if http10 && !keepAlive {
		a.close = true
	}
	a.noBody = head || a.status < 200 || a.status == http.StatusNoContent || a.status == http.StatusNotModified
	if a.chunked {
		a.length = -1 // chunked framing wins over a Content-Length
	}
	if !a.noBody && !a.chunked && a.length < 0 {
		a.close = true // delimited by the end of the connection
	}
	return nil
}

func cutLine(b []byte) (line, rest []byte, ok bool) {
	i := bytes.Index(b, []byte("\r\n"))
	if i < 0 {
		return nil, nil, false
	}
	line = b[:i]
	if bytes.IndexByte(line, '\n') >= 0 {
		return nil, nil, false
	}
	return line, b[i+2:], true
}

// discard drops an answer that is not passed on: a short body is read so that
// the connection can be reused; otherwise the connection is closed.
func (x *fastExchange) discard(a *answer) {
	l := a.l
	br := l.Reader()
	_, _ = br.Discard(a.size)
	keep := !a.close
	switch {
	case a.noBody:
	case a.length >= 0 && a.length <= 64<<10:
		_, err := copyN(io.Discard, br, a.length)
		keep = keep && err == nil
	case a.chunked:
		err := copyChunked(io.Discard, nil, br, 64<<10)
		keep = keep && err == nil
	default:
		keep = false
	}
	x.release(l, keep)
}

// responseDropped are the answer's fields not passed on: hop-by-hop fields and
// the framing, which relay writes itself.
var responseDropped = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Content-Length"}

// relay passes the answer on to the client and ends the exchange.
func (x *fastExchange) relay(a *answer) FastResult {
	l := a.l
	if a.boxID != nil {
		x.info.BoxRequestID = string(a.boxID)
	}
	br := l.Reader()
	var body []byte // a short error body read to find Box's request ID
	if a.status >= 400 && a.boxID == nil && a.length > 0 && a.length <= 64<<10 && !a.noBody && isJSONType(a.get("Content-Type")) {
		b, err := br.Peek(a.size + int(a.length))
		if err == nil {
			body = b[a.size:]
			var v struct {
				RequestID string `json:"request_id"`
			}
			if json.Unmarshal(body, &v) == nil {
				x.info.BoxRequestID = v.RequestID
			}
		}
	}
	res := FastResult{Status: a.status, Keep: !x.h.Close && !x.c.Closing()}
	bw := x.c.Writer()
	bw.WriteString("HTTP/1.1 ")
	bw.Write(a.line)
	bw.WriteString("\r\nX-Request-Id: ")
	bw.WriteString(x.requestID)
	bw.WriteString("\r\n")
	hasDate := false
fields:
	for _, f := range a.fields {
		for _, d := range responseDropped {
			if front.EqualFold(f.Name, d) {
				if a.noBody && d == "Content-Length" {
					break // a HEAD answer's length describes the GET's body
				}
				continue fields
			}
		}
		if len(a.dropped) > 0 && listed(a.dropped, f.Name) {
			continue
		}
		if !hasDate && front.EqualFold(f.Name, "Date") {
			hasDate = true
		}
		bw.Write(f.Name)
		bw.WriteString(": ")
		bw.Write(f.Value)
		bw.WriteString("\r\n")
	}
	if !hasDate {
		bw.WriteString("Date: ")
		bw.Write(time.Now().UTC().AppendFormat(nil, http.TimeFormat))
		bw.WriteString("\r\n")
	}
	switch {
	case a.noBody:
	case a.chunked:
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	case a.length >= 0:
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(bw.AvailableBuffer(), a.length, 10))
		bw.WriteString("\r\n")
	default:
		res.Keep = false // the body ends when the connection does
	}
	if !res.Keep {
		bw.WriteString("Connection: close\r\n")
	}
	bw.WriteString("\r\n")
	_, _ = br.Discard(a.size)

	var err error
	upKeep := !a.close
	switch {
	case a.noBody:
	case body != nil:
		var n int
		n, err = bw.Write(body)
		_, _ = br.Discard(n)
		res.Bytes = int64(n)
	case a.chunked:
		cw := &countWriter{w: bw}
		err = copyChunked(cw, bw, br, -1)
		res.Bytes = cw.n
	case a.length >= 0:
		res.Bytes, err = copyBody(bw, x.c.NetConn(), br, l.NetConn(), a.length)
	default:
		res.Bytes, err = io.Copy(bw, br)
		upKeep = false
	}
	if err != nil {
		upKeep, res.Keep = false, false
	}
	if ferr := bw.Flush(); ferr != nil {
		res.Keep = false
	}
	x.release(l, upKeep)
	return res
}

// listed says whether name is one of the comma-terminated tokens in list.
func listed(list, name []byte) bool {
	for len(list) > 0 {
		var tok []byte
		tok, list, _ = bytes.Cut(list, []byte(","))
		if bytes.EqualFold(tok, name) {
			return true
		}
	}
	return false
}

func isJSONType(ct []byte) bool {
	mt, _, _ := bytes.Cut(ct, []byte(";"))
	mt = bytes.TrimSpace(mt)
	return front.EqualFold(mt, "application/json") || bytes.HasSuffix(bytes.ToLower(mt), []byte("+json"))
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// spliceMin is the body size from which copyBody hands the copy to the
// kernel (splice on Linux) instead of moving it through user space.
const spliceMin = 64 << 10

var errShortBody = errors.New("upstream answer ended before its Content-Length")

// copyBody copies n body bytes: what the upstream reader has buffered, then
// the rest straight from the upstream connection to the client's, which lets
// the kernel splice them.
func copyBody(bw *bufio.Writer, client net.Conn, br *bufio.Reader, up net.Conn, n int64) (int64, error) {
	if n < spliceMin || int64(br.Buffered()) >= n {
		return copyN(bw, br, n)
	}
	buffered, _ := br.Peek(br.Buffered())
	w, err := bw.Write(buffered)
	_, _ = br.Discard(w)
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		return int64(w), err
	}
	rest := n - int64(w)
	lr := &io.LimitedReader{R: up, N: rest}
	var copied int64
	if rf, ok := client.(io.ReaderFrom); ok {
		copied, err = rf.ReadFrom(lr)
	} else {
		copied, err = io.Copy(client, lr)
	}
	total := int64(w) + copied
	if err == nil && copied < rest {
		err = errShortBody
	}
	return total, err
}

// copyN copies n bytes from br to w through br's buffer (io.CopyN would
// allocate a LimitReader); an early end is errShortBody.
func copyN(w io.Writer, br *bufio.Reader, n int64) (int64, error) {
	var done int64
	for done < n {
		if br.Buffered() == 0 {
			if _, err := br.Peek(1); err != nil {
				if err == io.EOF {
					err = errShortBody
				}
				return done, err
			}
		}
		b, _ := br.Peek(int(min(int64(br.Buffered()), n-done)))
		m, err := w.Write(b)
		_, _ = br.Discard(m)
		done += int64(m)
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// copyChunked copies one chunked body, framing and trailers byte for byte,
// from br to w, checking its syntax. With limit ≥ 0 a body longer than that
// is an error. flush (if set) is flushed whenever br has nothing more
// buffered, so that a streamed answer reaches the client as it comes.
func copyChunked(w io.Writer, flush *bufio.Writer, br *bufio.Reader, limit int64) error {
	var total int64
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return chunkErr(err)
		}
		size, ok := chunkSize(line)
		if !ok {
			return errors.New("upstream answer has a malformed chunk")
		}
		if _, err := w.Write(line); err != nil {
			return err
		}
		total += size
		if limit >= 0 && total > limit {
			return errors.New("chunked body over the limit")
		}
		if size == 0 {
			// Trailer fields, then the empty line.
			for {
				line, err := br.ReadSlice('\n')
				if err != nil {
					return chunkErr(err)
				}
				if len(line) < 2 || line[len(line)-2] != '\r' {
					return errors.New("upstream answer has a malformed trailer")
				}
				if _, err := w.Write(line); err != nil {
					return err
				}
				if len(line) == 2 {
					return nil
				}
			}
		}
		if _, err := copyN(w, br, size); err != nil {
			return err
		}
		crlf, err := br.Peek(2)
		if err != nil {
			return chunkErr(err)
		}
		if crlf[0] != '\r' || crlf[1] != '\n' {
			return errors.New("upstream answer has a malformed chunk")
		}
		if _, err := w.Write(crlf); err != nil {
			return err
		}
		_, _ = br.Discard(2)
		if flush != nil && br.Buffered() == 0 {
			if err := flush.Flush(); err != nil {
				return err
			}
		}
	}
}

func chunkErr(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// chunkSize parses a chunk-size line ("1a;ext\r\n").
func chunkSize(line []byte) (int64, bool) {
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return 0, false
	}
	line = line[:len(line)-2]
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		line = line[:i]
	}
	line = bytes.TrimRight(line, " \t")
	if len(line) == 0 || len(line) > 15 {
		return 0, false
	}
	var n int64
	for _, c := range line {
		switch {
		case '0' <= c && c <= '9':
			n = n<<4 | int64(c-'0')
		case 'a' <= c && c <= 'f':
			n = n<<4 | int64(c-'a'+10)
		case 'A' <= c && c <= 'F':
			n = n<<4 | int64(c-'A'+10)
		default:
			return 0, false
		}
	}
	return n, true
}

package upstream

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/url"
)

// Lent is a pooled connection lent out for one exchange that the caller
// frames itself (the proxy's fast path writes a request head and reads the
// answer with its own parser). It must end with exactly one Release.
type Lent struct {
	c *conn
}

// Direct says whether requests to u may use lent connections: HTTP or HTTPS
// (HTTP/1.1 over TLS) with no forward proxy in between.
func (t *Transport) Direct(u *url.URL) bool {
	if u == nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return false
	}
	return t.isDirect(&http.Request{Method: http.MethodGet, URL: u, Header: http.Header{}})
}

// Addr is what Lend takes for u: host:port, marked for TLS when u is https.
func Addr(u *url.URL) string {
	if u.Scheme == "https" {
		return tlsPrefix + hostPort(u)
	}
	return hostPort(u)
}

// Lend returns an idle connection to addr, or a new one (always a new one
// when fresh). reused says whether it had carried an earlier request.
// Exchange wraps it with the retry after a connection closed while idle.
func (t *Transport) Lend(ctx context.Context, addr string, fresh bool) (l *Lent, reused bool, err error) {
	c, reused, err := t.getConn(ctx, addr, fresh)
	if err != nil {
		return nil, false, err
	}
	return &c.lent, reused, nil
}

// Reader reads the answer; at most MaxResponseHeaderBytes should be read
// before the body starts (the caller enforces it).
func (l *Lent) Reader() *bufio.Reader { return l.c.br }

// Writer buffers the request; the caller flushes it.
func (l *Lent) Writer() *bufio.Writer { return l.c.bw }

// NetConn is the connection itself, for deadlines and for copying a body
// past the buffer (the kernel can then splice it).
func (l *Lent) NetConn() net.Conn { return l.c.nc }

// Release ends the exchange: the connection goes back to the pool when keep
// is true and nothing unread is left in its buffer, and is closed otherwise.
// A caller that set a deadline on NetConn clears it before keeping.
func (l *Lent) Release(keep bool) {
	c := l.c
	if keep && c.br.Buffered() == 0 {
		c.t.put(c)
		return
	}
	_ = c.nc.Close()
}

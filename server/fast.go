package server

import (
	"bytes"
	"time"

	"github.com/boxproxy/boxproxy/front"
	"github.com/boxproxy/boxproxy/proxy"
)

// ServeFast is the front's fast path (package front): a plain GET or HEAD to
// /2.0/ or /api/2.0/ that passes the guards goes to the proxy's fast path.
// Whatever needs an answer other than the forwarded one (a refusal, a bad
// request ID) returns false and is served by ServeHTTP, which answers it.
func (s *Server) ServeFast(c *front.Conn, h *front.Head) (served, keep bool) {
	switch {
	case bytes.HasPrefix(h.Path, []byte("/2.0/")), bytes.HasPrefix(h.Path, []byte("/api/2.0/")):
	default:
		return false, false
	}
	if !s.fastHostAllowed(h.Host) {
		return false, false
	}
	// Browsers: same-origin or not, they go the long way (guard).
	if _, n := h.Get("Origin"); n > 0 {
		return false, false
	}
	if _, n := h.Get("Sec-Fetch-Site"); n > 0 {
		return false, false
	}
	if s.keyHash != nil {
		v, n := h.Get("Proxy-Authorization")
		if n != 1 || !s.keyOK(string(v)) {
			return false, false
		}
	}
	var id string
	v, n := h.Get("X-Request-Id")
	switch {
	case n == 0:
		id = s.newID()
	case n == 1 && len(v) <= 128 && printableBytes(v):
		id = string(v)
	default:
		return false, false
	}
	start := time.Now()
	s.m.InFlight(1)
	var info proxy.Info
	ok, res := s.proxy.ServeFast(c, h, id, n == 0, &info)
	if !ok {
		s.m.InFlight(-1)
		return false, false
	}
	s.record(done{id: id, method: h.Method, rawPath: h.Path, route: info.Route, status: res.Status,
		bytes: res.Bytes, info: &info, start: start, aborted: res.Aborted})
	return true, res.Keep
}

// fastHostAllowed is hostAllowed for a Host field in the read buffer; the
// last host allowed is remembered, so that the usual case costs a compare.
func (s *Server) fastHostAllowed(host []byte) bool {
	if last := s.lastHost.Load(); last != nil && string(host) == *last {
		return true
	}
	h := string(host)
	if !s.hostAllowed(h) {
		return false
	}
	s.lastHost.Store(&h)
	return true
}

func printableBytes(v []byte) bool {
	for _, c := range v {
		if c <= 0x20 || c >= 0x7f {
			return false
		}
	}
	return true
}

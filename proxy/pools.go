package proxy

import (
	"net/http"
	"sync"

	lru "github.com/hashicorp/golang-lru/v2"
)

// pools keeps the kept-alive HTTP/1.x connections towards Box apart per
// user: each user (subject, and the As-User passed on in header mode) has a
// Transport of its own, so an answer can only ever be read on a connection
// that carried that user's requests. HTTP/1.x cannot tell a stray answer (a
// second one, bytes past Content-Length, a late 408) that arrives after the
// next request was written from that request's answer; net/http drops a
// connection when such bytes arrive while it is idle, but not after it was
// handed to the next request. HTTP/2 binds every answer to its stream, so
// a host that answers over HTTP/2 is then reached over one shared Transport.
// All of them are net/http's: no pool of our own.
type pools struct {
	shared *http.Transport // the template; the pool for HTTP/2 hosts
	mu     sync.Mutex
	users  *lru.Cache[string, *http.Transport]
	h2     sync.Map // scheme://host -> struct{}: answered over HTTP/2
}

// maxUserPools bounds the Transports kept; the least recently used one's
// idle connections are closed when it goes.
const maxUserPools = 1024

func newPools(shared *http.Transport) *pools {
	c, _ := lru.NewWithEvict(maxUserPools, func(_ string, t *http.Transport) { t.CloseIdleConnections() })
	return &pools{shared: shared, users: c}
}

// roundTrip sends req for user on the user's own connections, or on the
// shared ones once req's host is known to speak HTTP/2.
func (p *pools) roundTrip(req *http.Request, user string) (*http.Response, error) {
	host := req.URL.Scheme + "://" + req.URL.Host
	if _, ok := p.h2.Load(host); ok {
		return p.shared.RoundTrip(req)
	}
	resp, err := p.forUser(user).RoundTrip(req)
	if err == nil && resp.ProtoMajor == 2 {
		p.h2.Store(host, struct{}{})
	}
	return resp, err
}

func (p *pools) forUser(user string) *http.Transport {
	if t, ok := p.users.Get(user); ok {
		return t
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if t, ok := p.users.Get(user); ok {
		return t
	}
	t := p.shared.Clone()
	p.users.Add(user, t)
	return t
}

// oneShotHTTP1 sends every request on a connection of its own unless the
// host has answered over HTTP/2. The token endpoint's answers hold tokens
// for different subjects: over a reused HTTP/1.x connection a stray answer
// could hand one subject's token to another's request. Token requests are
// rare (one per subject per token lifetime), so a new connection each costs
// little.
type oneShotHTTP1 struct {
	t  *http.Transport
	h2 sync.Map
}

// OneRequestPerHTTP1Connection wraps t for the token endpoint (see oneShotHTTP1).
func OneRequestPerHTTP1Connection(t *http.Transport) http.RoundTripper { return &oneShotHTTP1{t: t} }

func (o *oneShotHTTP1) RoundTrip(req *http.Request) (*http.Response, error) {
	host := req.URL.Scheme + "://" + req.URL.Host
	if _, ok := o.h2.Load(host); !ok {
		r := new(http.Request)
		*r = *req // never mutate the request handed in
		r.Close = true
		req = r
	}
	resp, err := o.t.RoundTrip(req)
	if err == nil && resp.ProtoMajor == 2 {
		o.h2.Store(host, struct{}{})
	}
	return resp, err
}

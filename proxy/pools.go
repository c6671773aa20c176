package proxy

import (
	"net/http"
	"sync"
	"sync/atomic"

	lru "github.com/hashicorp/golang-lru/v2"
)

// pools keeps the connections towards Box apart per user: each user (the
// subject, and the As-User passed on in header mode) has a net/http
// Transport of its own, so an answer can only ever be read on a connection
// that carried that user's requests. HTTP/1.x cannot tell a stray answer (a
// second one, bytes past Content-Length, a late 408) that arrives after the
// next request was written from that request's answer: net/http drops a
// connection when such bytes arrive while it is idle, but not once it was
// handed to the next request. HTTP/2 binds answers to streams, but which
// protocol a connection speaks is agreed per connection (a load balancer
// with mixed back ends, an egress proxy that re-signs TLS, a redial), so no
// protocol is trusted to make sharing safe. All of them are net/http's: no
// pool of our own.
type pools struct {
	template *http.Transport
	mu       sync.Mutex
	users    *lru.Cache[string, *userPool]
	// last is the pool used last: most processes serve one user (the
	// default subject) most of the time, and its look-up then takes no lock.
	last atomic.Pointer[userPool]
}

type userPool struct {
	user    string
	t       *http.Transport
	evicted atomic.Bool // dropped from users: last must not hand it out
}

// maxUserPools bounds the Transports kept; the least recently used one's
// idle connections are closed when it goes (connections in use finish
// first). Beyond this many users active at once, a request may need a new
// connection.
const maxUserPools = 1024

func newPools(template *http.Transport) *pools {
	p := &pools{template: template}
	p.users, _ = lru.NewWithEvict(maxUserPools, func(_ string, up *userPool) {
		up.evicted.Store(true)
		p.last.CompareAndSwap(up, nil)
		up.t.CloseIdleConnections()
	})
	return p
}

// roundTrip sends req on user's own connections.
func (p *pools) roundTrip(req *http.Request, user string) (*http.Response, error) {
	return p.forUser(user).RoundTrip(req)
}

func (p *pools) forUser(user string) *http.Transport {
	if l := p.last.Load(); l != nil && l.user == user && !l.evicted.Load() {
		// Its place in the LRU is not renewed while it stays the last one
		// used: with maxUserPools users kept, a new one may evict it, and
		// its next request then opens a new connection. Only then.
		return l.t
	}
	if up, ok := p.users.Get(user); ok {
		p.last.Store(up)
		return up.t
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if up, ok := p.users.Get(user); ok {
		return up.t
	}
	up := &userPool{user: user, t: p.template.Clone()}
	p.users.Add(user, up)
	p.last.Store(up)
	return up.t
}

// oneShot sends every request on a connection of its own. The token
// endpoint's answers hold tokens for different subjects: on a shared
// connection a stray answer could hand one subject's token to another's
// request. Token requests are rare (one per subject per token lifetime), so
// a new connection each costs little.
type oneShot struct{ t *http.Transport }

// OneRequestPerConnection wraps t for the token endpoint (see oneShot).
func OneRequestPerConnection(t *http.Transport) http.RoundTripper { return oneShot{t} }

func (o oneShot) RoundTrip(req *http.Request) (*http.Response, error) {
	r := new(http.Request)
	*r = *req // never mutate the request handed in
	r.Close = true
	return o.t.RoundTrip(r)
}

package auth

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/rs/zerolog"
	"golang.org/x/sync/singleflight"

	"github.com/boxproxy/boxproxy/metrics"
)

// CacheOptions tune a Cache. Zero values take the defaults.
type CacheOptions struct {
	Size         int              // subjects kept (default 10000)
	FetchTimeout time.Duration    // bounds one token request (default 10s)
	BackoffBase  time.Duration    // first wait after a failure (default 1s)
	BackoffMax   time.Duration    // longest wait (default 60s)
	Now          func() time.Time // default time.Now
	Metrics      *metrics.Metrics
	Logger       zerolog.Logger
	// Shared, when set, is a second level shared by a fleet (Redis): a
	// local miss looks there before asking Box, and one replica at a time
	// fetches a subject's token for all.
	Shared SharedCache
}

// Cache wraps a Source: it keeps one token per subject (least recently used
// subjects go first), renews a token before it expires so that requests need
// not wait, lets one request per subject reach the token endpoint however many
// wait, and backs off per subject while the endpoint fails.
type Cache struct {
	src     Source
	lru     *lru.Cache[Subject, *entry]
	flights singleflight.Group
	mu      sync.Mutex // orders writes of entries (stores and invalidations)
	o       CacheOptions
	log     zerolog.Logger

	// churn: valid tokens evicted since churnSince, for the "cache too
	// small" warning.
	churnMu    sync.Mutex
	churn      int
	churnSince time.Time

	// Shutdown: after StopRenewing no renewal ahead of expiry starts; after
	// Close no token request starts at all, and Close waits for the running
	// ones (fetching counts them) to end and store their answers.
	noRenew  atomic.Bool
	lifeMu   sync.Mutex
	closed   bool
	running  int
	fetching sync.WaitGroup
}

// entry is immutable once stored, but for the refreshing flag.
type entry struct {
	tok        Token
	useUntil   time.Time // after this the token is not handed out; zero = no known expiry
	refreshAt  time.Time // from then on a hit starts a renewal in the background; zero = never
	err        error     // the last failure, if the last attempt failed
	retryAt    time.Time // no new attempt before this
	failures   int
	refreshing atomic.Bool
	// rejected is the token Box rejected last (Invalidate): one read from
	// the fleet before the fleet dropped it is not taken again.
	rejected string
	// login is the login tok belongs to, for a LoginEpocher Source.
	login uint64
}

// BackoffError is returned while the cache waits before asking the token
// endpoint again after a failure.
type BackoffError struct {
	Err   error
	Until time.Time
}

func (e *BackoffError) Error() string {
	return fmt.Sprintf("%v (next attempt in %s)", e.Err, time.Until(e.Until).Round(time.Second))
}

// Unwrap returns the failure that caused the back-off.
func (e *BackoffError) Unwrap() error { return e.Err }

// NewCache wraps src. A Cache refuses to wrap another Cache.
func NewCache(src Source, o CacheOptions) (*Cache, error) {
	if _, ok := src.(*Cache); ok {
		return nil, errors.New("auth: a Cache cannot wrap a Cache")
	}
	if o.Size <= 0 {
		o.Size = 10000
	}
	if o.FetchTimeout <= 0 {
		o.FetchTimeout = 10 * time.Second
	}
	if o.BackoffBase <= 0 {
		o.BackoffBase = time.Second
	}
	if o.BackoffMax <= 0 {
		o.BackoffMax = time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	c := &Cache{src: src, o: o, log: o.Logger}
	l, err := lru.NewWithEvict(o.Size, c.evicted)
	if err != nil {
		return nil, err
	}
	c.lru = l
	return c, nil
}

// Method names the wrapped grant.
func (c *Cache) Method() string { return c.src.Method() }

// Refreshable reports whether a rejected token can be replaced by a new one.
func (c *Cache) Refreshable() bool {
	_, static := c.src.(*Static)
	return !static
}

// Len returns how many subjects the cache holds.
func (c *Cache) Len() int { return c.lru.Len() }

// Token returns a valid token for s: from the cache when it holds one, else
// from the Source, sharing one request among all callers that wait for s.
// ctx bounds only the caller's wait, not the request others share.
func (c *Cache) Token(ctx context.Context, s Subject) (Token, error) {
	now := c.o.Now()
	if e, ok := c.lru.Get(s); ok {
		if e.usable(now) {
			if !e.refreshAt.IsZero() && !now.Before(e.refreshAt) && !now.Before(e.retryAt) &&
				!c.noRenew.Load() && e.refreshing.CompareAndSwap(false, true) {
				go c.renew(s)
			}
			c.o.Metrics.CacheHit()
			return e.tok, nil
		}
		if e.err != nil && now.Before(e.retryAt) {
			return Token{}, &BackoffError{Err: e.err, Until: e.retryAt}
		}
	}
	c.o.Metrics.CacheMiss()
	ch := c.flights.DoChan(s.String(), func() (any, error) { return c.fetch(s) })
	select {
	case r := <-ch:
		if r.Err != nil {
			return Token{}, r.Err
		}
		return r.Val.(Token), nil
	case <-ctx.Done():
		return Token{}, ctx.Err()
	}
}

// Peek returns the cached token for s without fetching or touching recency.
func (c *Cache) Peek(s Subject) (Token, bool) {
	e, ok := c.lru.Peek(s)
	if !ok || !e.usable(c.o.Now()) {
		return Token{}, false
	}
	return e.tok, true
}

// Invalidate drops s's token after Box rejected it, but only if access is
// still the current token: a newer one that replaced it meanwhile stays.
func (c *Cache) Invalidate(s Subject, access string) bool {
	if !c.Refreshable() {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.lru.Peek(s)
	if !ok || e.tok.access != access {
		return false
	}
	if c.o.Shared != nil {
		// Drop it for the whole fleet first (unless another replica already
		// replaced it), so that the next fetch here cannot read it back.
		// Bounded: the fleet client's timeouts are short.
		ctx, cancel := context.WithTimeout(context.Background(), c.o.FetchTimeout)
		if err := c.o.Shared.Delete(ctx, s, access); err != nil {
			c.log.Debug().Str("subject", s.String()).Err(err).Msg("fleet: cannot drop a rejected token from Redis")
		}
		cancel()
	}
	// Replace rather than Remove: Remove would count as an eviction.
	c.lru.Add(s, &entry{failures: e.failures, rejected: access})
	return true
}

// Purge forgets every token and failure (after a new login), but for the
// tokens of the current login of a LoginEpocher Source.
func (c *Cache) Purge() {
	c.mu.Lock()
	defer c.mu.Unlock()
	le, epoch := c.src.(LoginEpocher)
	var current uint64
	if epoch {
		current = le.LoginEpoch()
	}
	for _, k := range c.lru.Keys() {
		if e, ok := c.lru.Peek(k); ok && epoch && e.login == current && e.tok.Access() != "" {
			// Already the new login's token: a request that waited for
			// the login fetched it before this Purge came.
			continue
		}
		c.lru.Add(k, &entry{})
	}
}

// evicted counts an eviction; valid tokens evicted at a high rate mean the
// cache is too small for the subjects in use: every request for them becomes a
// token request (or, in a fleet, a Redis look-up).
func (c *Cache) evicted(_ Subject, e *entry) {
	c.o.Metrics.CacheEviction()
	now := c.o.Now()
	if !e.usable(now) {
		return
	}
	c.o.Metrics.CacheEvictionValid()
	c.churnMu.Lock()
	defer c.churnMu.Unlock()
	if now.Sub(c.churnSince) > time.Minute {
		c.churn, c.churnSince = 0, now
	}
	c.churn++
	// More valid evictions in a minute than the cache holds: tokens leave
	// long before they expire (they live about an hour).
	if c.churn == c.o.Size {
		ev := c.log.Warn().Int("size", c.o.Size).Dur("within", now.Sub(c.churnSince).Round(time.Second))
		if c.o.Shared == nil {
			ev = ev.Str("hint", "each evicted subject's next request asks Box for a new token; raise BOXPROXY_TOKEN_CACHE_SIZE")
		} else {
			ev = ev.Str("hint", "evicted subjects come back from Redis; raise BOXPROXY_TOKEN_CACHE_SIZE to spare the look-ups")
		}
		ev.Msg("token cache too small: valid tokens are evicted much faster than they expire")
	}
}

func (c *Cache) renew(s Subject) {
	_, _, _ = c.flights.Do(s.String(), func() (any, error) { return c.fetch(s) })
}

// StopRenewing is the first step of a shutdown: tokens are no longer renewed
// ahead of expiry in the background (a hit keeps handing out the cached
// token while it is usable; a miss still asks the Source, for the requests
// that are still being served).
func (c *Cache) StopRenewing() { c.noRenew.Store(true) }

// Close is the last step of a shutdown, once no request is served any more:
// no token request starts from now on (Token answers a miss with ErrClosed;
// cached tokens are still handed out), and Close waits until the requests
// already running have ended and their answers are stored, or ctx ends. An
// oauth refresh that Box has received must not be cut: Box has rotated the
// refresh token, and its answer holds the only copy of the new one. Every
// token request is bounded by its own timeouts, so the wait ends.
func (c *Cache) Close(ctx context.Context) error {
	c.noRenew.Store(true)
	c.lifeMu.Lock()
	c.closed = true
	n := c.running
	c.lifeMu.Unlock()
	if n == 0 {
		return nil
	}
	start := time.Now()
	ev := c.log.Info().Str("method", c.src.Method()).Int("token_requests", n)
	if c.src.Method() == "oauth" {
		ev = ev.Str("why", "an oauth refresh at Box has rotated the refresh token: its answer holds the only copy of the new one, and is saved before boxproxy exits")
	}
	ev.Msg("shutdown: waiting for the token requests in flight to end and their answers to be stored")
	done := make(chan struct{})
	go func() { c.fetching.Wait(); close(done) }()
	select {
	case <-done:
		c.log.Info().Str("method", c.src.Method()).Dur("waited_ms", time.Since(start)).
			Msg("shutdown: the token requests in flight have ended")
		return nil
	case <-ctx.Done():
		ev := c.log.Warn()
		if c.src.Method() == "oauth" {
			ev = c.log.Error().Str("hint", "if Box has answered the refresh meanwhile, its new refresh token is lost and someone must log in again")
		}
		ev.Str("method", c.src.Method()).Dur("waited_ms", time.Since(start)).
			Msg("shutdown: gave up waiting for the token requests in flight")
		return ctx.Err()
	}
}

// begin counts a token request that starts, unless the cache is closed.
func (c *Cache) begin() bool {
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	if c.closed {
		return false
	}
	c.running++
	c.fetching.Add(1)
	return true
}

func (c *Cache) end() {
	c.lifeMu.Lock()
	c.running--
	c.lifeMu.Unlock()
	c.fetching.Done()
}

// LoginEpocher is a Source whose tokens belong to a login that can be
// replaced (oauth): LoginEpoch counts the logins. Its Token writes the count
// of the login whose token it returns to the *uint64 under loginKey in its
// context, so that the Cache does not keep a token whose login was replaced
// while it was on its way.
type LoginEpocher interface {
	LoginEpoch() uint64
}

type loginKey struct{}

// reportLogin writes epoch for the Cache's fetch that asked, if any.
func reportLogin(ctx context.Context, epoch uint64) {
	if p, ok := ctx.Value(loginKey{}).(*uint64); ok {
		*p = epoch
	}
}

// fetch asks the Source for s's token and stores the outcome. It runs in a
// single flight per subject, under its own timeout: a caller that gives up
// does not cancel the request the others wait for. Once the cache is closed
// (shutdown) it starts nothing.
func (c *Cache) fetch(s Subject) (any, error) {
	if !c.begin() {
		return Token{}, ErrClosed
	}
	defer c.end()
	start := c.o.Now()
	if e, ok := c.lru.Peek(s); ok && e.usable(start) && (e.refreshAt.IsZero() || start.Before(e.refreshAt)) {
		return e.tok, nil // another flight stored a fresh token just before this one began
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.o.FetchTimeout)
	defer cancel()
	var tok Token
	var err error
	obtained := start
	shared := false
	if c.o.Shared != nil {
		rejected := ""
		if e, ok := c.lru.Peek(s); ok {
			rejected = e.rejected
		}
		tok, obtained, err = c.fetchShared(ctx, s, start, rejected)
		shared = err == nil || !errors.Is(err, ErrFleet)
		if !shared {
			// Redis cannot help: ask Box alone, as one process does. Safe
			// for ccg and jwt, whose tokens do not depend on each other.
			c.log.Debug().Str("subject", s.String()).Err(err).Msg("fleet: Redis unavailable; fetching the token alone")
		}
	}
	var login uint64 // the login the token belongs to, if the Source says
	if !shared {
		obtained = c.o.Now()
		if _, ok := c.src.(LoginEpocher); ok {
			ctx = context.WithValue(ctx, loginKey{}, &login)
		}
		tok, err = c.src.Token(ctx, s)
	}
	now := c.o.Now()

	c.mu.Lock()
	defer c.mu.Unlock()
	old, _ := c.lru.Peek(s)
	if errors.Is(err, ErrClosed) {
		// The Source refused to start a refresh: the process is stopping.
		c.log.Debug().Str("subject", s.String()).Str("method", c.src.Method()).Msg("token request not started: shutting down")
		return Token{}, err
	}
	if err != nil {
		ne := &entry{err: err}
		if old != nil {
			ne.failures = old.failures + 1
			if old.usable(now) { // keep serving the token we have while renewing fails
				ne.tok, ne.useUntil, ne.refreshAt, ne.login = old.tok, old.useUntil, old.refreshAt, old.login
			}
		} else {
			ne.failures = 1
		}
		wait := c.backoff(err, ne.failures)
		ne.retryAt = now.Add(wait)
		c.lru.Add(s, ne)
		ev := c.log.Warn()
		if errors.Is(err, ErrConfig) || errors.Is(err, ErrGrant) {
			ev = c.log.Error()
		}
		ev.Str("subject", s.String()).Str("method", c.src.Method()).Int("failures", ne.failures).
			Dur("retry_in_ms", wait).Err(err).Msg("token request failed")
		return Token{}, err
	}
	if le, ok := c.src.(LoginEpocher); ok && !shared && le.LoginEpoch() != login {
		// Another login replaced the one this token belongs to after the
		// Source handed it out (an oauth replica followed a login made on
		// another): the callers that waited get it, but it is not kept, or
		// it would outlive the Purge that the new login causes.
		c.log.Debug().Str("subject", s.String()).Msg("token not kept: the login changed while it was fetched")
		return tok, nil
	}
	ne := newEntry(tok, obtained, now)
	ne.login = login
	c.lru.Add(s, ne)
	c.log.Debug().Str("subject", s.String()).Str("method", c.src.Method()).
		Time("expires", tok.Expiry).Dur("took_ms", now.Sub(start)).Msg("token obtained")
	return tok, nil
}

// backoff is how long to wait after the n-th failure in a row: exponential with
// jitter for outages, longer for errors that only a person can fix.
func (c *Cache) backoff(err error, n int) time.Duration {
	if errors.Is(err, ErrLoginRequired) {
		return 0 // a local answer, not a request to Box: nothing to spare
	}
	base, max := c.o.BackoffBase, c.o.BackoffMax
	if errors.Is(err, ErrConfig) || errors.Is(err, ErrGrant) {
		base = 10 * base
	}
	d := base
	for i := 1; i < n && d < max; i++ {
		d *= 2
	}
	d = min(d, max)
	var te *TokenError
	if errors.As(err, &te) && te.RetryAfter > d {
		d = min(te.RetryAfter, max)
	}
	return d/2 + rand.N(d/2+1) // jitter: between half and all of d
}

// newEntry decides when tok is renewed and when it stops being used. The
// renewal starts a lead before expiry (a fifth of the lifetime, at most five
// minutes, plus jitter so that many subjects do not renew at once); the token
// is not handed out in its last moments (a tenth of its life, at most 30s).
func newEntry(tok Token, obtained, now time.Time) *entry {
	e := &entry{tok: tok}
	if tok.Expiry.IsZero() {
		return e
	}
	life := tok.Expiry.Sub(obtained)
	if life <= 0 || !now.Before(tok.Expiry) {
		e.useUntil = now
		return e
	}
	lead := renewLead(life)
	e.refreshAt = tok.Expiry.Add(-lead - rand.N(lead/2+1))
	e.useUntil = tok.Expiry.Add(-min(life/10, 30*time.Second))
	return e
}

// renewLead is how long before expiry a token of that lifetime is renewed (plus
// up to half as much jitter).
func renewLead(life time.Duration) time.Duration { return min(life/5, 5*time.Minute) }

// sharedFresh reports whether a token from the fleet is one that no replica
// would renew yet: older ones are renewed (once, under the fleet's lock).
func sharedFresh(tok Token, obtained, now time.Time) bool {
	if tok.Expiry.IsZero() {
		return true
	}
	life := tok.Expiry.Sub(obtained)
	if life <= 0 {
		return false
	}
	lead := renewLead(life)
	return now.Before(tok.Expiry.Add(-lead - lead/2))
}

// fetchShared gets s's token through the fleet: from Redis when a fresh one is
// there; else one replica (the one that takes the subject's lock) asks Box and
// stores the answer, while the others wait for it to appear. An ErrFleet error
// means Redis could not help; any other error is Box's answer.
func (c *Cache) fetchShared(ctx context.Context, s Subject, start time.Time, rejected string) (Token, time.Time, error) {
	sh := c.o.Shared
	waited := false
	// Waiting for another replica ends at half the fetch timeout, so that a
	// request of our own still fits in the rest.
	wctx, cancel := context.WithTimeout(ctx, c.o.FetchTimeout/2)
	defer cancel()
	for {
		tok, obtained, ok, err := sh.Get(wctx, s)
		if err != nil {
			return Token{}, time.Time{}, err
		}
		now := c.o.Now()
		if ok && sharedFresh(tok, obtained, now) && tok.access != rejected {
			c.o.Metrics.FleetCache(true)
			if waited {
				c.o.Metrics.FleetLockWait(now.Sub(start))
			}
			return tok, obtained, nil
		}
		unlock, held, err := sh.TryLock(wctx, s)
		if err != nil {
			return Token{}, time.Time{}, err
		}
		if held {
			defer unlock()
			if waited {
				c.o.Metrics.FleetLockWait(c.o.Now().Sub(start))
			}
			// Another replica may have stored one between Get and TryLock.
			if tok, obtained, ok, err := sh.Get(ctx, s); err == nil && ok && sharedFresh(tok, obtained, c.o.Now()) && tok.access != rejected {
				c.o.Metrics.FleetCache(true)
				return tok, obtained, nil
			}
			c.o.Metrics.FleetCache(false)
			obtained := c.o.Now()
			tok, err := c.src.Token(ctx, s)
			if err != nil {
				return Token{}, time.Time{}, err
			}
			if err := sh.Put(ctx, s, tok, obtained); err != nil {
				c.log.Warn().Str("subject", s.String()).Err(err).Msg("fleet: cannot share a new token through Redis")
			}
			return tok, obtained, nil
		}
		waited = true
		select {
		case <-wctx.Done():
			// The holder takes too long (it may have died; its lease ends
			// soon): fetch alone rather than fail the request.
			return Token{}, time.Time{}, fmt.Errorf("%w: waited for another replica's token request", ErrFleet)
		case <-time.After(20*time.Millisecond + rand.N(30*time.Millisecond)):
		}
	}
}

func (e *entry) usable(now time.Time) bool {
	return !e.tok.IsZero() && (e.useUntil.IsZero() || now.Before(e.useUntil))
}

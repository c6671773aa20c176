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
	Size         int              // subjects kept (default 1000)
	FetchTimeout time.Duration    // bounds one token request (default 10s)
	BackoffBase  time.Duration    // first wait after a failure (default 1s)
	BackoffMax   time.Duration    // longest wait (default 60s)
	Now          func() time.Time // default time.Now
	Metrics      *metrics.Metrics
	Logger       zerolog.Logger
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
		o.Size = 1000
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
	l, err := lru.NewWithEvict(o.Size, func(Subject, *entry) { o.Metrics.CacheEviction() })
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
				e.refreshing.CompareAndSwap(false, true) {
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
	// Replace rather than Remove: Remove would count as an eviction.
	c.lru.Add(s, &entry{failures: e.failures})
	return true
}

// Purge forgets every token and failure (after a new login).
func (c *Cache) Purge() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range c.lru.Keys() {
		c.lru.Add(k, &entry{})
	}
}

func (c *Cache) renew(s Subject) {
	_, _, _ = c.flights.Do(s.String(), func() (any, error) { return c.fetch(s) })
}

// fetch asks the Source for s's token and stores the outcome. It runs in a
// single flight per subject, under its own timeout: a caller that gives up
// does not cancel the request the others wait for.
func (c *Cache) fetch(s Subject) (any, error) {
	start := c.o.Now()
	if e, ok := c.lru.Peek(s); ok && e.usable(start) && (e.refreshAt.IsZero() || start.Before(e.refreshAt)) {
		return e.tok, nil // another flight stored a fresh token just before this one began
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.o.FetchTimeout)
	defer cancel()
	tok, err := c.src.Token(ctx, s)
	now := c.o.Now()

	c.mu.Lock()
	defer c.mu.Unlock()
	old, _ := c.lru.Peek(s)
	if err != nil {
		ne := &entry{err: err}
		if old != nil {
			ne.failures = old.failures + 1
			if old.usable(now) { // keep serving the token we have while renewing fails
				ne.tok, ne.useUntil, ne.refreshAt = old.tok, old.useUntil, old.refreshAt
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
	c.lru.Add(s, newEntry(tok, now))
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
func newEntry(tok Token, now time.Time) *entry {
	e := &entry{tok: tok}
	if tok.Expiry.IsZero() {
		return e
	}
	life := tok.Expiry.Sub(now)
	if life <= 0 {
		e.useUntil = now
		return e
	}
	lead := min(life/5, 5*time.Minute)
	e.refreshAt = tok.Expiry.Add(-lead - rand.N(lead/2+1))
	e.useUntil = tok.Expiry.Add(-min(life/10, 30*time.Second))
	return e
}

func (e *entry) usable(now time.Time) bool {
	return !e.tok.IsZero() && (e.useUntil.IsZero() || now.Before(e.useUntil))
}

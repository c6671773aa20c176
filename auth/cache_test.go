package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// countingSource hands out numbered tokens after an optional delay.
type countingSource struct {
	calls atomic.Int64
	delay time.Duration
	ttl   time.Duration
	err   atomic.Pointer[error]
}

func (s *countingSource) Method() string { return "test" }

func (s *countingSource) Token(ctx context.Context, sub Subject) (Token, error) {
	n := s.calls.Add(1)
	if s.delay > 0 {
		select {
		case <-time.After(s.delay):
		case <-ctx.Done():
			return Token{}, ctx.Err()
		}
	}
	if e := s.err.Load(); e != nil {
		return Token{}, *e
	}
	return NewToken(fmt.Sprintf("tok-%s-%d", sub.ID, n), time.Now().Add(s.ttl)), nil
}

func newTestCache(t *testing.T, src Source, o CacheOptions) *Cache {
	t.Helper()
	c, err := NewCache(src, o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestThousandConcurrentCallersCauseOneTokenRequest(t *testing.T) {
	src := &countingSource{delay: 50 * time.Millisecond, ttl: time.Hour}
	c := newTestCache(t, src, CacheOptions{})
	var wg sync.WaitGroup
	var failures atomic.Int64
	for range 1000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := c.Token(context.Background(), Subject{Enterprise, "1"})
			if err != nil || tok.Access() != "tok-1-1" {
				failures.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := src.calls.Load(); n != 1 {
		t.Fatalf("token requests = %d, want 1", n)
	}
	if failures.Load() != 0 {
		t.Fatalf("%d callers did not get the shared token", failures.Load())
	}
}

func TestCachedTokenIsReusedUntilShortlyBeforeExpiry(t *testing.T) {
	src := &countingSource{ttl: time.Hour}
	c := newTestCache(t, src, CacheOptions{})
	s := Subject{User, "42"}
	for range 10 {
		if _, err := c.Token(context.Background(), s); err != nil {
			t.Fatal(err)
		}
	}
	if n := src.calls.Load(); n != 1 {
		t.Fatalf("token requests = %d, want 1", n)
	}
}

func TestTokenIsRenewedAheadOfExpiryWithoutMakingCallersWait(t *testing.T) {
	src := &countingSource{ttl: time.Hour}
	now := time.Now()
	var clock atomic.Pointer[time.Time]
	clock.Store(&now)
	c := newTestCache(t, src, CacheOptions{Now: func() time.Time { return *clock.Load() }})
	s := Subject{Enterprise, "1"}
	first, _ := c.Token(context.Background(), s)
	later := now.Add(57 * time.Minute) // inside the refresh lead (5 to 7.5 min before expiry)
	clock.Store(&later)
	got, err := c.Token(context.Background(), s)
	if err != nil || got.Access() != first.Access() {
		t.Fatalf("during renewal the caller should get the still-valid token, got %v %v", got.Access(), err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for src.calls.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if src.calls.Load() != 2 {
		t.Fatalf("no background renewal happened")
	}
	for time.Now().Before(deadline) {
		if tok, _ := c.Token(context.Background(), s); tok.Access() != first.Access() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("the renewed token never replaced the old one")
}

func TestExpiredTokenIsNeverHandedOut(t *testing.T) {
	src := &countingSource{ttl: time.Hour}
	now := time.Now()
	var clock atomic.Pointer[time.Time]
	clock.Store(&now)
	c := newTestCache(t, src, CacheOptions{Now: func() time.Time { return *clock.Load() }})
	s := Subject{Enterprise, "1"}
	first, _ := c.Token(context.Background(), s)
	later := now.Add(time.Hour - 10*time.Second)
	clock.Store(&later)
	got, err := c.Token(context.Background(), s)
	if err != nil || got.Access() == first.Access() {
		t.Fatalf("a token 10s from expiry was handed out (%v)", err)
	}
}

func TestInvalidateDropsOnlyTheRejectedToken(t *testing.T) {
	src := &countingSource{ttl: time.Hour}
	c := newTestCache(t, src, CacheOptions{})
	s := Subject{Enterprise, "1"}
	old, _ := c.Token(context.Background(), s)
	if !c.Invalidate(s, old.Access()) {
		t.Fatal("current token was not invalidated")
	}
	fresh, _ := c.Token(context.Background(), s)
	if fresh.Access() == old.Access() {
		t.Fatal("got the rejected token again")
	}
	if c.Invalidate(s, old.Access()) {
		t.Fatal("a stale 401 dropped the newer token")
	}
	if again, _ := c.Token(context.Background(), s); again.Access() != fresh.Access() {
		t.Fatal("the newer token was replaced")
	}
}

func TestFailingEndpointIsBackedOffPerSubjectAndRecovers(t *testing.T) {
	src := &countingSource{ttl: time.Hour}
	outage := error(&TokenError{Kind: ErrUnavailable, Status: 503})
	src.err.Store(&outage)
	c := newTestCache(t, src, CacheOptions{BackoffBase: 50 * time.Millisecond, BackoffMax: 100 * time.Millisecond})
	s := Subject{Enterprise, "1"}
	for range 20 {
		_, err := c.Token(context.Background(), s)
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("err = %v, want ErrUnavailable", err)
		}
	}
	if n := src.calls.Load(); n != 1 {
		t.Fatalf("token requests during back-off = %d, want 1", n)
	}
	var be *BackoffError
	if _, err := c.Token(context.Background(), s); !errors.As(err, &be) {
		t.Fatalf("err = %v, want a BackoffError", err)
	}
	src.err.Store(nil)
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := c.Token(context.Background(), s); err == nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the cache did not recover after the endpoint came back")
}

func TestCallerThatGivesUpDoesNotCancelTheSharedRequest(t *testing.T) {
	src := &countingSource{delay: 100 * time.Millisecond, ttl: time.Hour}
	c := newTestCache(t, src, CacheOptions{})
	s := Subject{Enterprise, "1"}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := c.Token(ctx, s); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the caller's deadline", err)
	}
	tok, err := c.Token(context.Background(), s)
	if err != nil || tok.IsZero() {
		t.Fatalf("second caller: %v", err)
	}
	if n := src.calls.Load(); n != 1 {
		t.Fatalf("token requests = %d, want 1 (the first was not cancelled)", n)
	}
}

func TestCacheKeepsAtMostSizeSubjects(t *testing.T) {
	src := &countingSource{ttl: time.Hour}
	c := newTestCache(t, src, CacheOptions{Size: 100})
	for i := range 10000 {
		if _, err := c.Token(context.Background(), Subject{User, fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if c.Len() != 100 {
		t.Fatalf("cache holds %d subjects, want 100", c.Len())
	}
}

func TestCacheRefusesToWrapItself(t *testing.T) {
	c := newTestCache(t, &countingSource{}, CacheOptions{})
	if _, err := NewCache(c, CacheOptions{}); err == nil {
		t.Fatal("a Cache wrapped a Cache")
	}
}

func TestTokenNeverPrintsItsSecret(t *testing.T) {
	tok := NewToken("s3cr3t-access-token", time.Now())
	for _, f := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
		if out := fmt.Sprintf(f, tok); strings.Contains(out, "s3cr3t") {
			t.Fatalf("%s printed the token: %s", f, out)
		}
	}
}

func BenchmarkCacheHit(b *testing.B) {
	c, _ := NewCache(&countingSource{ttl: time.Hour}, CacheOptions{})
	s := Subject{Enterprise, "1"}
	_, _ = c.Token(context.Background(), s)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Token(ctx, s); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func TestEvictingValidTokensFasterThanTheyExpireIsWarnedOnce(t *testing.T) {
	var logs strings.Builder
	src := &countingSource{ttl: time.Hour}
	c := newTestCache(t, src, CacheOptions{Size: 10, Logger: zerolog.New(&logs)})
	for i := range 35 {
		if _, err := c.Token(context.Background(), Subject{User, fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(logs.String(), "token cache too small"); n != 1 {
		t.Fatalf("%d warnings after 25 valid evictions from a 10-entry cache, want 1:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "BOXPROXY_TOKEN_CACHE_SIZE") {
		t.Error("the warning does not name BOXPROXY_TOKEN_CACHE_SIZE")
	}
}

// gatedSource answers only once its gate is closed, and says when a
// request has arrived.
type gatedSource struct {
	calls   atomic.Int64
	arrived chan struct{}
	gate    chan struct{}
}

func (s *gatedSource) Method() string { return "test" }

func (s *gatedSource) Token(_ context.Context, sub Subject) (Token, error) {
	n := s.calls.Add(1)
	s.arrived <- struct{}{}
	<-s.gate // like a refresh already at Box: the answer must be waited for
	return NewToken(fmt.Sprintf("tok-%s-%d", sub.ID, n), time.Now().Add(time.Hour)), nil
}

func TestCacheCloseWaitsForTheRenewalInFlightAndStartsNoMore(t *testing.T) {
	src := &gatedSource{arrived: make(chan struct{}, 8), gate: make(chan struct{})}
	now := time.Now()
	var clock atomic.Pointer[time.Time]
	clock.Store(&now)
	c := newTestCache(t, src, CacheOptions{Now: func() time.Time { return *clock.Load() }})
	s := Subject{Enterprise, "1"}
	first := make(chan Token, 1)
	go func() { tok, _ := c.Token(context.Background(), s); first <- tok }()
	<-src.arrived
	src.gate <- struct{}{}
	old := <-first

	// A hit inside the renewal lead starts a renewal in the background,
	// and the shutdown begins while it is at "Box".
	later := now.Add(57 * time.Minute)
	clock.Store(&later)
	if tok, err := c.Token(context.Background(), s); err != nil || tok.Access() != old.Access() {
		t.Fatalf("during the renewal: %v %v", tok.Access(), err)
	}
	<-src.arrived
	closed := make(chan error, 1)
	go func() { closed <- c.Close(context.Background()) }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while a token request was in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	// Closed: a miss starts no token request; a cached token is still handed out.
	if _, err := c.Token(context.Background(), Subject{Enterprise, "2"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("a miss after Close: %v, want ErrClosed", err)
	}
	close(src.gate)
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	tok, err := c.Token(context.Background(), s)
	if err != nil || tok.Access() == old.Access() {
		t.Fatalf("after Close the renewal's answer is not stored: %v %v", tok.Access(), err)
	}
	if n := src.calls.Load(); n != 2 {
		t.Fatalf("%d token requests, want 2 (the first and the renewal)", n)
	}
}

func TestCacheStopRenewingStartsNoBackgroundRenewalButServes(t *testing.T) {
	src := &countingSource{ttl: time.Hour}
	now := time.Now()
	var clock atomic.Pointer[time.Time]
	clock.Store(&now)
	c := newTestCache(t, src, CacheOptions{Now: func() time.Time { return *clock.Load() }})
	s := Subject{Enterprise, "1"}
	first, _ := c.Token(context.Background(), s)
	c.StopRenewing()
	later := now.Add(57 * time.Minute)
	clock.Store(&later)
	if tok, err := c.Token(context.Background(), s); err != nil || tok.Access() != first.Access() {
		t.Fatalf("after StopRenewing: %v %v", tok.Access(), err)
	}
	// A request still being served gets a token for a new subject.
	if _, err := c.Token(context.Background(), Subject{Enterprise, "2"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if n := src.calls.Load(); n != 2 {
		t.Fatalf("%d token requests, want 2: no renewal in the background after StopRenewing", n)
	}
	if err := c.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestCacheCloseGivesUpWhenItsContextEnds(t *testing.T) {
	src := &gatedSource{arrived: make(chan struct{}, 8), gate: make(chan struct{})}
	defer close(src.gate)
	logs := &syncBuffer{}
	c := newTestCache(t, src, CacheOptions{Logger: zerolog.New(logs)})
	go func() { _, _ = c.Token(context.Background(), Subject{Enterprise, "1"}) }()
	<-src.arrived
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := c.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close: %v, want its context's deadline", err)
	}
	if !strings.Contains(logs.String(), "gave up waiting") {
		t.Fatalf("no log line says that the shutdown gave up waiting:\n%s", logs)
	}
}

// loginSource is a Source whose logins change (as oauth's do): each Token
// call answers once release is sent a step, which says whether another
// login was taken before the answer (inside the call, as an oauth replica
// that follows the fleet while it serves the call) or just after it (by
// another goroutine, before the Cache stores the answer).
type loginSource struct {
	calls   atomic.Int64
	epoch   atomic.Uint64
	release chan loginStep
}

type loginStep struct {
	tok           string
	before, after bool // another login taken before / after the answer
}

func (s *loginSource) Method() string     { return "test" }
func (s *loginSource) LoginEpoch() uint64 { return s.epoch.Load() }

func (s *loginSource) Token(ctx context.Context, _ Subject) (Token, error) {
	s.calls.Add(1)
	step := <-s.release
	if step.before {
		s.epoch.Add(1)
	}
	reportLogin(ctx, s.epoch.Load())
	if step.after {
		s.epoch.Add(1)
	}
	return NewToken(step.tok, time.Now().Add(time.Hour)), nil
}

// A token whose login another one replaced while it was on its way to the
// Cache is given to the callers that waited but not kept, so that it does
// not outlive the new login's Purge; a token of the login taken inside the
// call itself is kept (no needless second request, which in a fleet with
// Redis down could not be made).
func TestATokenWhoseLoginWasReplacedOnItsWayIsNotKept(t *testing.T) {
	src := &loginSource{release: make(chan loginStep, 3)}
	c := newTestCache(t, src, CacheOptions{})
	s := Subject{User, "7"}
	get := func() string {
		tok, err := c.Token(context.Background(), s)
		if err != nil {
			t.Fatal(err)
		}
		return tok.Access()
	}
	src.release <- loginStep{tok: "token-of-login-A", after: true}
	if tok := get(); tok != "token-of-login-A" {
		t.Fatalf("the waiting caller got %q", tok)
	}
	src.release <- loginStep{tok: "token-of-login-B", before: true}
	if tok := get(); tok != "token-of-login-B" {
		t.Fatalf("after the login changed: %q; want the current login's token (the previous one was not kept)", tok)
	}
	if tok := get(); tok != "token-of-login-B" {
		t.Fatalf("then: %q", tok)
	}
	if n := src.calls.Load(); n != 2 {
		t.Errorf("%d token requests, want 2: the token of the login taken inside the call is kept", n)
	}
}

// The Purge a new login causes comes after the login itself: a token of the
// new login that a waiting request fetched in between is kept, so that the
// next request needs no refresh (in a fleet with Redis down it could make
// none).
func TestAPurgeKeepsTheTokenOfTheLoginItFollows(t *testing.T) {
	src := &loginSource{release: make(chan loginStep, 2)}
	c := newTestCache(t, src, CacheOptions{})
	s := Subject{User, "7"}
	src.release <- loginStep{tok: "token-of-login-B", before: true}
	if tok, err := c.Token(context.Background(), s); err != nil || tok.Access() != "token-of-login-B" {
		t.Fatalf("first: %q, %v", tok.Access(), err)
	}
	src.release <- loginStep{tok: "a-second-request"} // what a needless second request would get
	c.Purge()                                         // the login's hook, late
	if tok, err := c.Token(context.Background(), s); err != nil || tok.Access() != "token-of-login-B" {
		t.Fatalf("after the purge: %q, %v", tok.Access(), err)
	}
	select {
	case <-src.release:
	default:
	}
	if n := src.calls.Load(); n != 1 {
		t.Errorf("%d token requests, want 1: the new login's token survives its own Purge", n)
	}
	// A later login's Purge does drop it.
	src.epoch.Add(1)
	c.Purge()
	src.release <- loginStep{tok: "token-of-login-C"}
	if tok, err := c.Token(context.Background(), s); err != nil || tok.Access() != "token-of-login-C" {
		t.Fatalf("after the next login: %q, %v", tok.Access(), err)
	}
}

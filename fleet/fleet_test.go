package fleet_test

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

	"github.com/boxproxy/boxproxy/auth"
	"github.com/boxproxy/boxproxy/fleet"
	"github.com/boxproxy/boxproxy/internal/redistest"
	"github.com/boxproxy/boxproxy/seal"
)

const storeKey = "fleet test store key, 32+ characters long"

func open(t *testing.T, url, key string, lease time.Duration) *fleet.Fleet {
	t.Helper()
	sl, err := seal.New(key, "fleet")
	if err != nil {
		t.Fatal(err)
	}
	f, err := fleet.Open(fleet.Options{URL: url, Seal: sl, App: "ccg\x00test", Lease: lease, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}

// countingSource is Box's token endpoint, slow enough that replicas overlap.
type countingSource struct {
	n     atomic.Int64
	delay time.Duration
	ttl   time.Duration
}

func (c *countingSource) Token(ctx context.Context, s auth.Subject) (auth.Token, error) {
	n := c.n.Add(1)
	select {
	case <-time.After(c.delay):
	case <-ctx.Done():
		return auth.Token{}, ctx.Err()
	}
	return auth.NewToken(fmt.Sprintf("IssuedToken%s%dXYZ", s.ID, n), time.Now().Add(c.ttl)), nil
}

func (c *countingSource) Method() string { return "ccg" }

func replica(t *testing.T, src auth.Source, f *fleet.Fleet) *auth.Cache {
	t.Helper()
	c, err := auth.NewCache(src, auth.CacheOptions{Shared: f.Cache(), Logger: zerolog.Nop(), FetchTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestReplicasShareOneTokenRequestPerSubject(t *testing.T) {
	r := redistest.Start(t)
	src := &countingSource{delay: 50 * time.Millisecond, ttl: time.Hour}
	var caches []*auth.Cache
	for range 4 {
		caches = append(caches, replica(t, src, open(t, r.URL(), storeKey, 0)))
	}
	subjects := []auth.Subject{{Type: auth.User, ID: "2001"}, {Type: auth.User, ID: "2002"}, {Type: auth.Enterprise, ID: "500100"}}
	var wg sync.WaitGroup
	tokens := sync.Map{}
	for _, c := range caches {
		for _, s := range subjects {
			for range 5 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					tok, err := c.Token(context.Background(), s)
					if err != nil {
						t.Error(err)
						return
					}
					if prev, loaded := tokens.LoadOrStore(s, tok.Access()); loaded && prev != tok.Access() {
						t.Errorf("%s: replicas got different tokens", s)
					}
				}()
			}
		}
	}
	wg.Wait()
	if n := src.n.Load(); n != int64(len(subjects)) {
		t.Fatalf("%d token requests for %d subjects across 4 replicas, want one each", n, len(subjects))
	}
	// A replica started later asks nobody.
	late := replica(t, src, open(t, r.URL(), storeKey, 0))
	for _, s := range subjects {
		if _, err := late.Token(context.Background(), s); err != nil {
			t.Fatal(err)
		}
	}
	if n := src.n.Load(); n != int64(len(subjects)) {
		t.Fatalf("the late replica made %d token requests", n-int64(len(subjects)))
	}
	// Nothing in Redis is a token in plaintext.
	dump := r.Dump(t)
	tokens.Range(func(_, v any) bool {
		if strings.Contains(dump, v.(string)) {
			t.Errorf("Redis holds a token in plaintext:\n%s", dump)
		}
		return true
	})
}

func TestRejectedTokenIsDroppedForTheFleetOnlyIfNotReplaced(t *testing.T) {
	r := redistest.Start(t)
	src := &countingSource{ttl: time.Hour}
	a, b := replica(t, src, open(t, r.URL(), storeKey, 0)), replica(t, src, open(t, r.URL(), storeKey, 0))
	s := auth.Subject{Type: auth.User, ID: "2001"}
	t1, _ := a.Token(context.Background(), s)
	if t2, _ := b.Token(context.Background(), s); t2.Access() != t1.Access() {
		t.Fatal("b did not get a's token")
	}
	if !a.Invalidate(s, t1.Access()) {
		t.Fatal("a did not drop its rejected token")
	}
	t3, _ := a.Token(context.Background(), s)
	if t3.Access() == t1.Access() || src.n.Load() != 2 {
		t.Fatalf("after a 401: same token %v, %d requests", t3.Access() == t1.Access(), src.n.Load())
	}
	// b's 401 on the old token must not drop the newer one a stored.
	b.Invalidate(s, t1.Access())
	t4, _ := b.Token(context.Background(), s)
	if t4.Access() != t3.Access() || src.n.Load() != 2 {
		t.Fatalf("b's late 401 cost a token request (%d) or another token", src.n.Load())
	}
}

func TestEntrySealedWithAnotherKeyCountsAsMissing(t *testing.T) {
	r := redistest.Start(t)
	src := &countingSource{ttl: time.Hour}
	a := replica(t, src, open(t, r.URL(), storeKey, 0))
	other := replica(t, src, open(t, r.URL(), "a different key of at least 32 chars", 0))
	s := auth.Subject{Type: auth.User, ID: "2001"}
	t1, _ := a.Token(context.Background(), s)
	t2, err := other.Token(context.Background(), s)
	if err != nil || t2.Access() == t1.Access() || src.n.Load() != 2 {
		t.Fatalf("a replica with another key: err %v, same token %v, %d requests", err, t2.Access() == t1.Access(), src.n.Load())
	}
}

func TestLoginWritesAreFencedAndTheLockIsExclusive(t *testing.T) {
	r := redistest.Start(t)
	ctx := context.Background()
	// A lease long enough that renewals (every third of it) keep up on a
	// loaded machine.
	const lease = 1500 * time.Millisecond
	l1, l2 := open(t, r.URL(), storeKey, lease).Login(), open(t, r.URL(), storeKey, lease).Login()
	v1, err := l1.Save(ctx, []byte(`{"version":1}`), 0)
	if err != nil || v1 != 1 {
		t.Fatalf("first save: %d, %v", v1, err)
	}
	if _, err := l2.Save(ctx, []byte(`{"old":true}`), 0); !errors.Is(err, auth.ErrStale) {
		t.Fatalf("a write on an old version: %v, want ErrStale", err)
	}
	data, v, err := l2.Load(ctx)
	if err != nil || v != 1 || string(data) != `{"version":1}` {
		t.Fatalf("Load = %q, %d, %v", data, v, err)
	}
	unlock, err := l1.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Held past its lease: renewal keeps it.
	time.Sleep(lease + 500*time.Millisecond)
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	if _, err := l2.Lock(short); !errors.Is(err, auth.ErrFleet) {
		t.Fatalf("a second holder got the lock: %v", err)
	}
	cancel()
	c := r.Client()
	var lockKey string
	for _, k := range c.Keys(ctx, "*").Val() {
		if strings.HasSuffix(k, "login") && !strings.HasSuffix(k, "lock:login") {
			lockKey = strings.TrimSuffix(k, "login") + "lock:login"
		}
	}
	if n := c.Exists(ctx, lockKey).Val(); n != 1 {
		t.Fatalf("the held lock is not in Redis under %q", lockKey)
	}
	// Unlocking frees it in Redis (not by its lease running out), and the
	// next holder takes it.
	unlock()
	if n := c.Exists(ctx, lockKey).Val(); n != 0 {
		t.Fatalf("the lock is still in Redis after unlock")
	}
	unlock2, err := l2.Lock(ctx)
	if err != nil {
		t.Fatalf("the freed lock was not taken: %v", err)
	}
	unlock2()

	// A holder that dies (its lease is not renewed) loses the lock when the
	// lease ends.
	c.Set(ctx, lockKey, "dead-owner", 600*time.Millisecond)
	start := time.Now()
	unlock3, err := l1.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("took a dead holder's lock after %s, before its lease ended", d)
	}
	unlock3()
}

func TestRedisDownFailsFastAndSharingResumes(t *testing.T) {
	r := redistest.Start(t)
	src := &countingSource{ttl: time.Hour}
	f := open(t, r.URL(), storeKey, 0)
	c := replica(t, src, f)
	s := auth.Subject{Type: auth.User, ID: "2001"}
	if _, err := c.Token(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	r.Kill()
	other := auth.Subject{Type: auth.User, ID: "2002"}
	start := time.Now()
	if _, err := c.Token(context.Background(), other); err != nil {
		t.Fatalf("with Redis down, a new subject's token failed: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("a token with Redis down took %s", d)
	}
	if f.Degraded() == "" {
		t.Error("Degraded is empty while Redis is down")
	}
	r.Restart()
	waitFor(t, func() bool { return f.Degraded() == "" }, "sharing to resume")
	third := auth.Subject{Type: auth.User, ID: "2003"}
	if _, err := c.Token(context.Background(), third); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r.Dump(t), ":2003") {
		t.Error("after Redis returned, a new token was not shared")
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestURLErrorsDoNotShowThePassword(t *testing.T) {
	sl, _ := seal.New(storeKey, "fleet")
	for _, u := range []string{"http://h:1", "redis://:Sup3rSecretPw@h:1/notanumber", "redis://u:Sup3rSecretPw@h:1/0?bogus_option=1",
		"redis://h:1/0?master_name=m&password=Sup3rSecretPw&bogus=1", "redis://h:1/x?addr=h:2&password=Sup3rSecretPw"} {
		_, err := fleet.Open(fleet.Options{URL: u, Seal: sl, Logger: zerolog.Nop()})
		if err == nil {
			t.Errorf("%s: no error", strings.ReplaceAll(u, "Sup3rSecretPw", "x"))
			continue
		}
		if strings.Contains(err.Error(), "Sup3rSecretPw") {
			t.Errorf("error shows the password: %v", err)
		}
	}
	// A usable URL is logged, without its passwords.
	logs := &syncLog{}
	f, err := fleet.Open(fleet.Options{URL: "redis://u:Sup3rSecretPw@127.0.0.1:1/0?master_name=m&password=Sup3rSecretPw", Seal: sl, Logger: zerolog.New(logs), Timeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	if strings.Contains(logs.String(), "Sup3rSecretPw") {
		t.Errorf("the log shows a password: %s", logs.String())
	}
}

func TestReplicasShareTokensThroughSentinel(t *testing.T) {
	r := redistest.Start(t)
	sn := redistest.StartSentinel(t, r)
	url := "redis://" + sn.Addr + "/0?master_name=mymaster"
	src := &countingSource{delay: 20 * time.Millisecond, ttl: time.Hour}
	a, b := replica(t, src, open(t, url, storeKey, 0)), replica(t, src, open(t, url, storeKey, 0))
	s := auth.Subject{Type: auth.User, ID: "2001"}
	t1, err := a.Token(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	t2, err := b.Token(context.Background(), s)
	if err != nil || t2.Access() != t1.Access() || src.n.Load() != 1 {
		t.Fatalf("through Sentinel: err %v, same token %v, %d token requests", err, t2.Access() == t1.Access(), src.n.Load())
	}
	if !strings.Contains(r.Dump(t), ":token:user:2001") {
		t.Error("the token is not in the master that Sentinel names")
	}
}

func TestReplicasShareTokensAndTheLoginThroughACluster(t *testing.T) {
	nodes := redistest.StartCluster(t, 3)
	url := "redis://" + nodes[0].Addr + "/0?addr=" + nodes[1].Addr + "&addr=" + nodes[2].Addr
	src := &countingSource{delay: 20 * time.Millisecond, ttl: time.Hour}
	fa, fb := open(t, url, storeKey, 0), open(t, url, storeKey, 0)
	a, b := replica(t, src, fa), replica(t, src, fb)
	for _, id := range []string{"2001", "2002", "2003", "2004"} {
		s := auth.Subject{Type: auth.User, ID: id}
		t1, err := a.Token(context.Background(), s)
		if err != nil {
			t.Fatal(err)
		}
		if t2, err := b.Token(context.Background(), s); err != nil || t2.Access() != t1.Access() {
			t.Fatalf("%s through the cluster: err %v, same token %v", id, err, t2.Access() == t1.Access())
		}
	}
	if n := src.n.Load(); n != 4 {
		t.Fatalf("%d token requests for 4 subjects on 2 replicas, want 4", n)
	}
	// The login's fenced write and lock (Lua scripts, one hash slot).
	ctx := context.Background()
	unlock, err := fa.Login().Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	v, err := fa.Login().Save(ctx, []byte(`{"version":1}`), 0)
	unlock()
	if err != nil || v != 1 {
		t.Fatalf("fenced save through the cluster: %d, %v", v, err)
	}
	if _, err := fb.Login().Save(ctx, []byte(`{"version":1}`), 0); !errors.Is(err, auth.ErrStale) {
		t.Fatalf("a stale save through the cluster: %v, want ErrStale", err)
	}
}

// syncLog is a log buffer safe for go-redis's goroutines.
type syncLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

package fleet_test

import (
	"context"
	"fmt"
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

func openB(b *testing.B, url string) *fleet.Fleet {
	sl, _ := seal.New(storeKey, "fleet")
	f, err := fleet.Open(fleet.Options{URL: url, Seal: sl, App: "bench", Logger: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = f.Close() })
	return f
}

func cacheB(b *testing.B, src auth.Source, size int, shared auth.SharedCache) *auth.Cache {
	c, err := auth.NewCache(src, auth.CacheOptions{Size: size, Shared: shared, Logger: zerolog.Nop(), FetchTimeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// BenchmarkLocalHit: a token in the replica's own cache, with and without a
// fleet behind it: a local hit never asks Redis, so both cost the same.
func BenchmarkLocalHit(b *testing.B) {
	r := redistest.Start(b)
	s := auth.Subject{Type: auth.User, ID: "2001"}
	for _, tc := range []struct {
		name   string
		shared auth.SharedCache
	}{{"alone", nil}, {"fleet", openB(b, r.URL()).Cache()}} {
		b.Run(tc.name, func(b *testing.B) {
			c := cacheB(b, &countingSource{ttl: time.Hour}, 10, tc.shared)
			if _, err := c.Token(context.Background(), s); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := c.Token(context.Background(), s); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkFleetHit: a local miss answered from Redis (the added latency of a
// fleet cache hit): a one-entry cache asked for two subjects in turn, so every
// look-up evicts the other subject and fetches it back from Redis.
func BenchmarkFleetHit(b *testing.B) {
	r := redistest.Start(b)
	src := &countingSource{ttl: time.Hour}
	c := cacheB(b, src, 1, openB(b, r.URL()).Cache())
	subjects := []auth.Subject{{Type: auth.User, ID: "2001"}, {Type: auth.User, ID: "2002"}}
	for _, s := range subjects {
		if _, err := c.Token(context.Background(), s); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		i++
		if _, err := c.Token(context.Background(), subjects[i%2]); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if n := src.n.Load(); n != 2 {
		b.Fatalf("%d token requests: the look-ups did not come from Redis", n)
	}
}

// BenchmarkTokenRequestsPerLifetime: N replicas serving the same subjects for
// several token lifetimes, alone and sharing Redis; reports the token
// requests per subject per lifetime that Box sees. It measures once (the
// loop that follows times nothing): a count, not a speed.
func BenchmarkTokenRequestsPerLifetime(b *testing.B) {
	r := redistest.Start(b)
	const replicas, subjects, lifetimes = 5, 20, 4
	const ttl = 500 * time.Millisecond
	for _, withRedis := range []bool{false, true} {
		name := "alone"
		if withRedis {
			name = "redis"
		}
		b.Run(fmt.Sprintf("%s/replicas=%d", name, replicas), func(b *testing.B) {
			var per float64
			{
				src := &countingSource{ttl: ttl}
				var caches []*auth.Cache
				for range replicas {
					var sh auth.SharedCache
					if withRedis {
						sh = openB(b, r.URL()).Cache()
					}
					caches = append(caches, cacheB(b, src, 100, sh))
				}
				var wg sync.WaitGroup
				var errs atomic.Int64
				deadline := time.Now().Add(lifetimes * ttl)
				for _, c := range caches {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := 0; time.Now().Before(deadline); i++ {
							s := auth.Subject{Type: auth.User, ID: fmt.Sprint(i % subjects)}
							if _, err := c.Token(context.Background(), s); err != nil {
								errs.Add(1)
							}
							time.Sleep(time.Millisecond)
						}
					}()
				}
				wg.Wait()
				if errs.Load() > 0 {
					b.Fatalf("%d look-ups failed", errs.Load())
				}
				per = float64(src.n.Load()) / subjects / lifetimes
				_ = r.Client().FlushAll(context.Background()).Err()
			}
			for b.Loop() {
			}
			b.ReportMetric(per, "token_requests/subject/lifetime")
		})
	}
}

// BenchmarkLoginSave: the fenced write of a rotated oauth login, from Box's
// answer to Redis's acknowledgement: the window in which a crash of the
// lock holder loses the login.
func BenchmarkLoginSave(b *testing.B) {
	r := redistest.Start(b)
	l := openB(b, r.URL()).Login()
	data := []byte(`{"version":1,"access_token":"` + fmt.Sprintf("%064d", 0) + `","refresh_token":"` + fmt.Sprintf("%064d", 1) + `"}`)
	v, err := l.Save(context.Background(), data, -1)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if v, err = l.Save(context.Background(), data, v); err != nil {
			b.Fatal(err)
		}
	}
}

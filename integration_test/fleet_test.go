package integration_test

// Many replicas sharing one Redis (BOXPROXY_REDIS_URL): real boxproxy
// processes, a real redis-server, the strict stand-in.

import (
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/boxproxy/boxproxy/fakebox"
	"github.com/boxproxy/boxproxy/internal/redistest"
)

const fleetStoreKey = "it-fleet-store-key-0123456789abcdefXYZ"

var fleetClient = &http.Client{Timeout: 20 * time.Second}

// startFleet runs n boxproxy binaries with env, all sharing r.
func startFleet(t *testing.T, box *fakebox.Box, r *redistest.Server, n int, env ...string) []*binaryProxy {
	t.Helper()
	var out []*binaryProxy
	for range n {
		out = append(out, startReplica(t, box, r, env...))
	}
	return out
}

func startReplica(t *testing.T, box *fakebox.Box, r *redistest.Server, env ...string) *binaryProxy {
	t.Helper()
	p := startBinary(t, box, append(append([]string{}, env...), "BOXPROXY_REDIS_URL="+r.URL(), "BOXPROXY_STORE_KEY="+fleetStoreKey)...)
	p.AddSecret(fleetStoreKey)
	return p
}

// fleetGet sends GET base+path with hdr (name, value pairs).
func fleetGet(t testing.TB, base, path string, hdr ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := fleetClient.Do(req)
	if err != nil {
		t.Errorf("GET %s%s: %v", base, path, err)
		return 0, ""
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// fleetSubject is a subject as a client names it: As-User, or none for the
// default subject (the enterprise).
type fleetSubject struct{ asUser, typ, id string }

var fleetSubjects = []fleetSubject{
	{"", "enterprise", testEnterpriseID},
	{userAlice, "user", userAlice},
	{userBob, "user", userBob},
	{userCarol, "user", userCarol},
}

func (s fleetSubject) hdr() []string {
	if s.asUser == "" {
		return nil
	}
	return []string{"As-User", s.asUser}
}

// hammer sends `each` concurrent requests per replica and subject and fails
// the test on any answer but 200.
func hammer(t *testing.T, procs []*binaryProxy, each int) {
	t.Helper()
	var wg sync.WaitGroup
	for _, p := range procs {
		for _, s := range fleetSubjects {
			for range each {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if status, body := fleetGet(t, p.URL, "/2.0/users/me", s.hdr()...); status != http.StatusOK {
						t.Errorf("%s as %q: %d %s", p.URL, s.asUser, status, body)
					}
				}()
			}
		}
	}
	wg.Wait()
}

func tokenCounts(box *fakebox.Box) map[string]int {
	out := map[string]int{}
	for _, s := range fleetSubjects {
		out[s.typ+":"+s.id] = box.CountTokenRequestsFor(s.typ, s.id)
	}
	return out
}

// checkRedisHoldsNoSecret fails when any issued token or secret is in Redis.
func checkRedisHoldsNoSecret(t *testing.T, r *redistest.Server, box *fakebox.Box, more ...string) {
	t.Helper()
	dump := r.Dump(t)
	if !strings.Contains(dump, "boxproxy:") {
		t.Fatalf("Redis holds no boxproxy key at all:\n%s", dump)
	}
	secrets := append(append(box.IssuedTokens(), testClientSecret, fleetStoreKey), more...)
	for _, s := range secrets {
		if strings.Contains(dump, s) {
			t.Fatalf("Redis holds a token or secret in plaintext (%d keys dumped)", strings.Count(dump, "\n"))
		}
	}
}

func TestFleetOneTokenRequestPerSubjectAcrossReplicasLateReplicaAndRevocation(t *testing.T) {
	cpuHeavy(t)
	box := startBox(t)
	r := redistest.Start(t)
	procs := startFleet(t, box, r, 3, ccgEnv(box)...)

	// Cold subjects, concurrent load on every replica.
	hammer(t, procs, 6)
	for s, n := range tokenCounts(box) {
		if n != 1 {
			t.Errorf("%s: %d token requests across 3 replicas, want 1", s, n)
		}
	}
	// A replica started later uses the tokens already there.
	late := startReplica(t, box, r, ccgEnv(box)...)
	procs = append(procs, late)
	hammer(t, []*binaryProxy{late}, 3)
	for s, n := range tokenCounts(box) {
		if n != 1 {
			t.Errorf("%s: the late replica caused %d more token requests", s, n-1)
		}
	}
	checkRedisHoldsNoSecret(t, r, box)

	// Box revokes every token: each replica gets a 401, the first drops the
	// token for all, one fetches the next.
	box.RevokeAll()
	hammer(t, procs, 3)
	for s, n := range tokenCounts(box) {
		t.Logf("%s: %d token requests after revocation across 4 replicas", s, n-1)
		if n-1 < 1 || n-1 > 2 {
			t.Errorf("%s: %d token requests after revocation across 4 replicas, want about one", s, n-1)
		}
	}
	for _, p := range procs {
		status, body := fleetGet(t, p.URL, "/readyz")
		if status != http.StatusOK || strings.Contains(body, "degraded") {
			t.Errorf("%s /readyz: %d %s", p.URL, status, body)
		}
	}
	checkRedisHoldsNoSecret(t, r, box)
}

func TestFleetJWTReplicasMakeOneTokenRequestPerSubject(t *testing.T) {
	cpuHeavy(t)
	box := startBox(t)
	app := newJWTApp(t, box)
	r := redistest.Start(t)
	procs := startFleet(t, box, r, 3, append(boxEnv(box), app.ConfigEnv()...)...)
	for _, p := range procs {
		p.AddSecret(app.Secrets()...)
	}
	hammer(t, procs, 4)
	for s, n := range tokenCounts(box) {
		if n != 1 {
			t.Errorf("%s: %d jwt token requests across 3 replicas, want 1", s, n)
		}
	}
	checkRedisHoldsNoSecret(t, r, box, app.Secrets()...)
}

func TestFleetRedisKilledRestartedAndHungUnderTrafficFailsNoCCGRequest(t *testing.T) {
	cpuHeavy(t)
	box := startBox(t)
	r := redistest.Start(t)
	procs := startFleet(t, box, r, 3, ccgEnv(box)...)
	hammer(t, procs, 1)

	stop := make(chan struct{})
	var sent, failed atomic.Int64
	var wg sync.WaitGroup
	for _, p := range procs {
		for _, s := range fleetSubjects {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					sent.Add(1)
					if status, body := fleetGet(t, p.URL, "/2.0/users/me", s.hdr()...); status != http.StatusOK {
						failed.Add(1)
						t.Errorf("%s as %q while Redis came and went: %d %s", p.URL, s.asUser, status, body)
					}
					time.Sleep(time.Duration(5+rand.IntN(10)) * time.Millisecond)
				}
			}()
		}
	}
	time.Sleep(300 * time.Millisecond)
	r.Kill()
	// While Redis is down every token is revoked: replicas fetch their own.
	time.Sleep(300 * time.Millisecond)
	box.RevokeAll()
	time.Sleep(700 * time.Millisecond)
	for _, p := range procs {
		if status, _ := fleetGet(t, p.URL, "/healthz"); status != http.StatusOK {
			t.Errorf("/healthz %d while Redis is down", status)
		}
		status, body := fleetGet(t, p.URL, "/readyz")
		if status != http.StatusOK || !strings.Contains(body, "degraded") {
			t.Errorf("/readyz while Redis is down: %d %s; want 200 naming what is degraded", status, body)
		}
	}
	r.Restart()
	for _, p := range procs {
		waitUntil(t, 10*time.Second, func() bool {
			status, body := fleetGet(t, p.URL, "/readyz")
			return status == http.StatusOK && !strings.Contains(body, "degraded")
		}, "the replica to use Redis again")
	}
	time.Sleep(300 * time.Millisecond)
	// Sharing has resumed: after one more revocation the fleet fetches about
	// one token per subject again.
	before := tokenCounts(box)
	box.RevokeAll()
	time.Sleep(time.Second)
	for s, n := range tokenCounts(box) {
		if d := n - before[s]; d < 1 || d > 2 {
			t.Errorf("%s: %d token requests after revocation once Redis was back, want about one", s, d)
		}
	}
	// Redis hangs (SIGSTOP: connections open, no answers) while every token
	// is revoked: calls time out within their bound and replicas work alone.
	r.Freeze()
	box.RevokeAll()
	time.Sleep(1500 * time.Millisecond)
	r.Thaw()
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	t.Logf("%d requests while Redis was killed, restarted and frozen, %d failed", sent.Load(), failed.Load())
	checkRedisHoldsNoSecret(t, r, box)
	for _, p := range procs {
		if !strings.Contains(p.Stderr.String(), "Redis unreachable") || !strings.Contains(p.Stderr.String(), "Redis answers again") {
			t.Errorf("%s did not log Redis going away and coming back", p.URL)
		}
	}
}

// oauthFleet starts n oauth replicas on r, logs in through the first, and
// returns them.
func oauthFleet(t *testing.T, box *fakebox.Box, r *redistest.Server, n int, env ...string) []*binaryProxy {
	t.Helper()
	dir := t.TempDir()
	var procs []*binaryProxy
	for i := range n {
		store := dir + "/unused-" + string(rune('a'+i)) + ".json"
		procs = append(procs, oauthReplica(t, box, r, store, env...))
	}
	br := newOAuthBrowser(t)
	if status, page := br.login(procs[0].URL, box); status != http.StatusOK {
		t.Fatalf("login through the first replica: %d\n%s", status, page)
	}
	return procs
}

// oauthReplica starts one oauth replica on a port of its own (the OAuth
// redirect URI names it).
func oauthReplica(t *testing.T, box *fakebox.Box, r *redistest.Server, store string, env ...string) *binaryProxy {
	t.Helper()
	addr := freeAddr(t)
	return startReplica(t, box, r, append(append(oauthEnv(box, store), "BOXPROXY_LISTEN="+addr, "BOXPROXY_PUBLIC_URL=http://"+addr), env...)...)
}

// meAs asks /2.0/users/me, again after a 401 (tokens that live a second may
// expire on their way twice), and returns the status and the user's ID.
func meAs(t testing.TB, base string) (int, string) {
	t.Helper()
	for attempt := 0; ; attempt++ {
		status, body := fleetGet(t, base, "/2.0/users/me")
		if status == http.StatusOK {
			var u struct {
				ID string `json:"id"`
			}
			_ = json.Unmarshal([]byte(body), &u)
			return status, u.ID
		}
		if status != http.StatusUnauthorized || attempt == 3 {
			return status, body
		}
	}
}

func TestFleetOAuthLoginOnOneReplicaServesAllAndRotationNeverReusesARefreshToken(t *testing.T) {
	cpuHeavy(t)
	box := startBox(t, func(c *fakebox.Config) { c.OAuthUserID = userBob })
	r := redistest.Start(t)
	procs := oauthFleet(t, box, r, 3)
	okBefore, _ := grantRequests(box, "refresh_token")
	for _, p := range procs {
		if status, id := meAs(t, p.URL); status != http.StatusOK || id != userBob {
			t.Fatalf("%s after a login on the first replica: %d %s", p.URL, status, id)
		}
	}
	late := oauthReplica(t, box, r, t.TempDir()+"/late.json")
	if status, id := meAs(t, late.URL); status != http.StatusOK || id != userBob {
		t.Fatalf("a replica started after the login: %d %s", status, id)
	}
	if ok, _ := grantRequests(box, "refresh_token"); ok != okBefore {
		t.Errorf("serving the login from every replica cost %d refreshes", ok-okBefore)
	}
	procs = append(procs, late)

	// A replica with another BOXPROXY_STORE_KEY cannot read the login: it
	// refuses to start, naming the variable, and sends Box nothing.
	other := append(oauthEnv(box, t.TempDir()+"/other.json"), "BOXPROXY_REDIS_URL="+r.URL(), "BOXPROXY_STORE_KEY=another-store-key-of-at-least-32-chars")
	before := len(box.TokenRequests())
	_, stderr, code := runBinary(t, other, "check")
	if code == 0 || !strings.Contains(stderr, "BOXPROXY_STORE_KEY") {
		t.Errorf("a replica with another store key: exit %d, stderr %q; want a failure naming BOXPROXY_STORE_KEY", code, stderr)
	}
	if len(box.TokenRequests()) != before {
		t.Error("a replica with another store key sent Box a token request")
	}
	assertNoSecrets(t, "check with another store key", stderr, append(box.IssuedTokens(), testClientSecret, fleetStoreKey))

	// Tokens live 2 s: under traffic on every replica the refresh token
	// rotates about every 1.6 s, under the fleet's lock.
	box.SetTokenTTL(2 * time.Second)
	box.ExpireAll()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var served, bad atomic.Int64
	for _, p := range procs {
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					if status, id := meAs(t, p.URL); status != http.StatusOK || id != userBob {
						bad.Add(1)
						t.Errorf("%s during rotation: %d %s", p.URL, status, id)
					} else {
						served.Add(1)
					}
					time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
				}
			}()
		}
	}
	const run = 9 * time.Second
	time.Sleep(run)
	close(stop)
	wg.Wait()
	ok, failed := grantRequests(box, "refresh_token")
	ok -= okBefore
	t.Logf("%d requests on 4 replicas in %s with 2 s tokens: %d refreshes, %d rejected", served.Load(), run, ok, failed)
	if failed != 0 {
		t.Fatalf("%d refreshes were rejected: a refresh token was used twice", failed)
	}
	// Alone, 4 replicas would refresh 4 times per token lifetime.
	if lifetimes := int(run / (2 * time.Second)); ok < 2 || ok > 2*lifetimes+2 {
		t.Errorf("%d refreshes in %d token lifetimes across 4 replicas, want about one per lifetime", ok, lifetimes)
	}
	checkRedisHoldsNoSecret(t, r, box)
	logWindow(t, procs)
}

// logWindow reports the measured window between Box's answer to a refresh
// and Redis acknowledging the new refresh token.
func logWindow(t *testing.T, procs []*binaryProxy) {
	var saves []float64
	for _, p := range procs {
		for _, l := range logLines(t, p.Stderr.String()) {
			if v, ok := l["save_took_ms"].(float64); ok {
				saves = append(saves, v)
			}
		}
	}
	if len(saves) == 0 {
		return
	}
	slices.Sort(saves)
	t.Logf("%d refreshes; from Box's answer to Redis's acknowledgement of the new refresh token: median %.2fms, p90 %.2fms, max %.2fms",
		len(saves), saves[len(saves)/2], saves[len(saves)*9/10], saves[len(saves)-1])
}

func TestFleetOAuthKill9OfReplicasAndOfTheLockHolderMidRefreshNeverReusesOrLosesTheLogin(t *testing.T) {
	cpuHeavy(t)
	var hungUp atomic.Int64
	box := startBox(t, func(c *fakebox.Config) {
		c.OAuthUserID = userBob
		c.Logf = func(format string, args ...any) {
			if strings.Contains(format, "hung up during the delay") {
				hungUp.Add(1)
			}
		}
	})
	r := redistest.Start(t)
	procs := oauthFleet(t, box, r, 3)
	dir := t.TempDir()
	box.SetTokenTTL(time.Second)
	// Refreshes take 300 ms at Box: long enough to kill the replica that
	// holds the lock while its request is in flight.
	box.SetTokenDelay(300 * time.Millisecond)
	box.ExpireAll()

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 11))
	const iterations = 8
	holderKills := 0
	for i := range iterations {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for _, p := range procs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := &http.Client{Timeout: 2 * time.Second}
				for {
					select {
					case <-stop:
						return
					default:
					}
					if resp, err := c.Get(p.URL + "/2.0/users/me"); err == nil {
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
					time.Sleep(5 * time.Millisecond)
				}
			}()
		}
		victim := rng.IntN(len(procs))
		if i%2 == 1 {
			// The lock holder, while its refresh is at Box.
			counts := make([]int, len(procs))
			for j, p := range procs {
				counts[j] = strings.Count(p.Stderr.String(), `"oauth: refreshing"`)
			}
			victim = -1
			deadline := time.Now().Add(10 * time.Second)
			for victim < 0 && time.Now().Before(deadline) {
				for j, p := range procs {
					if strings.Count(p.Stderr.String(), `"oauth: refreshing"`) > counts[j] {
						victim = j
						break
					}
				}
				time.Sleep(2 * time.Millisecond)
			}
			if victim < 0 {
				t.Fatalf("iteration %d: no refresh began within 10s", i)
			}
			holderKills++
		} else {
			time.Sleep(time.Duration(rng.IntN(1500)) * time.Millisecond)
		}
		p := procs[victim]
		_ = p.Cmd.Process.Kill()
		<-p.exited
		close(stop)
		wg.Wait()
		procs[victim] = oauthReplica(t, box, r, dir+"/unused.json")
		// Every replica serves as the user: the login survived (another
		// replica took the dead holder's lock once its lease ran out).
		for _, q := range procs {
			if status, id := meAs(t, q.URL); status != http.StatusOK || id != userBob {
				t.Fatalf("iteration %d (killed replica %d): %s answers %d %s", i, victim, q.URL, status, id)
			}
		}
	}
	ok, failed := grantRequests(box, "refresh_token")
	t.Logf("%d kills (%d of the lock holder, %d while its refresh was at Box): %d refreshes, %d rejected", iterations, holderKills, hungUp.Load(), ok, failed)
	if failed != 0 {
		t.Fatalf("%d refreshes were rejected: a refresh token was used twice", failed)
	}
	if hungUp.Load() == 0 {
		t.Error("no kill fell while a refresh was at Box: the lock holder was never killed mid-refresh")
	}
	checkRedisHoldsNoSecret(t, r, box)
}

func TestFleetOAuthIdleLoginIsRefreshedByKeepAliveOnceForTheFleet(t *testing.T) {
	cpuHeavy(t)
	box := startBox(t, func(c *fakebox.Config) { c.OAuthUserID = userBob })
	r := redistest.Start(t)
	procs := oauthFleet(t, box, r, 3, "BOXPROXY_OAUTH_KEEPALIVE=2s")
	okBefore, _ := grantRequests(box, "refresh_token")
	// No traffic at all; tokens live an hour.
	time.Sleep(7 * time.Second)
	ok, failed := grantRequests(box, "refresh_token")
	ok -= okBefore
	t.Logf("keep-alive every 2s, 3 idle replicas, 7s: %d refreshes", ok)
	if failed != 0 {
		t.Fatalf("%d keep-alive refreshes were rejected", failed)
	}
	// Once per interval for the fleet (3 in 7 s; per replica it would be 9).
	if ok < 2 || ok > 4 {
		t.Fatalf("%d refreshes in 7s with a 2s keep-alive across 3 replicas, want about 3", ok)
	}
	for _, p := range procs {
		if status, id := meAs(t, p.URL); status != http.StatusOK || id != userBob {
			t.Fatalf("%s after keep-alive refreshes: %d %s", p.URL, status, id)
		}
	}
	checkRedisHoldsNoSecret(t, r, box)
}

// BenchmarkFleetReplicaRequests: requests per second through one real
// replica (ccg, cached token), alone and with BOXPROXY_REDIS_URL: a local
// cache hit never asks Redis, so the two should match.
func BenchmarkFleetReplicaRequests(b *testing.B) {
	box := startBox(b)
	r := redistest.Start(b)
	for _, withRedis := range []bool{false, true} {
		name, env := "alone", ccgEnv(box)
		if withRedis {
			name, env = "redis", append(env, "BOXPROXY_REDIS_URL="+r.URL(), "BOXPROXY_STORE_KEY="+fleetStoreKey)
		}
		b.Run(name, func(b *testing.B) {
			p := startBinary(b, box, append(env, "BOXPROXY_LOG_LEVEL=info")...)
			c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			get := func() {
				resp, err := c.Get(p.URL + "/2.0/users/me")
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Errorf("status %d", resp.StatusCode)
				}
			}
			get()
			b.SetParallelism(8)
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					get()
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
		})
	}
}

func TestFleetOAuthLoginSurvivesARedisRestartThatLostEverything(t *testing.T) {
	cpuHeavy(t)
	box := startBox(t, func(c *fakebox.Config) { c.OAuthUserID = userBob })
	r := redistest.Start(t)
	procs := oauthFleet(t, box, r, 3)
	for _, p := range procs {
		if status, id := meAs(t, p.URL); status != http.StatusOK || id != userBob {
			t.Fatalf("%s: %d %s", p.URL, status, id)
		}
	}
	r.Restart() // no persistence: the login is gone from Redis
	for _, p := range procs {
		waitUntil(t, 10*time.Second, func() bool {
			status, body := fleetGet(t, p.URL, "/readyz")
			return status == http.StatusOK && !strings.Contains(body, "degraded")
		}, "the replica to use Redis again")
	}
	// Every token expires: each replica needs a refresh, which only the
	// login in the replicas' memory can pay for; they write it back.
	box.ExpireAll()
	for round := range 2 {
		for _, p := range procs {
			if status, id := meAs(t, p.URL); status != http.StatusOK || id != userBob {
				t.Fatalf("round %d, %s after Redis lost the login: %d %s", round, p.URL, status, id)
			}
		}
	}
	if _, failed := grantRequests(box, "refresh_token"); failed != 0 {
		t.Fatalf("%d refreshes were rejected: a refresh token was used twice", failed)
	}
	if !strings.Contains(r.Dump(t), "}:login") {
		t.Fatal("the login was not written back to Redis")
	}
	checkRedisHoldsNoSecret(t, r, box)
}

func TestFleetRenewsAheadOfExpiryOncePerSubjectForTheFleet(t *testing.T) {
	cpuHeavy(t)
	box := startBox(t, func(c *fakebox.Config) { c.TokenTTL = 2 * time.Second })
	r := redistest.Start(t)
	procs := startFleet(t, box, r, 3, ccgEnv(box)...)
	before := tokenCounts(box)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, p := range procs {
		for _, s := range fleetSubjects {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					if status, body := fleetGet(t, p.URL, "/2.0/users/me", s.hdr()...); status != http.StatusOK {
						t.Errorf("%s as %q: %d %s", p.URL, s.asUser, status, body)
					}
					time.Sleep(20 * time.Millisecond)
				}
			}()
		}
	}
	const run = 8 * time.Second
	time.Sleep(run)
	close(stop)
	wg.Wait()
	lifetimes := float64(run) / float64(2*time.Second)
	for s, n := range tokenCounts(box) {
		per := float64(n-before[s]) / lifetimes
		t.Logf("%s: %.2f token requests per 2 s lifetime across 3 replicas", s, per)
		// One replica renews about every 1.5 s (a fifth of the lifetime
		// ahead, plus jitter): 1.3 per lifetime; alone, 3 replicas make 4.
		if per > 2 {
			t.Errorf("%s: %.2f token requests per lifetime across 3 replicas, want one replica's worth (about 1.3)", s, per)
		}
	}
}

func TestFleetOAuthWithRedisDownServesTheTokenInHandAndRefusesToRefresh(t *testing.T) {
	cpuHeavy(t)
	box := startBox(t, func(c *fakebox.Config) { c.OAuthUserID = userBob })
	r := redistest.Start(t)
	procs := oauthFleet(t, box, r, 3, "BOXPROXY_TOKEN_TIMEOUT=2s")
	for _, p := range procs {
		if status, id := meAs(t, p.URL); status != http.StatusOK || id != userBob {
			t.Fatalf("%s: %d %s", p.URL, status, id)
		}
	}
	r.Kill()
	// The access token in hand still serves.
	for _, p := range procs {
		if status, id := meAs(t, p.URL); status != http.StatusOK || id != userBob {
			t.Fatalf("%s with Redis down, token in hand: %d %s", p.URL, status, id)
		}
	}
	// A refresh needs the fleet's lock: no refresh reaches Box, the client
	// gets a JSON 503.
	okBefore, _ := grantRequests(box, "refresh_token")
	box.ExpireAll()
	status, body := fleetGet(t, procs[1].URL, "/2.0/users/me")
	if status != http.StatusServiceUnavailable || !strings.Contains(body, `"type":"error"`) || !strings.Contains(body, "lock") || !strings.Contains(body, `"code":"fleet_unavailable"`) {
		t.Fatalf("a refresh with Redis down: %d %s; want a JSON 503 saying the lock cannot be taken", status, body)
	}
	if ok, failed := grantRequests(box, "refresh_token"); ok != okBefore || failed != 0 {
		t.Fatalf("with Redis down, %d refreshes reached Box", ok-okBefore+failed)
	}
	// Redis comes back empty: the replicas write their login back, one
	// refreshes for all, and every replica serves again.
	r.Restart()
	for _, p := range procs {
		waitUntil(t, 20*time.Second, func() bool {
			status, id := meAs(t, p.URL)
			return status == http.StatusOK && id == userBob
		}, "the replica to serve again once Redis is back")
	}
	if _, failed := grantRequests(box, "refresh_token"); failed != 0 {
		t.Fatalf("%d refreshes were rejected: a refresh token was used twice", failed)
	}
	checkRedisHoldsNoSecret(t, r, box)
}

func TestFleetTakesOverASingleProcessLoginFromItsTokenStoreOnce(t *testing.T) {
	cpuHeavy(t)
	box := startBox(t, func(c *fakebox.Config) { c.OAuthUserID = userBob })
	r := redistest.Start(t)
	store := t.TempDir() + "/tokens.json"
	// One process, no Redis, logs in and keeps its tokens in the file.
	addr := freeAddr(t)
	alone := startBinary(t, box, append(oauthEnv(box, store), "BOXPROXY_LISTEN="+addr, "BOXPROXY_PUBLIC_URL=http://"+addr, "BOXPROXY_STORE_KEY="+fleetStoreKey)...)
	alone.AddSecret(fleetStoreKey)
	if status, page := newOAuthBrowser(t).login(alone.URL, box); status != http.StatusOK {
		t.Fatalf("login: %d\n%s", status, page)
	}
	_ = alone.Cmd.Process.Signal(syscall.SIGTERM)
	<-alone.exited
	// The fleet, on the same store file, takes that login over: no new
	// login, no refresh (the stored access token is still good).
	okBefore, _ := grantRequests(box, "refresh_token")
	procs := []*binaryProxy{oauthReplica(t, box, r, store), oauthReplica(t, box, r, store)}
	for _, p := range procs {
		if status, id := meAs(t, p.URL); status != http.StatusOK || id != userBob {
			t.Fatalf("%s on the single process's store: %d %s", p.URL, status, id)
		}
	}
	if ok, _ := grantRequests(box, "refresh_token"); ok != okBefore {
		t.Errorf("taking the login over cost %d refreshes", ok-okBefore)
	}
	took := 0
	for _, p := range procs {
		took += strings.Count(p.Stderr.String(), "took over the token store file's login")
	}
	if took != 1 {
		t.Errorf("%d replicas took the file's login over, want exactly 1 (the other found it in Redis)", took)
	}
	checkRedisHoldsNoSecret(t, r, box)
}

func TestFleetLogoutOnceLogsOutEveryReplica(t *testing.T) {
	cpuHeavy(t)
	box := startBox(t, func(c *fakebox.Config) { c.OAuthUserID = userBob })
	r := redistest.Start(t)
	procs := oauthFleet(t, box, r, 3)
	for _, p := range procs {
		if status, id := meAs(t, p.URL); status != http.StatusOK || id != userBob {
			t.Fatalf("%s: %d %s", p.URL, status, id)
		}
	}
	env := append(oauthEnv(box, t.TempDir()+"/unused.json"), "BOXPROXY_REDIS_URL="+r.URL(), "BOXPROXY_STORE_KEY="+fleetStoreKey)
	if _, stderr, code := runBinary(t, env, "logout"); code != 0 {
		t.Fatalf("boxproxy logout with Redis: exit %d: %s", code, stderr)
	}
	if len(box.RevokedTokens()) < 2 {
		t.Errorf("logout revoked %d tokens at Box, want the refresh and the access token", len(box.RevokedTokens()))
	}
	for _, p := range procs {
		status, body := fleetGet(t, p.URL, "/2.0/users/me")
		if status != http.StatusServiceUnavailable || !strings.Contains(body, "login_required") {
			t.Errorf("%s after logout: %d %s; want 503 login_required", p.URL, status, body)
		}
	}
	if dump := r.Dump(t); strings.Contains(dump, "  v=") {
		t.Errorf("Redis still holds a login after logout:\n%s", dump)
	}
}

// `boxproxy check` says when the configured Redis cannot be reached (a
// replica would work alone), naming the variable and never its password.
func TestFleetCheckNamesAnUnreachableRedis(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	env := append(ccgEnv(box), "BOXPROXY_REDIS_URL=redis://:hunter2-redis-pw@"+freeAddr(t)+"/0")
	stdout, stderr, code := runBinary(t, env, "check")
	out := stdout + stderr
	if code == 0 || !strings.Contains(out, "BOXPROXY_REDIS_URL") || strings.Contains(out, "hunter2") {
		t.Fatalf("check with Redis unreachable: exit %d\n%s", code, out)
	}
	if n := strings.Count(strings.TrimSpace(out), "\n"); n != 0 {
		t.Fatalf("check printed %d lines, want one:\n%s", n+1, out)
	}
}

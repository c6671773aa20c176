package fleet_test

// A new login (user B) on one replica while, before or after another replica
// rotates the previous login's (user A's) refresh token: the fleet ends up
// serving B, never A, and leaves no refresh token of A alive at Box.

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/boxproxy/boxproxy/auth"
	"github.com/boxproxy/boxproxy/internal/redistest"
	"github.com/boxproxy/boxproxy/seal"
)

// loginBox is Box's token and revoke endpoints for two users. The code "A"
// logs in user A (access token AT-A-1, refresh token RT-A-1); a refresh of
// RT-A-… answers AT-A-Rn and RT-A-Rn. Refresh tokens are single-use. Gates
// hold answers back so that tests can overlap a login and a refresh.
type loginBox struct {
	mu       sync.Mutex
	live     map[string]bool // refresh tokens Box accepts
	revoked  []string
	n        int
	codeGate map[string]chan struct{} // a code's answer waits until closed
	refGate  chan struct{}            // refresh answers wait until closed
	refIn    chan struct{}            // a refresh reached Box
	codeIn   chan struct{}            // a gated code reached Box
}

func newLoginBox(t *testing.T) (*loginBox, *httptest.Server) {
	b := &loginBox{live: map[string]bool{}, codeGate: map[string]chan struct{}{},
		refIn: make(chan struct{}, 8), codeIn: make(chan struct{}, 8)}
	srv := httptest.NewServer(b)
	t.Cleanup(srv.Close)
	return b, srv
}

func (b *loginBox) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	f := r.PostForm
	if strings.HasSuffix(r.URL.Path, "/revoke") {
		b.mu.Lock()
		b.revoked = append(b.revoked, f.Get("token"))
		delete(b.live, f.Get("token"))
		b.mu.Unlock()
		return
	}
	var at, rt string
	switch f.Get("grant_type") {
	case "authorization_code":
		code := f.Get("code")
		b.mu.Lock()
		at, rt = "AT-"+code+"-1", "RT-"+code+"-1"
		b.live[rt] = true
		g := b.codeGate[code]
		b.mu.Unlock()
		if g != nil {
			b.codeIn <- struct{}{}
			<-g
		}
	case "refresh_token":
		old := f.Get("refresh_token")
		b.mu.Lock()
		if !b.live[old] {
			b.mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"error":"invalid_grant","error_description":"Invalid refresh token"}`))
			return
		}
		delete(b.live, old)
		user := strings.Split(old, "-")[1]
		b.n++
		at, rt = "AT-"+user+"-R"+strconv.Itoa(b.n), "RT-"+user+"-R"+strconv.Itoa(b.n)
		b.live[rt] = true
		g := b.refGate
		b.mu.Unlock()
		if g != nil {
			b.refIn <- struct{}{}
			<-g
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": at, "refresh_token": rt, "expires_in": 3600})
}

// liveTokens lists the refresh tokens Box still accepts.
func (b *loginBox) liveTokens() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var l []string
	for rt := range b.live {
		l = append(l, rt)
	}
	sort.Strings(l)
	return l
}

func (b *loginBox) wasRevoked(rt string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, r := range b.revoked {
		if r == rt {
			return true
		}
	}
	return false
}

func (b *loginBox) gateRefreshes() {
	b.mu.Lock()
	b.refGate = make(chan struct{})
	b.mu.Unlock()
}

func (b *loginBox) openRefreshes() {
	b.mu.Lock()
	close(b.refGate)
	b.refGate = nil
	b.mu.Unlock()
}

func endpointOf(srv *httptest.Server) *auth.Endpoint {
	return &auth.Endpoint{URL: srv.URL + "/oauth2/token", ClientID: "cid", ClientSecret: "secret", Client: srv.Client()}
}

// oauthReplica is one replica's OAuth source on the fleet's Redis.
func oauthReplica(t *testing.T, url string, ep *auth.Endpoint, keepalive time.Duration) *auth.OAuth {
	t.Helper()
	f := open(t, url, storeKey, 0)
	sl, err := seal.New(storeKey, "oauth-login")
	if err != nil {
		t.Fatal(err)
	}
	o, err := auth.NewOAuth(ep, auth.OAuthOptions{Seal: sl, Shared: f.Login(), Keepalive: keepalive}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// loginFleet starts Redis, Box and two replicas; user A logs in on r1, and
// r2 has handed out A's first access token (its next Token refreshes).
func loginFleet(t *testing.T) (*redistest.Server, *loginBox, *auth.Endpoint, *auth.OAuth, *auth.OAuth) {
	t.Helper()
	r := redistest.Start(t)
	box, srv := newLoginBox(t)
	ep := endpointOf(srv)
	r1, r2 := oauthReplica(t, r.URL(), ep, 0), oauthReplica(t, r.URL(), ep, 0)
	ctx := context.Background()
	if err := r1.Exchange(ctx, "A", ""); err != nil {
		t.Fatal(err)
	}
	if tok, err := r2.Token(ctx, auth.Subject{}); err != nil || tok.Access() != "AT-A-1" {
		t.Fatalf("r2's first token: %q, %v", tok.Access(), err)
	}
	return r, box, ep, r1, r2
}

type tokenResult struct {
	tok string
	err error
}

func tokenAsync(o *auth.OAuth) chan tokenResult {
	ch := make(chan tokenResult, 1)
	go func() {
		tok, err := o.Token(context.Background(), auth.Subject{})
		ch <- tokenResult{tok.Access(), err}
	}()
	return ch
}

// checkFleetServes asks each replica for a new token twice (the first may be
// the one in hand, the second is a refresh, as after a 401) and wants user's.
func checkFleetServes(t *testing.T, user string, replicas ...*auth.OAuth) {
	t.Helper()
	for i, o := range replicas {
		for range 2 {
			tok, err := o.Token(context.Background(), auth.Subject{})
			if err != nil || !strings.Contains(tok.Access(), "-"+user+"-") {
				t.Errorf("replica %d serves %q (%v), want a token of user %s", i+1, tok.Access(), err, user)
			}
		}
	}
}

// checkOnlyLive wants Box to accept refresh tokens of user only.
func checkOnlyLive(t *testing.T, box *loginBox, user string) {
	t.Helper()
	for _, rt := range box.liveTokens() {
		if !strings.Contains(rt, "-"+user+"-") {
			t.Errorf("refresh token %s of a replaced login is still alive at Box (live: %v)", rt, box.liveTokens())
		}
	}
}

// B's code exchange is at Box when r2 needs a new token for A: r2 must not
// rotate A meanwhile and then write A's rotated login over B's.
func TestNewLoginIsNotOverwrittenByARefreshInFlight(t *testing.T) {
	_, box, _, r1, r2 := loginFleet(t)
	ctx := context.Background()
	box.gateRefreshes()
	box.codeGate["B"] = make(chan struct{})
	login := make(chan error, 1)
	go func() { login <- r1.Exchange(ctx, "B", "") }()
	<-box.codeIn // B's code exchange is at Box
	got := tokenAsync(r2)
	select {
	case <-box.refIn: // r2 refreshes A during B's login
	case <-time.After(300 * time.Millisecond): // r2 waits for the login
	}
	close(box.codeGate["B"])
	if err := <-login; err != nil {
		t.Fatal(err)
	}
	box.openRefreshes()
	res := <-got
	if res.err != nil || !strings.Contains(res.tok, "-B-") {
		t.Errorf("r2's caller got %q (%v) after B's login, want B's token", res.tok, res.err)
	}
	checkFleetServes(t, "B", r1, r2)
	checkOnlyLive(t, box, "B")
}

// r2's refresh of A is at Box when B logs in on r1: the login waits for the
// refresh (it cannot rotate A's refresh token under r2's feet), then revokes
// the refresh token that the refresh just obtained, not the spent one.
func TestANewLoginWaitsForARefreshInFlightAndRevokesItsNewRefreshToken(t *testing.T) {
	_, box, _, r1, r2 := loginFleet(t)
	ctx := context.Background()
	box.gateRefreshes()
	got := tokenAsync(r2)
	<-box.refIn // r2's refresh of A is at Box, under the fleet's lock
	login := make(chan error, 1)
	go func() { login <- r1.Exchange(ctx, "B", "") }()
	select {
	case err := <-login:
		t.Errorf("the login completed (%v) while another replica was rotating the previous login's refresh token", err)
		login <- err
	case <-time.After(300 * time.Millisecond):
	}
	box.openRefreshes()
	res := <-got
	if res.err != nil {
		t.Fatalf("r2's refresh: %v", res.err)
	}
	if err := <-login; err != nil {
		t.Fatal(err)
	}
	rotated := "RT-A-" + strings.TrimPrefix(res.tok, "AT-A-")
	if !box.wasRevoked(rotated) {
		t.Errorf("the login did not revoke A's refresh token as the fleet had it (%s); revoked %v", rotated, box.revoked)
	}
	checkFleetServes(t, "B", r1, r2)
	checkOnlyLive(t, box, "B")
}

// r2's refresh of A is at Box and its lock's lease lapses (Redis was slow);
// B logs in on r1 meanwhile. When A's answer arrives, r2 must follow B: not
// hand out A's new access token, not write A over B, and revoke A's new
// refresh token, which nobody else holds.
func TestAReplicaWhoseLockLapsedFollowsANewLoginInsteadOfServingThePreviousUser(t *testing.T) {
	r, box, _, r1, r2 := loginFleet(t)
	ctx := context.Background()
	box.gateRefreshes()
	got := tokenAsync(r2)
	<-box.refIn
	lock := strings.TrimSuffix(loginKey(t, r), "login") + "lock:login"
	if n := r.Client().Del(ctx, lock).Val(); n != 1 {
		t.Fatalf("r2's refresh lock was not in Redis")
	}
	if err := r1.Exchange(ctx, "B", ""); err != nil {
		t.Fatal(err)
	}
	box.openRefreshes()
	res := <-got
	if strings.Contains(res.tok, "-A-") {
		t.Errorf("after B logged in, r2 handed out A's new access token %q", res.tok)
	}
	checkFleetServes(t, "B", r1, r2)
	checkOnlyLive(t, box, "B")
}

// r2's clock runs 2 s ahead. r2 rotates A; a second later (by r1's clock,
// still earlier than r2's stamp) B logs in on r1. The fleet must keep B.
func TestClockSkewDoesNotRevertANewLogin(t *testing.T) {
	r := redistest.Start(t)
	box, srv := newLoginBox(t)
	ep1 := endpointOf(srv)
	ep2 := endpointOf(srv)
	ep2.Now = func() time.Time { return time.Now().Add(2 * time.Second) }
	r1, r2 := oauthReplica(t, r.URL(), ep1, 0), oauthReplica(t, r.URL(), ep2, 0)
	ctx := context.Background()
	if err := r1.Exchange(ctx, "A", ""); err != nil {
		t.Fatal(err)
	}
	_, _ = r2.Token(ctx, auth.Subject{}) // hands out AT-A-1
	if tok, err := r2.Token(ctx, auth.Subject{}); err != nil || !strings.Contains(tok.Access(), "-A-R") {
		t.Fatalf("r2's refresh of A: %q, %v", tok.Access(), err)
	}
	time.Sleep(time.Second)
	if err := r1.Exchange(ctx, "B", ""); err != nil {
		t.Fatal(err)
	}
	checkFleetServes(t, "B", r2, r1)
	checkOnlyLive(t, box, "B")
	if r1.LoginExpired() || r2.LoginExpired() {
		t.Error("the fleet's login ended up rejected")
	}
}

// After B logs in on r1, r2's token cache must stop serving A's access token
// once r2 follows the fleet's login (its keep-alive does that every few
// seconds at most), not an hour later when the token expires.
func TestOtherReplicasStopServingThePreviousUsersTokenAfterALogin(t *testing.T) {
	r := redistest.Start(t)
	_, srv := newLoginBox(t)
	ep := endpointOf(srv)
	r1 := oauthReplica(t, r.URL(), ep, 0)
	ctx := context.Background()
	if err := r1.Exchange(ctx, "A", ""); err != nil {
		t.Fatal(err)
	}
	r2 := oauthReplica(t, r.URL(), ep, 2*time.Second) // follows Redis every 50-100 ms
	c2, err := auth.NewCache(r2, auth.CacheOptions{Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	r2.OnLogin(c2.Purge) // as server.NewAuth wires it
	kctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); r2.RunKeepalive(kctx) }()
	t.Cleanup(func() { stop(); <-done })
	self := auth.Subject{Type: auth.User, ID: "self"}
	if tok, err := c2.Token(ctx, self); err != nil || tok.Access() != "AT-A-1" {
		t.Fatalf("r2 before B's login: %q, %v", tok.Access(), err)
	}
	if err := r1.Exchange(ctx, "B", ""); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		tok, err := c2.Token(ctx, self)
		if err == nil && strings.Contains(tok.Access(), "-B-") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("3 s after B logged in on r1, r2's cache still serves %q (%v)", tok.Access(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A login whose version field in Redis is not a number (edited by hand) must
// not stop the fleet: the next refresh is saved (repairing the field), so a
// restart finds the rotated refresh token.
func TestAnUnusableLoginVersionInRedisDoesNotStopTheFleet(t *testing.T) {
	r, _, ep, _, r2 := loginFleet(t)
	ctx := context.Background()
	key := loginKey(t, r)
	r.Client().HSet(ctx, key, "ver", "abc")
	tok, err := r2.Token(ctx, auth.Subject{}) // a refresh
	if err != nil || !strings.Contains(tok.Access(), "-A-R") {
		t.Fatalf("a refresh with an unusable version in Redis: %q, %v", tok.Access(), err)
	}
	if v, err := strconv.Atoi(r.Client().HGet(ctx, key, "ver").Val()); err != nil || v < 1 {
		t.Errorf("the version field was not repaired: %q", r.Client().HGet(ctx, key, "ver").Val())
	}
	// A restarted replica finds the rotated login in Redis.
	r3 := oauthReplica(t, r.URL(), ep, 0)
	if got, err := r3.Token(ctx, auth.Subject{}); err != nil || got.Access() != tok.Access() {
		t.Errorf("a restarted replica serves %q (%v), want the rotated login's %q", got.Access(), err, tok.Access())
	}
	checkFleetServes(t, "A", r2, r3)
}

// A login stored by an older boxproxy (without login_seq and rotation) is
// served, rotated and followed by every replica, and a new login replaces it.
func TestALoginStoredByAnOlderBoxproxyIsServedRotatedAndReplaced(t *testing.T) {
	r := redistest.Start(t)
	box, srv := newLoginBox(t)
	ep := endpointOf(srv)
	ctx := context.Background()
	box.live["RT-A-1"] = true
	now := time.Now().UTC()
	legacy, _ := json.Marshal(map[string]any{"version": 1,
		"access_token": "AT-A-1", "access_token_expiry": now.Add(time.Hour), "access_token_obtained": now,
		"refresh_token": "RT-A-1", "refresh_token_obtained": now})
	if _, err := open(t, r.URL(), storeKey, 0).Login().Save(ctx, legacy, -1); err != nil {
		t.Fatal(err)
	}
	r1, r2 := oauthReplica(t, r.URL(), ep, 0), oauthReplica(t, r.URL(), ep, 0)
	if tok, err := r1.Token(ctx, auth.Subject{}); err != nil || tok.Access() != "AT-A-1" {
		t.Fatalf("r1 serves %q (%v), want the stored login's token", tok.Access(), err)
	}
	rotated, err := r1.Token(ctx, auth.Subject{}) // a refresh
	if err != nil || !strings.Contains(rotated.Access(), "-A-R") {
		t.Fatalf("r1's refresh of the stored login: %q, %v", rotated.Access(), err)
	}
	// r2 read the login before the rotation; it follows it.
	if tok, err := r2.Token(ctx, auth.Subject{}); err != nil || tok.Access() != rotated.Access() {
		t.Fatalf("r2 serves %q (%v), want the rotated %q", tok.Access(), err, rotated.Access())
	}
	checkFleetServes(t, "A", r2, r1)
	if err := r2.Exchange(ctx, "B", ""); err != nil {
		t.Fatal(err)
	}
	checkFleetServes(t, "B", r1, r2)
	checkOnlyLive(t, box, "B")
}

// A login while Redis is gone cannot take the fleet's lock: it fails before
// the authorization code reaches Box (so the user can try again with the
// same code, once Redis is back), and the fleet keeps serving the login it has.
func TestALoginWithRedisGoneFailsBeforeSpendingTheCode(t *testing.T) {
	r, box, _, r1, _ := loginFleet(t)
	r.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	err := r1.Exchange(ctx, "B", "")
	if err == nil || !strings.Contains(err.Error(), "not completed") {
		t.Fatalf("a login with Redis gone: %v; want an error saying the login was not completed", err)
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("the refusal took %s", took)
	}
	for _, rt := range box.liveTokens() {
		if strings.Contains(rt, "-B-") {
			t.Fatalf("the code reached Box although the login could not be saved (live: %v)", box.liveTokens())
		}
	}
	r.Restart()
	if err := r1.Exchange(ctx, "B", ""); err != nil {
		t.Fatalf("the same login once Redis is back: %v", err)
	}
	if tok, err := r1.Token(ctx, auth.Subject{}); err != nil || !strings.Contains(tok.Access(), "-B-") {
		t.Errorf("after the login: %q, %v; want B's token", tok.Access(), err)
	}
}

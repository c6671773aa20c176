package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

const (
	oauthClientID     = "oauth-client-id"
	oauthClientSecret = "OAUTHCLIENTSECRET"
)

// oauthBox is a token endpoint with Box's rules for the code flow: codes and
// refresh tokens are single use, and a refresh rotates the refresh token.
type oauthBox struct {
	t   *testing.T
	srv *httptest.Server
	ttl int64 // expires_in
	// gate, when set, holds refresh answers until it is closed.
	gate chan struct{}

	mu        sync.Mutex
	seq       int
	codes     map[string]bool
	live      map[string]bool // refresh tokens Box accepts
	seen      map[string]int  // refresh tokens presented, and how often
	issued    []string        // every token handed out (for leak checks)
	revoked   []string
	revokeErr int // status to answer revocations with, 0 = 200

	refreshes atomic.Int64 // successful refreshes
	requests  atomic.Int64 // all token requests
}

func newOAuthBox(t *testing.T) *oauthBox {
	b := &oauthBox{t: t, ttl: 3600, codes: map[string]bool{}, live: map[string]bool{}, seen: map[string]int{}}
	b.srv = httptest.NewServer(http.HandlerFunc(b.serve))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *oauthBox) endpoint(now func() time.Time) *Endpoint {
	return &Endpoint{URL: b.srv.URL + "/oauth2/token", ClientID: oauthClientID, ClientSecret: oauthClientSecret,
		Client: b.srv.Client(), Now: now}
}

// code makes an authorization code, as the authorize page would.
func (b *oauthBox) code() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seq++
	c := fmt.Sprintf("CODESECRET%d", b.seq)
	b.codes[c] = true
	b.issued = append(b.issued, c)
	return c
}

// newest is the refresh token Box would accept now (there is one login).
func (b *oauthBox) newest() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	for rt := range b.live {
		return rt
	}
	return ""
}

// reused counts refresh tokens presented more than once.
func (b *oauthBox) reused() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, c := range b.seen {
		if c > 1 {
			n++
		}
	}
	return n
}

// kill makes Box forget every refresh token (revoked or expired).
func (b *oauthBox) kill() {
	b.mu.Lock()
	b.live = map[string]bool{}
	b.mu.Unlock()
}

func (b *oauthBox) serve(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	f := r.PostForm
	fail := func(code, desc string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
	}
	if f.Get("client_id") != oauthClientID || f.Get("client_secret") != oauthClientSecret {
		fail("invalid_client", "The client credentials are invalid")
		return
	}
	if r.URL.Path == "/oauth2/revoke" {
		b.mu.Lock()
		b.revoked = append(b.revoked, f.Get("token"))
		delete(b.live, f.Get("token"))
		status := b.revokeErr
		b.mu.Unlock()
		if status != 0 {
			w.WriteHeader(status)
		}
		return
	}
	b.requests.Add(1)
	b.mu.Lock()
	switch f.Get("grant_type") {
	case "authorization_code":
		if !b.codes[f.Get("code")] {
			b.mu.Unlock()
			fail("invalid_grant", "Auth code doesn't exist or is invalid for the client")
			return
		}
		delete(b.codes, f.Get("code"))
	case "refresh_token":
		rt := f.Get("refresh_token")
		b.seen[rt]++
		if !b.live[rt] {
			b.mu.Unlock()
			fail("invalid_grant", "Invalid refresh token")
			return
		}
		delete(b.live, rt)
		b.refreshes.Add(1)
	default:
		b.mu.Unlock()
		fail("invalid_request", "Invalid grant_type parameter or parameter missing")
		return
	}
	b.seq++
	at, rt := fmt.Sprintf("ACCESSSECRET%d", b.seq), fmt.Sprintf("REFRESHSECRET%d", b.seq)
	b.live[rt] = true
	b.issued = append(b.issued, at, rt)
	ttl := b.ttl
	b.mu.Unlock()
	if f.Get("grant_type") == "refresh_token" && b.gate != nil {
		<-b.gate
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": at, "refresh_token": rt, "expires_in": ttl, "token_type": "bearer"})
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type oauthFixture struct {
	box   *oauthBox
	clock *fakeClock
	path  string
	logs  *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newOAuthFixture(t *testing.T) *oauthFixture {
	f := &oauthFixture{box: newOAuthBox(t), clock: newFakeClock(), path: filepath.Join(t.TempDir(), "tokens.json"), logs: &syncBuffer{}}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", f.logs.String())
		}
		f.checkNoSecretLogged(t)
	})
	return f
}

// open makes an OAuth on the fixture's store, as a (re)start would.
func (f *oauthFixture) open(t *testing.T) *OAuth {
	t.Helper()
	o, err := NewOAuth(f.box.endpoint(f.clock.Now), OAuthOptions{Path: f.path, Seal: testSeal}, zerolog.New(f.logs).Level(zerolog.DebugLevel))
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func (f *oauthFixture) login(t *testing.T, o *OAuth) {
	t.Helper()
	if err := o.Exchange(context.Background(), f.box.code(), "http://localhost:8080/auth/callback"); err != nil {
		t.Fatal(err)
	}
}

func (f *oauthFixture) stored(t *testing.T) storeData {
	t.Helper()
	st, _, err := loadStore(f.path, testSeal, func(string) {})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func (f *oauthFixture) checkNoSecretLogged(t *testing.T) {
	logs := f.logs.String()
	f.box.mu.Lock()
	defer f.box.mu.Unlock()
	for _, s := range append([]string{oauthClientSecret}, f.box.issued...) {
		if strings.Contains(logs, s) {
			t.Errorf("a secret appears in the log: %s…", s[:6])
		}
	}
}

var self = Subject{Type: User, ID: "self"}

func TestOAuthWithoutStoreNeedsLogin(t *testing.T) {
	f := newOAuthFixture(t)
	o := f.open(t)
	if o.LoggedIn() {
		t.Fatal("logged in without a store")
	}
	_, err := o.Token(context.Background(), self)
	if !errors.Is(err, ErrLoginRequired) {
		t.Fatalf("Token without login: %v, want ErrLoginRequired", err)
	}
	if f.box.requests.Load() != 0 {
		t.Fatal("asked Box for a token without a login")
	}
	if _, err := os.Stat(f.path); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a store was created without a login")
	}
}

func TestOAuthLoginSavesTokensAndCallsOnLogin(t *testing.T) {
	f := newOAuthFixture(t)
	o := f.open(t)
	var calls atomic.Int64
	o.OnLogin(func() { calls.Add(1) })
	o.OnLogin(func() { calls.Add(10) })
	f.login(t, o)
	if calls.Load() != 11 {
		t.Fatalf("OnLogin functions called %d, want both once", calls.Load())
	}
	if !o.LoggedIn() {
		t.Fatal("not logged in after the code exchange")
	}
	st := f.stored(t)
	if st.RefreshToken != f.box.newest() || st.AccessToken == "" {
		t.Fatal("the store does not hold the login's tokens")
	}
	tok, err := o.Token(context.Background(), self)
	if err != nil || tok.Access() != st.AccessToken {
		t.Fatalf("Token after login: %v (want the login's access token)", err)
	}
	if f.box.refreshes.Load() != 0 {
		t.Fatal("refreshed right after the login")
	}
	if err := o.SetUser(StoredUser{ID: "42", Name: "Ada", Login: "ada@example.com"}); err != nil {
		t.Fatal(err)
	}
	if u := f.open(t).User(); u.ID != "42" || u.String() != "Ada (ada@example.com)" {
		t.Fatalf("user after restart: %+v", u)
	}
}

func TestOAuthRejectedCodeChangesNothing(t *testing.T) {
	f := newOAuthFixture(t)
	o := f.open(t)
	f.login(t, o)
	before, _ := os.ReadFile(f.path)
	var calls atomic.Int64
	o.OnLogin(func() { calls.Add(1) })
	err := o.Exchange(context.Background(), "NOTACODE", "http://localhost:8080/auth/callback")
	if !errors.Is(err, ErrGrant) {
		t.Fatalf("bad code: %v, want ErrGrant", err)
	}
	after, _ := os.ReadFile(f.path)
	if !bytes.Equal(before, after) || calls.Load() != 0 || !o.LoggedIn() {
		t.Fatal("a rejected code changed the login")
	}
}

func TestOAuthRefreshRotatesAndPersistsBeforeReturning(t *testing.T) {
	f := newOAuthFixture(t)
	o := f.open(t)
	f.login(t, o)
	first, _ := o.Token(context.Background(), self)
	for i := range 5 {
		old := f.stored(t).RefreshToken
		f.clock.Advance(2 * time.Hour) // the access token has expired
		tok, err := o.Token(context.Background(), self)
		if err != nil {
			t.Fatal(err)
		}
		// Token has returned: the store must already hold the new refresh token.
		st := f.stored(t)
		if st.RefreshToken == old || st.RefreshToken != f.box.newest() {
			t.Fatalf("refresh %d: the store does not hold Box's new refresh token", i)
		}
		if st.AccessToken != tok.Access() || tok.Access() == first.Access() {
			t.Fatalf("refresh %d: the store's access token is not the one handed out", i)
		}
		if !tok.Expiry.Equal(f.clock.Now().Add(time.Hour)) {
			t.Fatalf("expiry %v, want now+1h", tok.Expiry)
		}
		fi, _ := os.Stat(f.path)
		if fi.Mode().Perm() != 0o600 {
			t.Fatalf("store mode %04o", fi.Mode().Perm())
		}
	}
	if got := f.box.refreshes.Load(); got != 5 {
		t.Fatalf("%d refreshes, want 5", got)
	}
	if f.box.reused() != 0 {
		t.Fatal("a refresh token was sent twice")
	}
	entries, _ := os.ReadDir(filepath.Dir(f.path))
	if len(entries) != 1 {
		t.Fatalf("%d files beside the store, want none", len(entries)-1)
	}
}

func TestOAuthAskingAgainRefreshes(t *testing.T) {
	// The cache asks again when a token is due for renewal or Box rejected it
	// (401), maybe right after it got it: the same token must not come back.
	f := newOAuthFixture(t)
	o := f.open(t)
	f.login(t, o)
	a, _ := o.Token(context.Background(), self)
	b, err := o.Token(context.Background(), self)
	if err != nil {
		t.Fatal(err)
	}
	if a.Access() == b.Access() || f.box.refreshes.Load() != 1 {
		t.Fatal("asking again did not refresh")
	}
}

func TestOAuthHundredConcurrentCallersCauseOneRefresh(t *testing.T) {
	for _, viaCache := range []bool{false, true} {
		t.Run(fmt.Sprintf("cache=%v", viaCache), func(t *testing.T) {
			f := newOAuthFixture(t)
			f.box.gate = make(chan struct{})
			o := f.open(t)
			f.login(t, o)
			f.clock.Advance(2 * time.Hour)
			var src interface {
				Token(context.Context, Subject) (Token, error)
			} = o
			if viaCache {
				src = newTestCache(t, o, CacheOptions{Now: f.clock.Now})
			}
			var wg, started sync.WaitGroup
			tokens := make(chan string, 100)
			for range 100 {
				wg.Add(1)
				started.Add(1)
				go func() {
					defer wg.Done()
					started.Done()
					tok, err := src.Token(context.Background(), self)
					if err != nil {
						t.Error(err)
						return
					}
					tokens <- tok.Access()
				}()
			}
			// Box answers the refresh once every caller is waiting.
			started.Wait()
			time.Sleep(50 * time.Millisecond)
			close(f.box.gate)
			wg.Wait()
			close(tokens)
			distinct := map[string]bool{}
			for tok := range tokens {
				distinct[tok] = true
			}
			if n := f.box.refreshes.Load(); n != 1 {
				t.Fatalf("%d refreshes for 100 concurrent callers, want 1", n)
			}
			if len(distinct) != 1 || f.box.reused() != 0 {
				t.Fatalf("%d distinct tokens handed out, %d refresh tokens reused", len(distinct), f.box.reused())
			}
		})
	}
}

func TestOAuthRestartUsesStoredTokensWithoutRefresh(t *testing.T) {
	f := newOAuthFixture(t)
	o := f.open(t)
	f.login(t, o)
	first, _ := o.Token(context.Background(), self)
	f.clock.Advance(30 * time.Minute)

	again := f.open(t) // a restart
	if !again.LoggedIn() {
		t.Fatal("not logged in after a restart")
	}
	tok, err := again.Token(context.Background(), self)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Access() != first.Access() || !tok.Expiry.Equal(first.Expiry) {
		t.Fatal("the restart did not use the stored access token")
	}
	if f.box.requests.Load() != 1 { // the login's code exchange only
		t.Fatalf("%d token requests, want only the login's", f.box.requests.Load())
	}
}

func TestOAuthRestartRefreshesAStoredTokenAboutToExpire(t *testing.T) {
	f := newOAuthFixture(t)
	o := f.open(t)
	f.login(t, o)
	f.clock.Advance(time.Hour - 30*time.Second)
	tok, err := f.open(t).Token(context.Background(), self)
	if err != nil {
		t.Fatal(err)
	}
	if f.box.refreshes.Load() != 1 || tok.Access() != f.stored(t).AccessToken {
		t.Fatal("a stored token with 30s left was handed out instead of refreshed")
	}
}

func TestOAuthRejectedRefreshTokenIsErrGrantWithoutRetries(t *testing.T) {
	f := newOAuthFixture(t)
	o := f.open(t)
	f.login(t, o)
	f.box.kill() // expired after 60 days, or revoked
	f.clock.Advance(2 * time.Hour)
	_, err := o.Token(context.Background(), self)
	var te *TokenError
	if !errors.Is(err, ErrGrant) || !errors.As(err, &te) || te.Code != "invalid_grant" {
		t.Fatalf("rejected refresh token: %v, want a TokenError of kind ErrGrant", err)
	}
	if !strings.Contains(f.logs.String(), "/auth/login") {
		t.Error("the log does not point to /auth/login")
	}
	n := f.box.requests.Load()
	for range 5 {
		if _, err := o.Token(context.Background(), self); !errors.Is(err, ErrGrant) {
			t.Fatalf("later call: %v, want ErrGrant", err)
		}
	}
	if o.LoggedIn() || !o.LoginExpired() {
		t.Fatal("still logged in after Box rejected the refresh token")
	}
	st := f.stored(t)
	if st.RefreshToken != "" || st.AccessToken != "" || st.Rejected == nil {
		t.Fatal("the store still holds the rejected tokens")
	}
	// A restart keeps saying so, without asking Box again.
	if _, err := f.open(t).Token(context.Background(), self); !errors.Is(err, ErrGrant) {
		t.Fatalf("after restart: %v, want ErrGrant", err)
	}
	if f.box.requests.Load() != n {
		t.Fatalf("%d more token requests after the rejection, want none", f.box.requests.Load()-n)
	}
	if f.box.reused() > 1 {
		t.Fatal("the rejected refresh token was sent more than twice")
	}
	// A new login recovers.
	f.login(t, o)
	if _, err := o.Token(context.Background(), self); err != nil {
		t.Fatal(err)
	}
}

func TestOAuthTakesTokensThatAnotherProcessRotated(t *testing.T) {
	// boxproxy token (or a twin) refreshed on the same store: the refresh token
	// in this process's memory is dead; it must not be sent.
	f := newOAuthFixture(t)
	a := f.open(t)
	f.login(t, a)
	b := f.open(t)
	f.clock.Advance(2 * time.Hour)
	if _, err := b.Token(context.Background(), self); err != nil {
		t.Fatal(err)
	}
	tok, err := a.Token(context.Background(), self)
	if err != nil {
		t.Fatal(err)
	}
	if f.box.reused() != 0 {
		t.Fatal("a refresh token that another process used was sent again")
	}
	if tok.Access() != f.stored(t).AccessToken || f.box.refreshes.Load() != 1 {
		t.Fatal("the other process's fresh token was not taken")
	}
}

func TestOAuthUnsavedTokensAreSavedBeforeUse(t *testing.T) {
	f := newOAuthFixture(t)
	o := f.open(t)
	f.login(t, o)
	dir := filepath.Dir(f.path)
	hidden := dir + ".away"
	if err := os.Rename(dir, hidden); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(2 * time.Hour)
	if _, err := o.Token(context.Background(), self); err == nil {
		t.Fatal("a token was handed out although its refresh token could not be saved")
	} else if strings.Contains(err.Error(), "SECRET") {
		t.Fatalf("error quotes a token: %v", err)
	}
	if err := os.Rename(hidden, dir); err != nil {
		t.Fatal(err)
	}
	tok, err := o.Token(context.Background(), self)
	if err != nil {
		t.Fatal(err)
	}
	st := f.stored(t)
	if st.RefreshToken != f.box.newest() || tok.Access() != st.AccessToken {
		t.Fatal("the new tokens kept in memory were not saved")
	}
	if f.box.refreshes.Load() != 1 || f.box.reused() != 0 {
		t.Fatal("refreshed again instead of saving the tokens it had")
	}
}

func TestOAuthLogoutRevokesAndRemovesTheStore(t *testing.T) {
	f := newOAuthFixture(t)
	o := f.open(t)
	f.login(t, o)
	st := f.stored(t)
	if err := o.Logout(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.box.mu.Lock()
	revoked := strings.Join(f.box.revoked, " ")
	f.box.mu.Unlock()
	if !strings.Contains(revoked, st.RefreshToken) || !strings.Contains(revoked, st.AccessToken) {
		t.Fatal("logout did not revoke both tokens")
	}
	if _, err := os.Stat(f.path); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("the store is still there")
	}
	if o.LoggedIn() {
		t.Fatal("still logged in")
	}
	if _, err := o.Token(context.Background(), self); !errors.Is(err, ErrLoginRequired) {
		t.Fatalf("after logout: %v", err)
	}
}

func TestOAuthLogoutKeepsTheStoreWhenBoxCannotRevoke(t *testing.T) {
	f := newOAuthFixture(t)
	o := f.open(t)
	f.login(t, o)
	f.box.revokeErr = http.StatusServiceUnavailable
	err := o.Logout(context.Background())
	if err == nil || strings.Contains(err.Error(), "SECRET") {
		t.Fatalf("logout with Box failing: %v", err)
	}
	if !o.LoggedIn() || f.stored(t).RefreshToken == "" {
		t.Fatal("the login was dropped although it could not be revoked")
	}
}

func TestOAuthNewLoginRevokesThePreviousRefreshToken(t *testing.T) {
	f := newOAuthFixture(t)
	o := f.open(t)
	f.login(t, o)
	old := f.stored(t).RefreshToken
	f.login(t, o)
	f.box.mu.Lock()
	defer f.box.mu.Unlock()
	if len(f.box.revoked) != 1 || f.box.revoked[0] != old {
		t.Fatal("the previous login's refresh token was not revoked")
	}
}

func TestOAuthAuthCodeURL(t *testing.T) {
	o := &OAuth{ep: &Endpoint{ClientID: "cid"}}
	u, err := url.Parse(o.AuthCodeURL("https://account.box.com/api/oauth2/authorize", "http://localhost:8080/auth/callback", "st&ate"))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if q.Get("response_type") != "code" || q.Get("client_id") != "cid" || q.Get("state") != "st&ate" ||
		q.Get("redirect_uri") != "http://localhost:8080/auth/callback" || u.Host != "account.box.com" {
		t.Fatalf("authorize URL %s", u)
	}
	if q.Has("client_secret") {
		t.Fatal("the client secret is in the authorize URL")
	}
	// The configured URL's own parameters are kept; boxproxy's replace any
	// of the same name, and an empty query ("?") or a trailing "&" breaks
	// nothing.
	for _, base := range []string{"https://ent.box.com/authorize?x=1", "https://ent.box.com/authorize?x=1&", "https://ent.box.com/authorize?x=1&client_id=other&state=fixed", "https://ent.box.com/authorize?"} {
		u, err := url.Parse(o.AuthCodeURL(base, "http://r", "s"))
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		if q.Get("client_id") != "cid" || q.Get("state") != "s" || len(q["client_id"]) != 1 || len(q["state"]) != 1 ||
			q.Get("response_type") != "code" || q.Get("redirect_uri") != "http://r" || u.Path != "/authorize" {
			t.Errorf("authorize URL from %s: %s", base, u)
		}
		if strings.Contains(base, "x=1") && q.Get("x") != "1" {
			t.Errorf("authorize URL from %s lost x=1: %s", base, u)
		}
	}
}

func TestOAuthStartTakesOverTheJournalOfAnInterruptedRefresh(t *testing.T) {
	f := newOAuthFixture(t)
	o := f.open(t)
	f.login(t, o)
	before, _ := os.ReadFile(f.path)
	f.clock.Advance(2 * time.Hour)
	tok, err := o.Token(context.Background(), self)
	if err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(f.path)
	if _, err := os.Stat(journalPath(f.path)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("the journal outlived the save")
	}
	// The process died after the journal was written and before the store
	// was replaced: the store still holds the refresh token Box has rotated.
	if err := os.WriteFile(f.path, before, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(journalPath(f.path), after, 0o600); err != nil {
		t.Fatal(err)
	}
	again := f.open(t)
	got, err := again.Token(context.Background(), self)
	if err != nil {
		t.Fatal(err)
	}
	if got.Access() != tok.Access() || f.box.refreshes.Load() != 1 || f.box.reused() != 0 {
		t.Fatal("the start did not take over the journal's tokens")
	}
	// Sealed with a fresh nonce each time: compare what the files hold.
	if now, want := f.stored(t), decodeFor(t, after); now.RefreshToken != want.RefreshToken || now.AccessToken != want.AccessToken {
		t.Fatal("the store was not brought up to date from the journal")
	}
	if _, err := os.Stat(journalPath(f.path)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("the journal was not removed after it was taken over")
	}
	if !strings.Contains(f.logs.String(), "crash interrupted") {
		t.Error("the take-over was not logged")
	}
}

func TestOAuthStartIgnoresAStaleOrBrokenJournal(t *testing.T) {
	for name, journal := range map[string]func(store []byte) []byte{
		"same as the store": func(store []byte) []byte { return store },
		"cut off":           func(store []byte) []byte { return store[:len(store)/2] },
		"empty":             func([]byte) []byte { return nil },
	} {
		t.Run(name, func(t *testing.T) {
			f := newOAuthFixture(t)
			f.login(t, f.open(t))
			store, _ := os.ReadFile(f.path)
			if err := os.WriteFile(journalPath(f.path), journal(store), 0o600); err != nil {
				t.Fatal(err)
			}
			o := f.open(t)
			if !o.LoggedIn() || f.stored(t).RefreshToken != f.box.newest() {
				t.Fatal("the store's login was not kept")
			}
			if _, err := os.Stat(journalPath(f.path)); !errors.Is(err, os.ErrNotExist) {
				t.Fatal("the useless journal was not removed")
			}
		})
	}
}

func decodeFor(t *testing.T, data []byte) storeData {
	t.Helper()
	st, _, err := decodeFile(data, testSeal)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestIdleLoginIsRefreshedByKeepAliveAndOnlyWhenDue(t *testing.T) {
	f := newOAuthFixture(t)
	o := f.open(t)
	o.keepalive = 72 * time.Hour
	f.login(t, o)
	tok, err := o.Token(context.Background(), self)
	if err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(71 * time.Hour)
	o.keepaliveOnce(context.Background())
	if n := f.box.refreshes.Load(); n != 0 {
		t.Fatalf("%d refreshes before the keep-alive interval passed", n)
	}
	f.clock.Advance(2 * time.Hour)
	o.keepaliveOnce(context.Background())
	if n := f.box.refreshes.Load(); n != 1 {
		t.Fatalf("%d refreshes once the login was idle for longer than the keep-alive interval, want 1", n)
	}
	if st := f.stored(t); !st.RefreshObtained.Equal(f.clock.Now()) {
		t.Fatal("the keep-alive refresh was not saved")
	}
	o.keepaliveOnce(context.Background())
	if n := f.box.refreshes.Load(); n != 1 {
		t.Fatalf("a second keep-alive right after the first refreshed again (%d)", n)
	}
	// The next caller gets the keep-alive's access token, with no refresh.
	next, err := o.Token(context.Background(), self)
	if err != nil || next.Access() == tok.Access() || f.box.refreshes.Load() != 1 || f.box.reused() != 0 {
		t.Fatalf("after keep-alive: err %v, same token %v, %d refreshes", err, next.Access() == tok.Access(), f.box.refreshes.Load())
	}
	f.checkNoSecretLogged(t)
}

func TestOAuthCloseWaitsForTheKeepAliveRefreshAtBoxAndStartsNoMore(t *testing.T) {
	f := newOAuthFixture(t)
	o := f.open(t)
	o.keepalive = 72 * time.Hour
	f.login(t, o)
	f.clock.Advance(73 * time.Hour)
	f.box.gate = make(chan struct{})
	kept := make(chan struct{})
	go func() { o.keepaliveOnce(context.Background()); close(kept) }()
	waitFor(t, func() bool { return f.box.requests.Load() == 2 }, "the keep-alive refresh reaches Box")

	closed := make(chan error, 1)
	go func() { closed <- o.Close(context.Background()) }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while the refresh was at Box", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(f.box.gate)
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	<-kept
	if st := f.stored(t); st.RefreshToken != f.box.newest() {
		t.Fatal("Close returned before the refresh's new refresh token was saved")
	}
	// Closed: neither the keep-alive nor a caller starts a refresh.
	f.clock.Advance(73 * time.Hour)
	o.keepaliveOnce(context.Background())
	if _, err := o.Token(context.Background(), self); !errors.Is(err, ErrClosed) {
		t.Fatalf("Token after Close: %v, want ErrClosed", err)
	}
	if n := f.box.refreshes.Load(); n != 1 {
		t.Fatalf("%d refreshes, want 1: none after Close", n)
	}
	if !strings.Contains(f.logs.String(), "shutdown: waiting for the oauth refresh") {
		t.Fatalf("no log line says what the shutdown waits for:\n%s", f.logs)
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
	}
}

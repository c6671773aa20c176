package integration_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/boxproxy/boxproxy/auth"
	"github.com/boxproxy/boxproxy/cli"
	"github.com/boxproxy/boxproxy/fakebox"
)

// oauthEnv is boxEnv plus the oauth method with its token store at store.
func oauthEnv(box *fakebox.Box, store string) []string {
	return append(boxEnv(box),
		"BOXPROXY_AUTH=oauth",
		"BOXPROXY_CLIENT_ID="+testClientID,
		"BOXPROXY_CLIENT_SECRET="+testClientSecret,
		"BOXPROXY_TOKEN_STORE="+store,
	)
}

// oauthBrowser is a browser for the login flow: it keeps cookies and does not
// follow redirects by itself, so that every step can be checked.
type oauthBrowser struct {
	t   testing.TB
	c   *http.Client
	jar *cookiejar.Jar
}

func newOAuthBrowser(t testing.TB) *oauthBrowser {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &oauthBrowser{t: t, jar: jar, c: &http.Client{
		Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

func (b *oauthBrowser) get(u string) (*http.Response, string) {
	b.t.Helper()
	resp, err := b.c.Get(u)
	if err != nil {
		b.t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// startLogin opens base/auth/login, checks the redirect to Box's authorize
// page, lets the stand-in answer, and returns the callback URL that Box
// redirects the browser to (not opened yet).
func (b *oauthBrowser) startLogin(base string, box *fakebox.Box) string {
	b.t.Helper()
	resp, _ := b.get(base + "/auth/login")
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, box.AuthorizeURL()+"?") {
		b.t.Fatalf("/auth/login: %d to %q, want 302 to the authorize page", resp.StatusCode, loc)
	}
	au, _ := url.Parse(loc)
	q := au.Query()
	if q.Get("redirect_uri") != base+"/auth/callback" || q.Get("client_id") != testClientID ||
		q.Get("response_type") != "code" || len(q.Get("state")) < 43 || q.Has("client_secret") {
		b.t.Fatalf("authorize URL has the wrong parameters: %v", redactQuery(q))
	}
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Value == q.Get("state") {
			cookie = c
		}
	}
	if cookie == nil || !cookie.HttpOnly || cookie.SameSite != http.SameSiteLaxMode {
		b.t.Fatalf("/auth/login set no HttpOnly SameSite=Lax cookie holding the state: %v", resp.Header["Set-Cookie"])
	}
	resp, _ = b.get(loc)
	cb := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(cb, base+"/auth/callback?") {
		b.t.Fatalf("authorize page: %d to %q, want 302 to the callback", resp.StatusCode, cb)
	}
	return cb
}

// login runs the whole flow and returns the last page.
func (b *oauthBrowser) login(base string, box *fakebox.Box) (int, string) {
	b.t.Helper()
	resp, page := b.get(b.startLogin(base, box))
	return resp.StatusCode, page
}

func redactQuery(q url.Values) url.Values {
	q = cloneQuery(q)
	for _, k := range []string{"state", "code"} {
		if q.Has(k) {
			q.Set(k, "…")
		}
	}
	return q
}

func cloneQuery(q url.Values) url.Values {
	out := url.Values{}
	for k, v := range q {
		out[k] = append([]string(nil), v...)
	}
	return out
}

// storedTokens reads the token store as the test's own view of it.
type storedTokens struct {
	Version      int    `json:"version"`
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	User         *struct {
		ID    string `json:"id"`
		Login string `json:"login"`
	} `json:"user"`
}

// readStore decrypts the token store (encrypted under the default key, derived
// from the client secret) after checking that the file holds no issued token.
func readStore(t testing.TB, path string) storedTokens {
	t.Helper()
	return readStoreKey(t, path, "")
}

func readStoreKey(t testing.TB, path, storeKey string) storedTokens {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("token store: %v", err)
	}
	var sf struct {
		Version int    `json:"version"`
		Sealed  []byte `json:"sealed"`
	}
	if err := json.Unmarshal(data, &sf); err != nil || sf.Version != 2 {
		t.Fatalf("token store is not an encrypted store (version 2): %v", err)
	}
	sl, err := auth.StoreSeal(storeKey, testClientSecret, "oauth-login")
	if err != nil {
		t.Fatal(err)
	}
	inner, err := sl.Open(sf.Sealed, []byte("boxproxy token store file"))
	if err != nil {
		t.Fatalf("token store does not decrypt: %v", err)
	}
	var st storedTokens
	if err := json.Unmarshal(inner, &st); err != nil {
		t.Fatalf("token store's content is not JSON: %v", err)
	}
	for _, tok := range []string{st.AccessToken, st.RefreshToken} {
		if tok != "" && strings.Contains(string(data), tok) {
			t.Fatal("the token store file holds a token in plaintext")
		}
	}
	return st
}

func grantRequests(box *fakebox.Box, grant string) (ok, failed int) {
	for _, r := range box.TokenRequests() {
		if r.GrantType == grant {
			if r.OK {
				ok++
			} else {
				failed++
			}
		}
	}
	return ok, failed
}

func checkPage(t testing.TB, box *fakebox.Box, page string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(page, w) {
			t.Errorf("page does not say %q:\n%s", w, page)
		}
	}
	assertNoSecrets(t, "login page", page, append(box.IssuedTokens(), testClientSecret))
}

func usersMe(t testing.TB, p *testProxy, hdr ...string) map[string]any {
	t.Helper()
	resp, body := p.Get(t, "/2.0/users/me", hdr...)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/2.0/users/me: %d %s", resp.StatusCode, body)
	}
	return jsonBody(t, body)
}

func TestOAuthBrowserLoginMakesTheProxyReadyAsTheUser(t *testing.T) {
	box := startBox(t, func(c *fakebox.Config) { c.OAuthUserID = userBob })
	store := filepath.Join(t.TempDir(), "tokens.json")
	p := startProxy(t, box, oauthEnv(box, store)...)

	// Before the login: not ready, and API calls name the login URL.
	resp, body := p.Get(t, "/readyz")
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz before login: %d, want 503", resp.StatusCode)
	}
	if e := decodeBoxError(t, resp, body); e.Code != "login_required" {
		t.Errorf("/readyz before login: code %q", e.Code)
	}
	resp, body = p.Get(t, "/2.0/users/me")
	e := decodeBoxError(t, resp, body)
	if resp.StatusCode != http.StatusServiceUnavailable || e.Code != "login_required" || !strings.Contains(e.Message, p.URL+"/auth/login") {
		t.Fatalf("/2.0/users/me before login: %d %+v, want 503 login_required naming %s/auth/login", resp.StatusCode, e, p.URL)
	}
	if n := len(requestsTo(box, "api")); n != 0 {
		t.Fatalf("%d requests reached Box before the login", n)
	}
	if _, err := os.Stat(store); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a token store exists before the login")
	}

	// The login.
	status, page := newOAuthBrowser(t).login(p.URL, box)
	if status != http.StatusOK {
		t.Fatalf("callback: %d\n%s", status, page)
	}
	checkPage(t, box, page, "logged in", "Bob", "bob@example.com", "ready")
	fi, err := os.Stat(store)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token store after login: %v, mode %v", err, fi.Mode())
	}
	if st := readStore(t, store); st.RefreshToken == "" || st.User == nil || st.User.ID != userBob {
		t.Fatal("the store does not hold the refresh token and the user")
	}

	// Ready, and API calls act as the user who logged in.
	if resp, body := p.Get(t, "/readyz"); resp.StatusCode != http.StatusOK {
		t.Fatalf("/readyz after login: %d %s", resp.StatusCode, body)
	}
	if me := usersMe(t, p); me["id"] != userBob {
		t.Fatalf("/2.0/users/me after login: %v, want user %s", me, userBob)
	}
	// As-User is passed on beside the user's own token (Bob is an admin).
	if me := usersMe(t, p, "As-User", userAlice); me["id"] != userAlice {
		t.Fatalf("/2.0/users/me with As-User: %v, want user %s", me, userAlice)
	}
	reqs := requestsTo(box, "api")
	if last := reqs[len(reqs)-1]; last.Header.Get("As-User") != userAlice || !isIssued(box, last.Token) {
		t.Fatal("As-User was not passed on with the login's token")
	}
	if ok, failed := grantRequests(box, "authorization_code"); ok != 1 || failed != 0 {
		t.Fatalf("code exchanges: %d ok, %d failed; want one", ok, failed)
	}
}

func TestOAuthCallbackWithBadStateOrDenialChangesNothing(t *testing.T) {
	box := startBox(t)
	store := filepath.Join(t.TempDir(), "tokens.json")
	p := startProxy(t, box, oauthEnv(box, store)...)
	br := newOAuthBrowser(t)
	cb := br.startLogin(p.URL, box)
	if resp, page := br.get(cb); resp.StatusCode != http.StatusOK {
		t.Fatalf("login: %d\n%s", resp.StatusCode, page)
	}
	before, _ := os.ReadFile(store)
	codes, _ := grantRequests(box, "authorization_code")
	tokenReqs := len(box.TokenRequests())

	check := func(name string, c *oauthBrowser, u string, wantStatus int, want ...string) {
		t.Helper()
		resp, page := c.get(u)
		if resp.StatusCode != wantStatus {
			t.Errorf("%s: %d, want %d\n%s", name, resp.StatusCode, wantStatus, page)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
			t.Errorf("%s: Content-Type %q, want an HTML page", name, ct)
		}
		checkPage(t, box, page, want...)
	}

	// A replayed callback (a reload): the login above cleared the cookie and
	// used up the state; the page says that this login is over (issue 13).
	check("replayed callback", br, cb, http.StatusOK, "already complete", "changed nothing")
	// Even with the state's cookie put back, a state works once.
	forged, _ := url.Parse(p.URL + "/auth/")
	cbURL, _ := url.Parse(cb)
	br.jar.SetCookies(forged, []*http.Cookie{{Name: "boxproxy_oauth_state", Value: cbURL.Query().Get("state")}})
	check("replayed state", br, cb, http.StatusOK, "already complete", "changed nothing")
	// No state at all.
	check("missing state", br, p.URL+"/auth/callback?code=anything", http.StatusBadRequest, "no state")
	// A state this proxy never issued, with a cookie to match.
	br.jar.SetCookies(forged, []*http.Cookie{{Name: "boxproxy_oauth_state", Value: "forged-state"}})
	check("unknown state", br, p.URL+"/auth/callback?state=forged-state&code=anything", http.StatusBadRequest, "expired or was already used")
	// Another browser's login (login CSRF): the state is real, the cookie is not this browser's.
	other := newOAuthBrowser(t)
	otherCB := other.startLogin(p.URL, box)
	check("another browser's state", br, otherCB, http.StatusBadRequest, "not started in this browser")
	// Markup in the parameters is escaped.
	markupURL := p.URL + "/auth/callback?error=%3Cscript%3Ex%3C%2Fscript%3E&error_description=%3Cb%3Ehi%22%27%26"
	check("markup", br, markupURL, http.StatusBadRequest, "&lt;script&gt;", "&lt;b&gt;hi&#34;&#39;&amp;")
	_, markup := br.get(markupURL)
	for _, raw := range []string{"<script>", "<b>", `hi"`} {
		if strings.Contains(markup, raw) {
			t.Errorf("markup page holds %q unescaped:\n%s", raw, markup)
		}
	}
	// The user denies access at Box.
	box.SetDenyLogin(true)
	denied := br.startLogin(p.URL, box)
	if !strings.Contains(denied, "error=access_denied") {
		t.Fatalf("the stand-in did not deny: %s", denied)
	}
	check("access denied", br, denied, http.StatusForbidden, "denied at Box")
	box.SetDenyLogin(false)

	after, _ := os.ReadFile(store)
	if string(before) != string(after) {
		t.Error("a refused callback changed the token store")
	}
	if n, _ := grantRequests(box, "authorization_code"); n != codes || len(box.TokenRequests()) != tokenReqs {
		t.Errorf("a refused callback reached the token endpoint")
	}
	if me := usersMe(t, p); me["id"] != userAlice {
		t.Fatalf("after refused callbacks: %v, want still user %s", me, userAlice)
	}
	// The other browser can still finish its own login.
	if resp, page := other.get(otherCB); resp.StatusCode != http.StatusOK {
		t.Fatalf("the other browser's login: %d\n%s", resp.StatusCode, page)
	}
}

func TestOAuthRestartStaysLoggedInWithoutANewLogin(t *testing.T) {
	box := startBox(t)
	store := filepath.Join(t.TempDir(), "tokens.json")
	env := oauthEnv(box, store)
	p1 := startProxy(t, box, env...)
	if status, page := newOAuthBrowser(t).login(p1.URL, box); status != http.StatusOK {
		t.Fatalf("login: %d\n%s", status, page)
	}
	usersMe(t, p1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p1.Server.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	tokenReqs := len(box.TokenRequests())

	p2 := startProxy(t, box, env...) // a restart on the same store
	if resp, body := p2.Get(t, "/readyz"); resp.StatusCode != http.StatusOK {
		t.Fatalf("/readyz after restart: %d %s", resp.StatusCode, body)
	}
	if me := usersMe(t, p2); me["id"] != userAlice {
		t.Fatalf("after restart: %v", me)
	}
	if n := len(box.TokenRequests()) - tokenReqs; n != 0 {
		t.Fatalf("the restart made %d token requests; the stored access token is still valid", n)
	}
}

func TestOAuthShortLivedTokensRotateAndNoRefreshTokenIsEverReused(t *testing.T) {
	box := startBox(t, func(c *fakebox.Config) { c.TokenTTL = 2 * time.Second })
	store := filepath.Join(t.TempDir(), "tokens.json")
	p := startProxy(t, box, oauthEnv(box, store)...)
	if status, page := newOAuthBrowser(t).login(p.URL, box); status != http.StatusOK {
		t.Fatalf("login: %d\n%s", status, page)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []string
	total, expired := 0, 0
	deadline := time.Now().Add(5 * time.Second)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				resp, err := noRedirectClient.Get(p.URL + "/2.0/users/me")
				if err != nil {
					mu.Lock()
					failures = append(failures, err.Error())
					mu.Unlock()
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				mu.Lock()
				total++
				switch resp.StatusCode {
				case http.StatusOK:
				case http.StatusUnauthorized:
					// A token that expired on its way to Box, twice in a row: only
					// a badly overloaded machine delays requests that long.
					expired++
				default:
					failures = append(failures, resp.Status+" "+string(body))
				}
				mu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d requests failed while tokens rotated, first: %s", len(failures), failures[0])
	}
	if expired > 0 {
		t.Logf("%d of %d requests got Box's 401 (tokens of 2 s expiring in flight on a loaded machine)", expired, total)
	}
	if expired*20 > total {
		t.Fatalf("%d of %d requests got 401", expired, total)
	}
	ok, failed := grantRequests(box, "refresh_token")
	if ok < 2 || failed != 0 {
		t.Fatalf("refreshes: %d ok, %d rejected; want at least 2, none rejected (a reused refresh token is rejected)", ok, failed)
	}
	issued := box.IssuedTokens()
	if st := readStore(t, store); st.RefreshToken != issued[len(issued)-1] {
		t.Fatal("the store does not hold the newest refresh token")
	}
}

func TestOAuthRejectedRefreshTokenSaysLogInAgainWithoutRetryingInALoop(t *testing.T) {
	box := startBox(t)
	store := filepath.Join(t.TempDir(), "tokens.json")
	p := startProxy(t, box, oauthEnv(box, store)...)
	br := newOAuthBrowser(t)
	if status, page := br.login(p.URL, box); status != http.StatusOK {
		t.Fatalf("login: %d\n%s", status, page)
	}
	usersMe(t, p)
	// Box drops the login (revoked, or unused for 60 days): the refresh token
	// and the access tokens issued with it stop working.
	if !box.RevokeToken(readStore(t, store).RefreshToken) {
		t.Fatal("the stand-in does not know the stored refresh token")
	}
	for i := range 20 {
		resp, body := p.Get(t, "/2.0/users/me")
		e := decodeBoxError(t, resp, body)
		if resp.StatusCode != http.StatusServiceUnavailable || e.Code != "login_expired" || !strings.Contains(e.Message, p.URL+"/auth/login") {
			t.Fatalf("request %d after Box dropped the login: %d %+v, want 503 login_expired naming the login URL", i, resp.StatusCode, e)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if resp, _ := p.Get(t, "/readyz"); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz with a rejected login: %d, want 503", resp.StatusCode)
	}
	if ok, failed := grantRequests(box, "refresh_token"); ok != 0 || failed != 1 {
		t.Fatalf("refreshes: %d ok, %d rejected; want exactly one attempt, not a loop", ok, failed)
	}
	if !strings.Contains(p.Logs(), "log in again") {
		t.Error("the log does not say to log in again")
	}
	// A new login recovers at once (the cache's back-off is dropped).
	if status, page := br.login(p.URL, box); status != http.StatusOK {
		t.Fatalf("new login: %d\n%s", status, page)
	}
	usersMe(t, p)
}

// freeAddr returns a 127.0.0.1 address with a port that was free a moment ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

func TestOAuthKill9InALoopNeverLosesTheLogin(t *testing.T) {
	bin := binaryPath(t)
	// The stand-in reports each refresh it answers, so that some kills can
	// be aimed at the moments right after one.
	refreshed := make(chan struct{}, 64)
	box := startBox(t, func(c *fakebox.Config) {
		c.TokenTTL = time.Second
		c.Logf = func(format string, args ...any) {
			if strings.Contains(format, "issued token") && len(args) > 0 && args[0] == "refresh_token" {
				select {
				case refreshed <- struct{}{}:
				default:
				}
			}
		}
	})
	store := filepath.Join(t.TempDir(), "tokens.json")
	addr := freeAddr(t)
	base := "http://" + addr
	env := append(oauthEnv(box, store), "BOXPROXY_LISTEN="+addr, "BOXPROXY_PUBLIC_URL="+base)
	var stderr syncBuffer
	client := &http.Client{Timeout: 10 * time.Second}

	type proc struct {
		cmd    *exec.Cmd
		exited chan struct{}
	}
	start := func() proc {
		t.Helper()
		cmd := exec.Command(bin)
		cmd.Env = env
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		p := proc{cmd, make(chan struct{})}
		go func() { _ = cmd.Wait(); close(p.exited) }()
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			<-p.exited
		})
		waitUntil(t, 10*time.Second, func() bool {
			select {
			case <-p.exited:
				t.Fatalf("boxproxy exited at start:\n%s", stderr.String())
			default:
			}
			resp, err := client.Get(base + "/healthz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		}, "boxproxy serves")
		return p
	}
	// getMe asks /2.0/users/me. Tokens live 1 s here, so on a loaded machine
	// one may expire on its way to Box twice in a row (401): that is asked
	// again; a lost login is not (503 login_expired).
	getMe := func() (int, string) {
		t.Helper()
		for attempt := 0; ; attempt++ {
			resp, err := client.Get(base + "/2.0/users/me")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized || attempt == 3 {
				return resp.StatusCode, string(body)
			}
		}
	}
	usersMeOK := func(what string) {
		t.Helper()
		if status, body := getMe(); status != http.StatusOK {
			t.Fatalf("%s: /2.0/users/me %d %s\nstderr:\n%s", what, status, body, stderr.String())
		}
	}

	br := newOAuthBrowser(t)
	p := start()
	if status, page := br.login(base, box); status != http.StatusOK {
		t.Fatalf("login: %d\n%s", status, page)
	}
	usersMeOK("after login")

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	windowHits := 0
	const iterations = 15
	for i := range iterations {
		// Traffic, so that refreshes happen while the process dies.
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range 2 {
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
					if resp, err := c.Get(base + "/2.0/users/me"); err == nil {
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					} else {
						time.Sleep(5 * time.Millisecond)
					}
				}
			}()
		}
		if i%2 == 0 {
			// Any moment.
			time.Sleep(time.Duration(rng.IntN(1200)) * time.Millisecond)
		} else {
			// Shortly after Box answered a refresh: while the proxy saves it.
			for len(refreshed) > 0 {
				<-refreshed
			}
			select {
			case <-refreshed:
			case <-time.After(5 * time.Second):
				t.Fatalf("iteration %d: no refresh within 5s", i)
			}
			time.Sleep(time.Duration(10+rng.IntN(40)) * time.Millisecond)
		}
		_ = p.cmd.Process.Kill() // SIGKILL: no chance to clean up
		<-p.exited
		close(stop)
		wg.Wait()
		waitUntil(t, 5*time.Second, func() bool { return box.ActiveRequests() == 0 }, "the stand-in has finished every request")

		// The store must load whatever the moment of the kill.
		readStore(t, store)
		// Box's newest access token can only have been used if the refresh
		// token issued with it was saved first: then the login survives.
		issued := box.IssuedTokens()
		newestUsed := false
		for _, r := range box.Requests() {
			newestUsed = newestUsed || r.Token == issued[len(issued)-2]
		}

		p = start()
		if status, body := getMe(); status != http.StatusOK {
			if newestUsed || !strings.Contains(body, "login_expired") {
				t.Fatalf("iteration %d: the login was lost: %d %s\nstderr:\n%s", i, status, body, stderr.String())
			}
			// The kill fell after Box received a refresh and before its answer
			// reached the disk: the window that cannot be closed.
			windowHits++
			t.Logf("iteration %d: killed between Box's rotation and the journal write (the window that cannot be closed)", i)
			if status, page := br.login(base, box); status != http.StatusOK {
				t.Fatalf("iteration %d: new login: %d\n%s", i, status, page)
			}
		}
		usersMeOK("after restart")
	}
	var journals, saves []float64
	for _, l := range logLines(t, stderr.String()) {
		if v, ok := l["save_took_ms"].(float64); ok {
			saves = append(saves, v)
			journals = append(journals, l["journal_took_ms"].(float64))
		}
	}
	if len(saves) > 0 {
		slices.Sort(saves)
		slices.Sort(journals)
		t.Logf("%d refreshes; from Box's answer to the journal: median %.2fms, max %.2fms; to the synced store: median %.1fms, max %.1fms",
			len(saves), journals[len(saves)/2], journals[len(saves)-1], saves[len(saves)/2], saves[len(saves)-1])
	}
	if n := strings.Count(stderr.String(), "took over the tokens of a refresh that a crash interrupted"); n > 0 {
		t.Logf("%d restarts took over the journal of a refresh that the kill interrupted", n)
	}
	if windowHits > 1 {
		t.Fatalf("%d of %d kills fell into the window between Box's rotation and the journal write; it should be tiny", windowHits, iterations)
	}
	ok, failed := grantRequests(box, "refresh_token")
	if ok < 5 || failed != windowHits {
		t.Fatalf("refreshes: %d ok, %d rejected (window hits %d); a rejected refresh means a refresh token was reused", ok, failed, windowHits)
	}
	assertNoSecrets(t, "binary stderr", stderr.String(), append(box.IssuedTokens(), testClientSecret))
}

func TestOAuthBrokenStoreStopsTheBinaryWithAClearError(t *testing.T) {
	box := startBox(t)
	dir := t.TempDir()
	corrupt := filepath.Join(dir, "corrupt.json")
	if err := writeFile(corrupt, []byte(`{"version":1,"refresh_token":"it-refresh-SECRET`)); err != nil {
		t.Fatal(err)
	}
	for name, store := range map[string]string{"corrupt": corrupt, "directory": dir} {
		before, _ := os.ReadFile(store)
		_, stderr, code := runBinary(t, oauthEnv(box, store))
		if code == 0 || !strings.Contains(stderr, "BOXPROXY_TOKEN_STORE") {
			t.Errorf("%s store: exit %d, stderr %q; want a failed start naming BOXPROXY_TOKEN_STORE", name, code, stderr)
		}
		if strings.Contains(stderr, "it-refresh-SECRET") {
			t.Errorf("%s store: the error quotes the store", name)
		}
		if after, _ := os.ReadFile(store); string(after) != string(before) {
			t.Errorf("%s store was changed", name)
		}
	}
}

func TestOAuthLoginAndLogoutCommands(t *testing.T) {
	box := startBox(t, func(c *fakebox.Config) { c.OAuthUserID = userBob })
	store := filepath.Join(t.TempDir(), "tokens.json")
	addr := freeAddr(t)
	base := "http://" + addr
	env := append(oauthEnv(box, store), "BOXPROXY_LISTEN="+addr, "BOXPROXY_PUBLIC_URL="+base)

	// login prints the URL, waits for the browser, says who logged in, exits 0.
	var stdout, stderr syncBuffer
	code := make(chan int, 1)
	go func() { code <- cli.Main([]string{"login"}, env, &stdout, &stderr, "test") }()
	waitUntil(t, 10*time.Second, func() bool { return strings.Contains(stdout.String(), base+"/auth/login") }, "boxproxy login prints the URL")
	if status, page := newOAuthBrowser(t).login(base, box); status != http.StatusOK {
		t.Fatalf("login page: %d\n%s", status, page)
	}
	select {
	case c := <-code:
		if c != 0 {
			t.Fatalf("boxproxy login: exit %d\nstdout: %s\nstderr: %s", c, stdout.String(), stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("boxproxy login did not exit after the login")
	}
	if !strings.Contains(stdout.String(), "logged in as Bob (bob@example.com)") {
		t.Errorf("boxproxy login output: %q", stdout.String())
	}
	st := readStore(t, store)

	// logout revokes both tokens and removes the store.
	var out, errb syncBuffer
	if c := cli.Main([]string{"logout"}, env, &out, &errb, "test"); c != 0 {
		t.Fatalf("boxproxy logout: exit %d: %s", c, errb.String())
	}
	revoked := strings.Join(box.RevokedTokens(), " ")
	if !strings.Contains(revoked, st.RefreshToken) || !strings.Contains(revoked, st.AccessToken) {
		t.Error("logout did not revoke the refresh and access tokens at Box")
	}
	if _, err := os.Stat(store); !errors.Is(err, os.ErrNotExist) {
		t.Error("logout left the token store")
	}
	if !strings.Contains(out.String(), "logged out") {
		t.Errorf("logout output: %q", out.String())
	}
	// Logging out again is fine.
	var out2, errb2 syncBuffer
	if c := cli.Main([]string{"logout"}, env, &out2, &errb2, "test"); c != 0 || !strings.Contains(out2.String(), "not logged in") {
		t.Errorf("second logout: exit %d, %q %q", c, out2.String(), errb2.String())
	}
	// login gives up after BOXPROXY_LOGIN_TIMEOUT.
	var out3, errb3 syncBuffer
	start := time.Now()
	if c := cli.Main([]string{"login"}, append(env, "BOXPROXY_LOGIN_TIMEOUT=300ms"), &out3, &errb3, "test"); c == 0 ||
		!strings.Contains(errb3.String(), "no login within") {
		t.Errorf("login without a browser: exit %d, stderr %q", c, errb3.String())
	}
	if time.Since(start) > 10*time.Second {
		t.Error("login did not give up in time")
	}
	secrets := append(box.IssuedTokens(), testClientSecret)
	for _, s := range []string{stdout.String(), stderr.String(), out.String(), errb.String(), out3.String(), errb3.String()} {
		assertNoSecrets(t, "command output", s, secrets)
	}
}

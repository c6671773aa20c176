package integration_test

// The OAuth login from a browser's point of view (issue 13): a login opened by
// any name of the proxy completes, and a reloaded callback page says that the
// login is over instead of calling it foreign. The real-browser test of the
// same flow is browser_test.go.

import (
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/boxproxy/boxproxy/fakebox"
)

// startLocalhostOAuthProxy starts an oauth proxy whose BOXPROXY_PUBLIC_URL is
// http://127.0.0.1:PORT, the address it listens on; http://localhost:PORT is
// another name of the same proxy. It returns the proxy and both base URLs.
func startLocalhostOAuthProxy(t *testing.T, box *fakebox.Box) (p *testProxy, public, other string) {
	t.Helper()
	p = startProxy(t, box, oauthEnv(box, filepath.Join(t.TempDir(), "tokens.json"))...)
	_, port, _ := net.SplitHostPort(p.Addr)
	return p, p.URL, "http://localhost:" + port
}

func TestLoginOpenedByAnotherNameOfTheProxyIsSentToThePublicURLAndCompletes(t *testing.T) {
	t.Parallel()
	box := startBox(t, func(c *fakebox.Config) { c.OAuthUserID = userBob })
	p, public, other := startLocalhostOAuthProxy(t, box)
	br := newOAuthBrowser(t)

	// localhost is not the public URL's host: one redirect to the public
	// URL's /auth/login, and no state cookie for localhost.
	resp, _ := br.get(other + "/auth/login")
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, public+"/auth/login?") {
		t.Fatalf("%s/auth/login: %d to %q, want 302 to %s/auth/login", other, resp.StatusCode, loc, public)
	}
	if c := resp.Header.Values("Set-Cookie"); len(c) != 0 {
		t.Errorf("the redirect to the public URL set cookies %q", c)
	}
	// From there on it is the ordinary flow on the public URL.
	resp, _ = br.get(loc)
	authz := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(authz, box.AuthorizeURL()+"?") {
		t.Fatalf("%s: %d to %q, want 302 to Box's authorize page", loc, resp.StatusCode, authz)
	}
	if u, _ := url.Parse(authz); u.Query().Get("redirect_uri") != public+"/auth/callback" {
		t.Fatalf("redirect_uri %q, want %s/auth/callback", u.Query().Get("redirect_uri"), public)
	}
	resp, _ = br.get(authz)
	cb := resp.Header.Get("Location")
	if !strings.HasPrefix(cb, public+"/auth/callback?") {
		t.Fatalf("Box sent the browser to %q, want the public callback", cb)
	}
	resp, page := br.get(cb)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("callback after a login opened at %s: %d\n%s", other, resp.StatusCode, page)
	}
	checkPage(t, box, page, "logged in", "Bob")
	if me := usersMe(t, p); me["id"] != userBob {
		t.Fatalf("/2.0/users/me after the login: %v, want user %s", me, userBob)
	}
}

func TestLoginRedirectToThePublicURLHappensOnceSoAHostRewritingFrontEndCannotLoop(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	_, _, other := startLocalhostOAuthProxy(t, box)
	// A reverse proxy in front of boxproxy that sends a Host of its own
	// (nginx's default) brings the redirected request back with a Host that
	// is not the public URL's: the login then starts instead of redirecting
	// again.
	resp, _ := newOAuthBrowser(t).get(other + "/auth/login?moved=1")
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, box.AuthorizeURL()+"?") {
		t.Fatalf("a redirected /auth/login with another Host: %d to %q, want 302 to Box's authorize page", resp.StatusCode, loc)
	}
}

func TestLoginCallbackReloadedSaysTheLoginIsOverNotThatItWasStartedElsewhere(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	p, public, _ := startLocalhostOAuthProxy(t, box)
	br := newOAuthBrowser(t)
	cb := br.startLogin(public, box)
	if resp, page := br.get(cb); resp.StatusCode != http.StatusOK {
		t.Fatalf("login: %d\n%s", resp.StatusCode, page)
	}
	tokenReqs := len(box.TokenRequests())
	for i := 0; i < 2; i++ {
		resp, page := br.get(cb)
		if resp.StatusCode != http.StatusOK || strings.Contains(page, "not started in this browser") {
			t.Errorf("reload %d of the callback: %d\n%s", i+1, resp.StatusCode, page)
		}
		checkPage(t, box, page, "already complete")
	}
	if n := len(box.TokenRequests()); n != tokenReqs {
		t.Errorf("reloads of a completed login reached the token endpoint %d times", n-tokenReqs)
	}
	// A denied login, reloaded: the same denial page, not a foreign login.
	box.SetDenyLogin(true)
	denied := br.startLogin(public, box)
	box.SetDenyLogin(false)
	for i := 0; i < 2; i++ {
		resp, page := br.get(denied)
		if resp.StatusCode != http.StatusForbidden || strings.Contains(page, "not started in this browser") {
			t.Errorf("denied login, load %d: %d\n%s", i+1, resp.StatusCode, page)
		}
		checkPage(t, box, page, "denied at Box")
	}
	// A login whose code Box refused, reloaded: already used.
	failed, _ := url.Parse(br.startLogin(public, box))
	q := failed.Query()
	q.Set("code", "not-a-code-box-issued")
	failed.RawQuery = q.Encode()
	if resp, page := br.get(failed.String()); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("a callback with a bad code: %d\n%s", resp.StatusCode, page)
	}
	tokenReqs = len(box.TokenRequests())
	resp, page := br.get(failed.String())
	if resp.StatusCode != http.StatusBadRequest || strings.Contains(page, "not started in this browser") {
		t.Errorf("reloaded failed login: %d\n%s", resp.StatusCode, page)
	}
	checkPage(t, box, page, "already used")
	// A state the proxy does not know (expired, or from before a restart),
	// without a cookie: expired, not foreign.
	resp, page = newOAuthBrowser(t).get(public + "/auth/callback?state=" + strings.Repeat("A", 43) + "&code=x")
	if resp.StatusCode != http.StatusBadRequest || strings.Contains(page, "not started in this browser") {
		t.Errorf("unknown state: %d\n%s", resp.StatusCode, page)
	}
	checkPage(t, box, page, "expired")
	if n := len(box.TokenRequests()); n != tokenReqs {
		t.Errorf("reloads reached the token endpoint %d times", n-tokenReqs)
	}
	if me := usersMe(t, p); me["id"] != userAlice {
		t.Fatalf("after the reloads: %v, want still user %s", me, userAlice)
	}
}

func TestLoginCallbackReloadedWhileItsCodeIsBeingExchangedSaysSoAndChangesNothing(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	p := startProxy(t, box, append(oauthEnv(box, filepath.Join(t.TempDir(), "tokens.json")), "BOXPROXY_TOKEN_TIMEOUT=2s")...)
	br := newOAuthBrowser(t)
	cb := br.startLogin(p.URL, box)
	box.SetTokenFault(fakebox.FaultHang) // the code exchange hangs until the proxy gives up
	first := make(chan int, 1)
	go func() {
		resp, err := br.c.Get(cb)
		if err != nil {
			first <- 0
			return
		}
		resp.Body.Close()
		first <- resp.StatusCode
	}()
	// A reload (from a tab without the cookie, so that it can never take
	// the state itself) while the exchange hangs.
	var page string
	waitUntil(t, 5*time.Second, func() bool {
		var resp *http.Response
		resp, page = newOAuthBrowser(t).get(cb)
		return resp.StatusCode == http.StatusConflict
	}, "a reload during the code exchange answers 409")
	checkPage(t, box, page, "still being completed")
	if status := <-first; status == http.StatusOK || status == 0 {
		t.Fatalf("the hanging exchange answered %d, want an error page", status)
	}
	box.SetTokenFault(fakebox.FaultNone)
	resp, page := newOAuthBrowser(t).get(cb)
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("reload after the failed exchange: %d, want 400", resp.StatusCode)
	}
	checkPage(t, box, page, "already used")
}

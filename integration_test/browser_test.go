package integration_test

// The OAuth login in a real browser (issue 13): Debian's chromium, headless,
// driven by playwright-core (testdata/browser/login.mjs) over the DevTools
// protocol. No browser is downloaded; a missing chromium, node or
// playwright-core is a one-line failure that says how to install it (.ci/run
// does), never a skip.

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/boxproxy/boxproxy/fakebox"
)

// browserDir holds the driver script and its package.json.
const browserDir = "testdata/browser"

// chromiumPath is Debian's chromium, or $CHROMIUM.
func chromiumPath(t testing.TB) string {
	t.Helper()
	p := os.Getenv("CHROMIUM")
	if p == "" {
		p = "/usr/bin/chromium"
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("chromium is missing (%s): apt-get install -y chromium (or set CHROMIUM); the browser test never downloads one", p)
	}
	return p
}

// browserStep is one page as login.mjs saw it.
type browserStep struct {
	URL         string `json:"url"`
	Status      int    `json:"status"`
	Title       string `json:"title"`
	Text        string `json:"text"`
	Navigations []struct {
		URL    string `json:"url"`
		Status int    `json:"status"`
	} `json:"navigations"`
}

// runBrowser runs login.mjs with args and returns what it reports.
func runBrowser(t testing.TB, args map[string]string) (login, reload browserStep, cross map[string]any) {
	t.Helper()
	chromium := chromiumPath(t)
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is missing: apt-get install -y nodejs npm (the browser test drives chromium with playwright-core)")
	}
	if _, err := os.Stat(filepath.Join(browserDir, "node_modules", "playwright-core")); err != nil {
		t.Fatalf("playwright-core is not installed: npm ci --prefix integration_test/%s (.ci/run does)", browserDir)
	}
	a, _ := json.Marshal(args)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "login.mjs", string(a))
	cmd.Dir = browserDir
	cmd.Env = append(os.Environ(), "CHROMIUM="+chromium)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var res struct {
		Login  browserStep    `json:"login"`
		Reload browserStep    `json:"reload"`
		Cross  map[string]any `json:"cross"`
		Error  string         `json:"error"`
	}
	if jerr := json.Unmarshal(out, &res); jerr != nil || res.Error != "" || err != nil {
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("running node: %v", err)
		}
		t.Fatalf("the browser run failed: %v %s\nstdout: %s\nstderr: %s", err, res.Error, out, stderr.String())
	}
	return res.Login, res.Reload, res.Cross
}

func TestBrowserLoginOpenedByAnotherNameCompletesReloadSaysCompleteAndCrossOriginIsRefused(t *testing.T) {
	t.Parallel()
	cpuHeavy(t)
	box := startBox(t, func(c *fakebox.Config) { c.OAuthUserID = userBob })
	p := startProxy(t, box, oauthEnv(box, filepath.Join(t.TempDir(), "tokens.json"))...)
	_, port, _ := net.SplitHostPort(p.Addr)
	// A page of another origin (another port of 127.0.0.1).
	foreign := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte("<!DOCTYPE html><title>elsewhere</title><p>another site</p>"))
	}))
	defer foreign.Close()

	// The login is opened by another name of the proxy than its public URL (p.URL).
	login, reload, cross := runBrowser(t, map[string]string{
		"start":   "http://localhost:" + port + "/auth/login",
		"foreign": foreign.URL + "/",
		"api":     p.URL + "/2.0/users/me",
	})

	if login.Status != http.StatusOK || !strings.HasPrefix(login.URL, p.URL+"/auth/callback?") {
		t.Fatalf("after the login the browser shows %s (%d), want the callback on %s:\n%s\nnavigations: %+v", login.URL, login.Status, p.URL, login.Text, login.Navigations)
	}
	for _, want := range []string{"logged in", "Bob", "bob@example.com"} {
		if !strings.Contains(login.Text, want) {
			t.Errorf("the login page does not say %q:\n%s", want, login.Text)
		}
	}
	if len(login.Navigations) < 4 || !strings.HasPrefix(login.Navigations[0].URL, "http://localhost:"+port+"/auth/login") ||
		!strings.HasPrefix(login.Navigations[1].URL, p.URL+"/auth/login") {
		t.Errorf("navigations %+v, want localhost's /auth/login, then the public URL's, then Box, then the callback", login.Navigations)
	}
	if reload.Status != http.StatusOK || !strings.Contains(reload.Text, "already complete") || strings.Contains(reload.Text, "not started") {
		t.Errorf("the reloaded callback: %d\n%s\nwant 200 saying the login is already complete", reload.Status, reload.Text)
	}
	assertNoSecrets(t, "browser pages", login.Text+reload.Text, append(box.IssuedTokens(), testClientSecret))

	// The proxy is logged in as the user of the browser.
	if resp, body := p.Get(t, "/readyz"); resp.StatusCode != http.StatusOK {
		t.Fatalf("/readyz after the browser login: %d %s", resp.StatusCode, body)
	}
	if me := usersMe(t, p); me["id"] != userBob {
		t.Fatalf("/2.0/users/me after the browser login: %v, want %s", me, userBob)
	}

	// The other origin's fetch reached the proxy and was refused there;
	// nothing of it reached Box.
	if cross["error"] == nil && cross["type"] != "opaque" {
		t.Errorf("cross-origin fetch: %v, want an opaque answer or an error", cross)
	}
	refused := false
	for _, l := range p.AccessLines(t) {
		if l["path"] == "/2.0/users/me" && l["status"] == float64(http.StatusForbidden) {
			refused = true
		}
	}
	if !refused {
		t.Errorf("no 403 for the cross-origin fetch in the access log:\n%s", p.Logs())
	}
	for _, r := range requestsTo(box, "api") {
		if r.Header.Get("Origin") != "" {
			t.Errorf("a request with Origin %q reached Box", r.Header.Get("Origin"))
		}
	}
}

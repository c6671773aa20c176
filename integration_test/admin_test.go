package integration_test

// The admin listener (BOXPROXY_ADMIN_LISTEN, issue 13): /healthz, /readyz and
// /metrics for kubelet and Prometheus, with no Host check and no inbound key,
// forwarding nothing and revealing neither a secret nor a user ID, so that
// the data port can stay on loopback in a pod. POST /quitquitquit is not
// served there (it stays on the data port, behind its guards).

import (
	"context"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// adminGet sends method path to the admin listener at addr with the given
// Host and headers, and returns the status and body.
func adminGet(t testing.TB, addr, method, path, host string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := noRedirectClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s on the admin listener: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// startAdmin serves p's admin handler on a new 127.0.0.1 port, as the
// binary does on BOXPROXY_ADMIN_LISTEN, until the test's cleanup.
func startAdmin(t testing.TB, p *testProxy) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Server.ServeAdmin(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.Server.StopAdmin(ctx); err != nil {
			t.Errorf("StopAdmin: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("ServeAdmin: %v", err)
		}
	})
	return ln.Addr().String()
}

func TestAdminListenerServesProbesToAForeignHostWithoutTheInboundKeyAndForwardsNothing(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	key := "admin-inbound-key-" + randomHex(t, 12)
	env := append(ccgEnv(box), "BOXPROXY_USER_ID="+userAlice, "BOXPROXY_INBOUND_KEY="+key, "BOXPROXY_QUIT_ENDPOINT=true")
	p := startProxy(t, box, env...)
	admin := startAdmin(t, p)
	secrets := append(secretsInEnv(env), testClientSecret)

	// kubelet and Prometheus use the pod IP as Host and know no key.
	for _, host := range []string{"10.1.2.3:9090", "evil.example", ""} {
		for _, hdr := range [][]string{nil, {"Proxy-Authorization", "Bearer wrong-key"}, {"Origin", "https://evil.example"}} {
			resp, body := adminGet(t, admin, http.MethodGet, "/healthz", host, hdr...)
			if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != "ok" {
				t.Errorf("admin /healthz, Host %q, headers %q: %d %q, want 200 ok", host, hdr, resp.StatusCode, body)
			}
		}
		var resp *http.Response
		var body []byte
		waitUntil(t, 15*time.Second, func() bool {
			resp, body = adminGet(t, admin, http.MethodGet, "/readyz", host)
			return resp.StatusCode == http.StatusOK
		}, "admin /readyz answers 200 (Host "+host+")")
		if b := jsonBody(t, body); b["status"] != "ready" || b["auth"] != "ccg" {
			t.Errorf("admin /readyz: %s, want status ready and auth ccg", body)
		}
		resp, body = adminGet(t, admin, http.MethodGet, "/metrics", host)
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "boxproxy_token_requests_total") {
			t.Errorf("admin /metrics, Host %q: %d, want 200 with boxproxy_ metrics:\n%.300s", host, resp.StatusCode, body)
		}
		for _, what := range []string{"/readyz", "/metrics", "/healthz"} {
			_, b := adminGet(t, admin, http.MethodGet, what, host)
			assertNoSecrets(t, "admin "+what, string(b), append(secrets, box.IssuedTokens()...))
			// As a number of its own: metric values (durations) may hold the
			// same digits inside theirs.
			if regexp.MustCompile(`(^|[^0-9])` + userAlice + `([^0-9]|$)`).Match(b) {
				t.Errorf("admin %s reveals the subject's user ID %s: %q", what, userAlice, b)
			}
		}
	}

	// Nothing is forwarded or started there, whatever the key.
	before := len(box.Requests())
	for _, path := range []string{"/2.0/users/me", "/api/2.0/files/content", "/auth/login", "/auth/callback?state=x&code=y", "/quitquitquit", "/"} {
		for _, hdr := range [][]string{nil, {"Proxy-Authorization", "Bearer " + key}} {
			resp, body := adminGet(t, admin, http.MethodGet, path, "127.0.0.1", hdr...)
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("admin GET %s: %d %q, want 404", path, resp.StatusCode, body)
				continue
			}
			if e := decodeBoxError(t, resp, body); !strings.Contains(e.Message, "BOXPROXY_LISTEN") {
				t.Errorf("admin GET %s: 404 message %q does not say where requests to Box go", path, e.Message)
			}
		}
	}
	resp, body := adminGet(t, admin, http.MethodPost, "/quitquitquit", "127.0.0.1", "Proxy-Authorization", "Bearer "+key)
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("admin POST /quitquitquit: %d %q, want 405 (quit is served on the data port only)", resp.StatusCode, body)
	}
	select {
	case <-p.Server.Quit():
		t.Fatal("POST /quitquitquit on the admin listener stopped the proxy")
	default:
	}
	if n := len(box.Requests()) - before; n != 0 {
		t.Errorf("%d requests on the admin listener reached Box", n)
	}

	// The data port still wants its key and its Host.
	if resp, body := p.Get(t, "/2.0/users/me"); resp.StatusCode != http.StatusProxyAuthRequired {
		t.Errorf("data port without the key: %d %q, want 407", resp.StatusCode, body)
	}
	if resp, body := p.Get(t, "/2.0/users/me", "Proxy-Authorization", "Bearer "+key); resp.StatusCode != http.StatusOK {
		t.Errorf("data port with the key: %d %q, want 200", resp.StatusCode, body)
	}
}

func TestAdminReadyzNamesNoUserIDWhenNotReadyEither(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	env := append(ccgEnv(box), "BOXPROXY_USER_ID="+userCarol, "BOXPROXY_CLIENT_SECRET=wrong-secret-"+randomHex(t, 8))
	p := startProxy(t, box, env...)
	admin := startAdmin(t, p)
	for name, get := range map[string]func() (*http.Response, []byte){
		"admin":     func() (*http.Response, []byte) { return adminGet(t, admin, http.MethodGet, "/readyz", "10.1.2.3:9090") },
		"data port": func() (*http.Response, []byte) { return p.Get(t, "/readyz") },
	} {
		resp, body := get()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("%s /readyz with a wrong client secret: %d %q, want 503", name, resp.StatusCode, body)
			continue
		}
		decodeBoxError(t, resp, body)
		if strings.Contains(string(body), userCarol) {
			t.Errorf("%s /readyz reveals the subject's user ID %s: %q", name, userCarol, body)
		}
	}
	// Ready on the data port names no user either (the default subject is a user here).
	p2 := startProxy(t, box, append(ccgEnv(box), "BOXPROXY_USER_ID="+userCarol)...)
	opsWaitReady(t, p2.URL)
	if _, body := p2.Get(t, "/readyz"); strings.Contains(string(body), userCarol) || strings.Contains(string(body), "subject") {
		t.Errorf("data port /readyz: %s, want no subject", body)
	}
}

func TestAdminListenOnAllAddressesServesProbesWhileTheDataPortStaysOnLoopback(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	// No inbound key: the data port stays on loopback; the admin listener
	// may listen on every address without one.
	b := startBinary(t, box, append(ccgEnv(box), "BOXPROXY_ADMIN_LISTEN=0.0.0.0:0")...)
	var admin string
	for _, l := range logLines(t, b.Stderr.String()) {
		if a, ok := l["admin_listen"].(string); ok {
			admin = a
		}
	}
	if admin == "" {
		t.Fatalf("no log line names the admin listener's address (admin_listen); stderr:\n%s", b.Stderr)
	}
	if !strings.HasPrefix(b.Addr, "127.0.0.1:") {
		t.Fatalf("data port on %s, want loopback", b.Addr)
	}
	_, port, _ := net.SplitHostPort(admin)
	addr := "127.0.0.1:" + port
	waitUntil(t, 15*time.Second, func() bool {
		resp, _ := adminGet(t, addr, http.MethodGet, "/readyz", "10.1.2.3:"+port)
		return resp.StatusCode == http.StatusOK
	}, "the admin /readyz answers 200")
	for _, path := range []string{"/healthz", "/metrics"} {
		if resp, body := adminGet(t, addr, http.MethodGet, path, "10.1.2.3:"+port); resp.StatusCode != http.StatusOK {
			t.Errorf("admin %s: %d %q", path, resp.StatusCode, body)
		}
	}
	if resp, _ := adminGet(t, addr, http.MethodGet, "/2.0/users/me", "10.1.2.3:"+port); resp.StatusCode != http.StatusNotFound {
		t.Errorf("admin /2.0/users/me: %d, want 404", resp.StatusCode)
	}
	// Probes on the data port keep working.
	if resp, err := http.Get(b.URL + "/healthz"); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("data port /healthz: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
}

func TestAdminListenOnAPortInUseStopsStartWithOneLineNamingTheVariable(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, stderr, code := runBinary(t, append(ccgEnv(box), "BOXPROXY_LISTEN=127.0.0.1:0", "BOXPROXY_ADMIN_LISTEN="+ln.Addr().String()))
	if code == 0 || code == -1 {
		t.Fatalf("admin port in use: exit %d, want a non-zero exit at start; stderr:\n%s", code, stderr)
	}
	lines := opsHumanLines(stderr)
	if len(lines) != 1 || !strings.Contains(lines[0], "BOXPROXY_ADMIN_LISTEN") {
		t.Errorf("admin port in use: stderr %q, want one line naming BOXPROXY_ADMIN_LISTEN", stderr)
	}
	if strings.Contains(stderr, "boxproxy serving") {
		t.Errorf("the proxy said it serves although its admin port is taken: %q", stderr)
	}
}

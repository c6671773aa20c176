package integration_test

// Issue 6: no secret reaches a log line, an error body, a response header or
// a metric.

import (
	"bytes"
	"fmt"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/boxproxy/boxproxy/fakebox"
)

// hardHaystack collects everything a client or an operator can see.
type hardHaystack struct {
	mu      sync.Mutex
	texts   map[string]string // where -> what was seen
	boxes   []*fakebox.Box
	secrets []string
}

func (h *hardHaystack) add(where, text string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.texts == nil {
		h.texts = map[string]string{}
	}
	h.texts[where] += text + "\n"
}

func (h *hardHaystack) secret(s ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.secrets = append(h.secrets, s...)
}

func (h *hardHaystack) box(t *testing.T, mods ...func(*fakebox.Config)) *fakebox.Box {
	b := startBox(t, mods...)
	h.mu.Lock()
	h.boxes = append(h.boxes, b)
	h.mu.Unlock()
	return b
}

// do sends req and keeps the status line, every header and the body.
func (h *hardHaystack) do(t *testing.T, scenario string, p *testProxy, req *http.Request) *http.Response {
	t.Helper()
	resp, body := p.Do(t, req)
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s -> %s\n", req.Method, req.URL.Path, resp.Status)
	keys := make([]string, 0, len(resp.Header))
	for k := range resp.Header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s: %s\n", k, strings.Join(resp.Header[k], ", "))
	}
	b.Write(body)
	h.add(scenario+": responses", b.String())
	return resp
}

func (h *hardHaystack) get(t *testing.T, scenario string, p *testProxy, path string, hdr ...string) *http.Response {
	t.Helper()
	return h.do(t, scenario, p, p.Request(t, http.MethodGet, path, nil, hdr...))
}

// proxy starts a proxy whose logs, up to its shutdown, join the haystack.
func (h *hardHaystack) proxy(t *testing.T, scenario string, box *fakebox.Box, env ...string) *testProxy {
	t.Helper()
	var p *testProxy
	// Registered before startProxy's own cleanup, so it runs after the shutdown.
	t.Cleanup(func() {
		if p != nil {
			h.add(scenario+": logs", p.Logs())
		}
	})
	p = startProxy(t, box, env...)
	return p
}

// finish scrapes /metrics and /readyz.
func (h *hardHaystack) finish(t *testing.T, scenario string, p *testProxy) {
	t.Helper()
	_, metrics := p.Get(t, "/metrics")
	if !strings.Contains(string(metrics), "boxproxy_requests_total") {
		t.Errorf("%s: /metrics lacks boxproxy_requests_total", scenario)
	}
	h.add(scenario+": /metrics", string(metrics))
	h.get(t, scenario, p, "/readyz")
}

// No token the stand-in issued, client secret, passphrase, line of a private
// key, inbound key or developer token appears in any log line (at debug
// level, JSON and console), response body or header, or /metrics, whatever
// happens: successful grants, a wrong secret, an encrypted JWT key, an
// expired developer token, 401 retries, every token endpoint fault, upstream
// resets, wrong inbound keys.
func TestHardNoSecretInAnyLogLineBodyHeaderOrMetricAcrossScenarios(t *testing.T) {
	t.Parallel()
	h := &hardHaystack{}
	h.secret(testClientSecret)

	t.Run("ccg", func(t *testing.T) {
		t.Parallel()
		const sc = "ccg"
		box := h.box(t)
		p := h.proxy(t, sc, box, ccgEnv(box)...)
		clientTok, err := box.IssueToken(userBob)
		if err != nil {
			t.Fatal(err)
		}
		h.get(t, sc, p, "/2.0/users/me")
		h.get(t, sc, p, "/2.0/users/me", "As-User", userAlice)
		// A client's own token (in the header and the query) is dropped, not logged.
		h.get(t, sc, p, "/2.0/users/me?fields=id&access_token="+clientTok, "Authorization", "Bearer "+clientTok)
		h.get(t, sc, p, "/2.0/folders/0/items")
		h.get(t, sc, p, "/2.0/users/me", "As-User", "not-a-user")
		h.get(t, sc, p, "/2.0/users/me", "As-User", "9999")
		h.get(t, sc, p, "/nowhere")
		id := box.AddFile("hard.txt", []byte("hello"))
		h.get(t, sc, p, "/2.0/files/"+id+"/content")
		h.do(t, sc, p, p.Request(t, http.MethodPost, "/api/2.0/files/upload_sessions",
			strings.NewReader(`{"folder_id":"0","file_size":20000000,"file_name":"big.bin"}`), "Content-Type", "application/json"))
		// An upstream reset of a request whose query carries a token.
		box.Inject("/2.0/test/echo/reset", 5, fakebox.Injected{Reset: true})
		h.get(t, sc, p, "/2.0/test/echo/reset?access_token="+clientTok)
		h.finish(t, sc, p)
	})

	t.Run("ccg wrong secret", func(t *testing.T) {
		t.Parallel()
		const sc = "ccg wrong secret"
		wrong := "wrong-secret-" + randomHex(t, 8)
		h.secret(wrong)
		box := h.box(t)
		p := h.proxy(t, sc, box, append(ccgEnv(box), "BOXPROXY_CLIENT_SECRET="+wrong)...)
		if resp := h.get(t, sc, p, "/2.0/users/me"); resp.StatusCode != http.StatusBadGateway {
			t.Errorf("with a wrong secret: %d, want 502", resp.StatusCode)
		}
		h.get(t, sc, p, "/2.0/users/me", "As-User", userAlice)
		h.finish(t, sc, p)
	})

	t.Run("jwt encrypted key in the JSON file", func(t *testing.T) {
		t.Parallel()
		const sc = "jwt config file"
		box := h.box(t)
		app := newJWTApp(t, box)
		h.secret(app.Secrets()...)
		p := h.proxy(t, sc, box, append(boxEnv(box), app.ConfigEnv()...)...)
		p.AddSecret(app.Secrets()...)
		if resp := h.get(t, sc, p, "/2.0/users/me"); resp.StatusCode != http.StatusOK {
			t.Errorf("jwt: %d", resp.StatusCode)
		}
		h.get(t, sc, p, "/2.0/users/me", "As-User", userAlice)
		h.finish(t, sc, p)
	})

	t.Run("jwt encrypted key and passphrase in variables", func(t *testing.T) {
		t.Parallel()
		const sc = "jwt variables"
		box := h.box(t)
		app := newJWTApp(t, box)
		h.secret(app.Secrets()...)
		keyPath := filepath.Join(t.TempDir(), "encrypted.pem")
		if err := os.WriteFile(keyPath, app.pems[0], 0o600); err != nil {
			t.Fatal(err)
		}
		env := append(boxEnv(box), "BOXPROXY_JWT_PRIVATE_KEY="+keyPath, "BOXPROXY_JWT_PASSPHRASE="+app.Passphrase,
			"BOXPROXY_JWT_KEY_ID="+app.KeyID, "BOXPROXY_CLIENT_ID="+testClientID, "BOXPROXY_CLIENT_SECRET="+testClientSecret,
			"BOXPROXY_ENTERPRISE_ID="+testEnterpriseID)
		p := h.proxy(t, sc, box, env...)
		p.AddSecret(app.Secrets()...)
		if resp := h.get(t, sc, p, "/2.0/users/me", "As-User", userCarol); resp.StatusCode != http.StatusOK {
			t.Errorf("jwt: %d", resp.StatusCode)
		}
		// Box rejects the assertion (unknown subject): the error names the problem, not the key.
		if resp := h.get(t, sc, p, "/2.0/users/me", "As-User", "424242"); resp.StatusCode != http.StatusBadGateway {
			t.Errorf("unknown user: %d, want 502", resp.StatusCode)
		}
		h.finish(t, sc, p)
	})

	t.Run("developer token expires", func(t *testing.T) {
		t.Parallel()
		const sc = "developer token"
		box := h.box(t)
		dev, err := box.IssueToken(testServiceAccountID)
		if err != nil {
			t.Fatal(err)
		}
		h.secret(dev)
		p := h.proxy(t, sc, box, append(boxEnv(box), "BOXPROXY_DEVELOPER_TOKEN="+dev)...)
		if resp := h.get(t, sc, p, "/2.0/users/me"); resp.StatusCode != http.StatusOK {
			t.Errorf("developer token: %d", resp.StatusCode)
		}
		box.RevokeAll()
		if resp := h.get(t, sc, p, "/2.0/users/me"); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("revoked developer token: %d, want 401", resp.StatusCode)
		}
		h.finish(t, sc, p)
	})

	t.Run("401 retry", func(t *testing.T) {
		t.Parallel()
		const sc = "401 retry"
		box := h.box(t)
		p := h.proxy(t, sc, box, ccgEnv(box)...)
		h.get(t, sc, p, "/2.0/users/me")
		box.RevokeAll()
		if resp := h.get(t, sc, p, "/2.0/users/me"); resp.StatusCode != http.StatusOK {
			t.Errorf("after revocation: %d, want 200", resp.StatusCode)
		}
		box.ExpireAll()
		// An upload is sent again, body and all, after the 401.
		var mp bytes.Buffer
		mw := multipart.NewWriter(&mp)
		_ = mw.WriteField("attributes", `{"name":"hard-retry.txt","parent":{"id":"0"}}`)
		fw, _ := mw.CreateFormFile("file", "hard-retry.txt")
		_, _ = fw.Write([]byte("retried body"))
		_ = mw.Close()
		if resp := h.do(t, sc, p, p.Request(t, http.MethodPost, "/api/2.0/files/content", &mp, "Content-Type", mw.FormDataContentType())); resp.StatusCode != http.StatusCreated {
			t.Errorf("upload after expiry: %d, want 201", resp.StatusCode)
		}
		box.Inject("/2.0/users/", 2, fakebox.Unauthorized())
		if resp := h.get(t, sc, p, "/2.0/users/me"); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("two 401s: %d, want 401", resp.StatusCode)
		}
		h.finish(t, sc, p)
	})

	t.Run("token endpoint faults", func(t *testing.T) {
		t.Parallel()
		faults := []fakebox.Fault{fakebox.FaultDown, fakebox.FaultHang, fakebox.FaultHTML, fakebox.FaultTruncated,
			fakebox.FaultNoAccessToken, fakebox.Fault500, fakebox.Fault503}
		box := h.box(t, func(c *fakebox.Config) {
			for i := range faults {
				c.Users = append(c.Users, fakebox.User{ID: fmt.Sprint(2201 + i)})
			}
		})
		for _, format := range []string{"json", "console"} {
			sc := "token faults, " + format + " logs"
			p := h.proxy(t, sc, box, append(ccgEnv(box), "BOXPROXY_TOKEN_TIMEOUT=1s", "BOXPROXY_LOG_FORMAT="+format)...)
			h.get(t, sc, p, "/2.0/users/me")
			for i, f := range faults {
				box.SetTokenFault(f)
				if resp := h.get(t, sc, p, "/2.0/users/me", "As-User", fmt.Sprint(2201+i)); resp.StatusCode < 500 {
					t.Errorf("fault %s: %d, want 5xx", f, resp.StatusCode)
				}
				h.get(t, sc, p, "/readyz")
			}
			box.SetTokenFault(fakebox.FaultNone)
			h.finish(t, sc, p)
		}
	})

	t.Run("inbound key", func(t *testing.T) {
		t.Parallel()
		const sc = "inbound key"
		key := "inbound-key-" + randomHex(t, 12)
		h.secret(key)
		box := h.box(t)
		p := h.proxy(t, sc, box, append(ccgEnv(box), "BOXPROXY_INBOUND_KEY="+key)...)
		for _, auth := range []string{"", "Bearer wrong-key", "Basic " + key, "Bearer " + key[:len(key)-1]} {
			var hdr []string
			if auth != "" {
				hdr = []string{"Proxy-Authorization", auth}
			}
			if resp := h.get(t, sc, p, "/2.0/users/me", hdr...); resp.StatusCode != http.StatusProxyAuthRequired {
				t.Errorf("Proxy-Authorization %q: %d, want 407", auth, resp.StatusCode)
			}
		}
		if resp := h.get(t, sc, p, "/2.0/users/me", "Proxy-Authorization", "Bearer "+key); resp.StatusCode != http.StatusOK {
			t.Errorf("with the key: %d, want 200", resp.StatusCode)
		}
		for _, r := range box.Requests() {
			if r.Header.Get("Proxy-Authorization") != "" {
				t.Errorf("Proxy-Authorization reached the stand-in")
			}
		}
		h.finish(t, sc, p)
	})

	t.Cleanup(func() {
		// After every scenario (and its proxy) is done: search everything.
		secrets := append([]string(nil), h.secrets...)
		for _, b := range h.boxes {
			secrets = append(secrets, b.IssuedTokens()...)
		}
		if len(secrets) < 20 {
			t.Errorf("only %d secrets to look for; the scenarios did not run", len(secrets))
		}
		debugLines := 0
		for where, text := range h.texts {
			assertNoSecrets(t, where, text, secrets)
			if strings.HasSuffix(where, ": logs") {
				debugLines += strings.Count(text, `"level":"debug"`) + strings.Count(text, "DBG")
			}
		}
		if debugLines == 0 {
			t.Errorf("no debug line was logged; the scenarios did not run at debug level")
		}
		t.Logf("searched %d outputs for %d secrets; %d debug log lines", len(h.texts), len(secrets), debugLines)
	})
}

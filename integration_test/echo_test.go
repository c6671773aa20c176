package integration_test

// A token endpoint that echoes the request in its error_description (some
// gateways and misconfigured front ends do) must not make the secrets the
// request carried appear anywhere: not in `boxproxy check`'s line, the log,
// the JSON error a client gets, or /readyz.

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// echoTokenEndpoint answers every token request with a 400 whose
// error_description quotes the request's form, URL-encoded and decoded.
func echoTokenEndpoint(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		form, _ := url.ParseQuery(string(body))
		desc := "bad request: " + string(body) + " (secret " + form.Get("client_secret") + ")"
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": "invalid_client", "error_description": desc})
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestSecretsEchoedByTheTokenEndpointAreRedactedEverywhere(t *testing.T) {
	t.Parallel()
	srv := echoTokenEndpoint(t)
	// '+' and '/' are URL-encoded in the form, so the echo holds both spellings.
	secret := "s+cr/t-" + randomHex(t, 12)
	env := []string{
		"BOXPROXY_CLIENT_ID=" + testClientID, "BOXPROXY_CLIENT_SECRET=" + secret, "BOXPROXY_ENTERPRISE_ID=" + testEnterpriseID,
		"BOXPROXY_TOKEN_URL=" + srv.URL + "/oauth2/token", "BOXPROXY_LOG_LEVEL=debug",
	}
	encoded := strings.NewReplacer("+", "%2B", "/", "%2F").Replace(secret)

	stdout, stderr, code := runBinary(t, with(env, "BOXPROXY_LISTEN=127.0.0.1:0"), "check")
	if code != 1 || !strings.Contains(stderr, "invalid_client") || !strings.Contains(stderr, "bad request:") {
		t.Errorf("check: exit %d, stdout %q, stderr %q; want exit 1 quoting Box's code and the readable part of its message", code, stdout, stderr)
	}
	if !strings.Contains(stderr, "[redacted]") {
		t.Errorf("check: %q does not say where a secret was redacted", stderr)
	}
	assertNoSecretPieces(t, "check output", stdout+stderr, secret, encoded)

	bp := startBinary(t, nil, env...)
	bp.AddSecret(secret, encoded)
	var seen strings.Builder
	for _, path := range []string{"/2.0/users/me", "/readyz"} {
		resp, err := http.Get(bp.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode < 500 || !strings.Contains(string(body), "invalid_client") {
			t.Errorf("GET %s: %d %q; want a 5xx naming invalid_client", path, resp.StatusCode, body)
		}
		seen.WriteString(path + ": " + string(body) + "\n")
	}
	assertNoSecretPieces(t, "answers", seen.String(), secret, encoded)
	assertNoSecretPieces(t, "log", bp.Stderr.String(), secret, encoded)
}

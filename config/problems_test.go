package config_test

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/boxproxy/boxproxy/config"
)

// randomSecret is a value no message can contain by chance.
func randomSecret(t *testing.T, prefix string) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return prefix + hex.EncodeToString(b)
}

// assertNoPiece fails if text holds secret or any 8-character piece of it.
func assertNoPiece(t *testing.T, text, secret string) {
	t.Helper()
	for i := 0; i+8 <= len(secret); i++ {
		if p := secret[i : i+8]; strings.Contains(text, p) {
			t.Errorf("%q holds %q, a piece of the secret", text, p)
			return
		}
	}
}

func problems(t *testing.T, err error) config.Errors {
	t.Helper()
	var errs config.Errors
	if !errors.As(err, &errs) {
		t.Fatalf("Load error %v (%T) is not a config.Errors", err, err)
	}
	return errs
}

func TestConfigListsEveryProblemAtOnceEachNamingItsVariable(t *testing.T) {
	t.Parallel()
	_, err := config.Load(env(ccg,
		"BOXPROXY_LISTEN=0.0.0.0:8080",     // non-loopback without inbound key
		"BOXPROXY_TOKEN_TIMEOUT=tenXQ",     // not a duration
		"BOXPROXY_LOG_LEVEL=loudXQ",        // unknown level
		"BOXPROXY_API_URL=ftp://x",         // not http(s)
		"BOXPROXY_TOKEN_CACHE_SIZE=0",      // too small
		"BOXPROXY_RETRY_BODY_LIMIT=lotsXQ", // not a size
	))
	if err == nil {
		t.Fatal("Load accepted six mistakes")
	}
	want := []string{"BOXPROXY_LISTEN", "BOXPROXY_TOKEN_TIMEOUT", "BOXPROXY_LOG_LEVEL", "BOXPROXY_API_URL", "BOXPROXY_TOKEN_CACHE_SIZE", "BOXPROXY_RETRY_BODY_LIMIT"}
	errs := problems(t, err)
	got := map[string]int{}
	for _, p := range errs {
		got[p.Var]++
	}
	for _, w := range want {
		if got[w] != 1 {
			t.Errorf("%s reported %d times, want once: %v", w, got[w], err)
		}
	}
	if len(errs) != len(want) {
		t.Errorf("%d problems, want %d: %v", len(errs), len(want), err)
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "6 configuration errors: ") || strings.ContainsAny(msg, "\r\n") {
		t.Errorf("error %q: want one line starting with the count", msg)
	}
	for _, bad := range []string{"XQ", "ftp://x"} {
		if strings.Contains(msg, bad) {
			t.Errorf("error %q echoes the value %q", msg, bad)
		}
	}
}

func TestConfigUnknownVariablesAreReportedWithTheClosestKnownName(t *testing.T) {
	t.Parallel()
	got := config.Unknown([]string{
		"BOXPROXY_ENTERPRISEID=1", "BOXPROXY_LOG_LEVLE=debug", "BOXPROXY_client_secret=x", "BOXPROXY_JWT_PRIVATE_KEY_FILE=/k.pem",
		"BOXPROXY_SOMETHING_ELSE_ENTIRELY=1", "BOXPROXY_TOKEN_CACHE=5", "BOXPROXY_CLIENT_SECRET_PATH=/s", "BOXPROXY_LISTEN=127.0.0.1:1", "BOXPROXY_CLIENT_SECRET_FILE=/s", "PATH=/bin", "BOXPROXYLISTEN=1",
	})
	want := map[string]string{
		"BOXPROXY_ENTERPRISEID":            "did you mean BOXPROXY_ENTERPRISE_ID?",
		"BOXPROXY_LOG_LEVLE":               "did you mean BOXPROXY_LOG_LEVEL?",
		"BOXPROXY_client_secret":           "did you mean BOXPROXY_CLIENT_SECRET?",
		"BOXPROXY_JWT_PRIVATE_KEY_FILE":    "did you mean BOXPROXY_JWT_PRIVATE_KEY?",
		"BOXPROXY_SOMETHING_ELSE_ENTIRELY": "boxproxy --help lists every variable",
		"BOXPROXY_TOKEN_CACHE":             "did you mean BOXPROXY_TOKEN_CACHE_SIZE?",
		"BOXPROXY_CLIENT_SECRET_PATH":      "did you mean BOXPROXY_CLIENT_SECRET_FILE?",
	}
	if len(got) != len(want) {
		t.Errorf("Unknown = %v, want %d problems", got, len(want))
	}
	for _, p := range got {
		w, ok := want[p.Var]
		if !ok {
			t.Errorf("%s reported as unknown", p.Var)
			continue
		}
		if !strings.HasPrefix(p.Msg, "unknown variable") || !strings.Contains(p.Msg, w) {
			t.Errorf("%s: %q, want it to say %q", p.Var, p.Msg, w)
		}
	}
	// Kubernetes' service links for a Service named boxproxy or boxproxy-admin are not typos.
	links := []string{"BOXPROXY_SERVICE_HOST=10.0.0.1", "BOXPROXY_SERVICE_PORT=8080", "BOXPROXY_SERVICE_PORT_HTTP=8080", "BOXPROXY_PORT=tcp://10.0.0.1:8080",
		"BOXPROXY_PORT_8080_TCP=tcp://10.0.0.1:8080", "BOXPROXY_PORT_8080_TCP_PROTO=tcp", "BOXPROXY_PORT_8080_TCP_PORT=8080",
		"BOXPROXY_PORT_8080_TCP_ADDR=10.0.0.1", "BOXPROXY_ADMIN_SERVICE_HOST=10.0.0.2", "BOXPROXY_ADMIN_PORT_9090_TCP_ADDR=10.0.0.2"}
	if u := config.Unknown(links); len(u) != 0 {
		t.Errorf("Kubernetes service-link variables reported: %v", u)
	}
	for _, n := range config.Names() {
		if u := config.Unknown([]string{n + "=1"}); len(u) != 0 {
			t.Errorf("%s, a known name, is reported: %v", n, u)
		}
	}
}

func TestConfigValueMeantForAnotherVariableIsNeverInTheError(t *testing.T) {
	t.Parallel()
	sec := randomSecret(t, "")
	tok := randomSecret(t, "")
	key := randomSecret(t, "inbound-")
	pemBody := "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQ" + randomSecret(t, "")
	pemText := "-----BEGIN ENCRYPTED PRIVATE KEY-----\n" + pemBody + "\n-----END ENCRYPTED PRIVATE KEY-----\n"
	brokenJSON := `{"boxAppSettings":{"clientID":"cid","clientSecret":"` + sec + `","appAuth":{"passphrase":"` + tok + `"` // cut short
	for _, tc := range []struct {
		name, variable, secret string
		env                    []string
		hint                   string // the message must also say this
	}{
		{"client secret in its _FILE", "BOXPROXY_CLIENT_SECRET_FILE", sec, []string{"BOXPROXY_CLIENT_ID=cid", "BOXPROXY_ENTERPRISE_ID=1", "BOXPROXY_CLIENT_SECRET_FILE=" + sec}, "set BOXPROXY_CLIENT_SECRET instead"},
		{"developer token in its _FILE", "BOXPROXY_DEVELOPER_TOKEN_FILE", tok, []string{"BOXPROXY_DEVELOPER_TOKEN_FILE=" + tok}, "path"},
		{"inbound key in its _FILE", "BOXPROXY_INBOUND_KEY_FILE", key, env(ccg, "BOXPROXY_INBOUND_KEY_FILE="+key), "path"},
		{"passphrase in its _FILE", "BOXPROXY_JWT_PASSPHRASE_FILE", tok, env(jwtKey, "BOXPROXY_JWT_PASSPHRASE_FILE="+tok), "path"},
		{"store key in its _FILE", "BOXPROXY_STORE_KEY_FILE", key + key, env(ccg, "BOXPROXY_STORE_KEY_FILE="+key+key), "path"},
		{"Redis URL in its _FILE", "BOXPROXY_REDIS_URL_FILE", sec, env(ccg, "BOXPROXY_REDIS_URL_FILE=redis://:"+sec+"@redis:6379/0"), "path"},
		{"PEM key in a _FILE", "BOXPROXY_CLIENT_SECRET_FILE", pemBody, []string{"BOXPROXY_CLIENT_ID=cid", "BOXPROXY_ENTERPRISE_ID=1", "BOXPROXY_CLIENT_SECRET_FILE=" + pemText}, "looks like a PEM key"},
		{"key body without its BEGIN line", "BOXPROXY_JWT_PRIVATE_KEY", pemBody, env(jwtKey[1:], "BOXPROXY_JWT_PRIVATE_KEY="+pemBody), "looks like a PEM key"},
		{"broken JSON text in JWT_CONFIG", "BOXPROXY_JWT_CONFIG", sec, []string{"BOXPROXY_JWT_CONFIG=" + brokenJSON}, "not valid JSON"},
		{"broken JSON text in JWT_CONFIG (passphrase)", "BOXPROXY_JWT_CONFIG", tok, []string{"BOXPROXY_JWT_CONFIG=" + brokenJSON}, "not valid JSON"},
		{"secret in the CA file variable", "BOXPROXY_UPSTREAM_CA_FILE", sec, env(ccg, "BOXPROXY_UPSTREAM_CA_FILE="+sec), "path"},
		{"secret in a plain variable", "BOXPROXY_AUTH", sec, env(ccg, "BOXPROXY_AUTH="+sec), "ccg, jwt, oauth or token"},
		{"secret as the listen address", "BOXPROXY_LISTEN", sec, env(ccg, "BOXPROXY_LISTEN="+sec), "host:port"},
		{"secret as the enterprise ID", "BOXPROXY_ENTERPRISE_ID", sec, env(ccg[:2], "BOXPROXY_ENTERPRISE_ID="+sec), "digits"},
		{"secret as the log level", "BOXPROXY_LOG_LEVEL", sec, env(ccg, "BOXPROXY_LOG_LEVEL="+sec), "debug"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Load(tc.env)
			if err == nil {
				t.Fatal("Load accepted it")
			}
			msg := err.Error()
			assertNoPiece(t, msg, tc.secret)
			var named bool
			for _, p := range problems(t, err) {
				if p.Var == tc.variable {
					named = true
					if !strings.Contains(p.Msg, tc.hint) {
						t.Errorf("%s: %q does not say %q", p.Var, p.Msg, tc.hint)
					}
				}
			}
			if !named {
				t.Errorf("error %q does not name %s", msg, tc.variable)
			}
		})
	}
}

// writeAppConfig writes a Developer Console JSON file with fields changed by edit.
func writeAppConfig(t *testing.T, edit func(app, auth map[string]any, doc map[string]any)) string {
	t.Helper()
	auth := map[string]any{"publicKeyID": "kid1", "privateKey": fakePEM, "passphrase": passphrase}
	app := map[string]any{"clientID": "cid", "clientSecret": secret, "appAuth": auth}
	doc := map[string]any{"boxAppSettings": app, "enterpriseID": "500100"}
	if edit != nil {
		edit(app, auth, doc)
	}
	data, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigJWTFileAndVariablesMustAgreeWhereBothGiveASetting(t *testing.T) {
	t.Parallel()
	file := writeAppConfig(t, nil)
	keyFile := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(keyFile, []byte(fakePEM), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"BOXPROXY_JWT_CONFIG=" + file}

	// The file alone; the same values again in the environment; the file as JSON text.
	data, _ := os.ReadFile(file)
	for name, e := range map[string][]string{
		"file alone": base,
		"file and equal variables": env(base, "BOXPROXY_CLIENT_ID=cid", "BOXPROXY_CLIENT_SECRET="+secret, "BOXPROXY_JWT_KEY_ID=kid1",
			"BOXPROXY_JWT_PASSPHRASE="+passphrase, "BOXPROXY_ENTERPRISE_ID=500100", "BOXPROXY_JWT_PRIVATE_KEY="+keyFile),
		"JSON text": {"BOXPROXY_JWT_CONFIG=" + string(data)},
	} {
		c, err := config.Load(e)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if c.Auth != "jwt" || c.ClientID != "cid" || c.ClientSecret != secret || c.JWTKeyID != "kid1" || c.JWTPassphrase != passphrase ||
			c.EnterpriseID != "500100" || string(c.JWTKey) != fakePEM {
			t.Errorf("%s: settings %q %q %q %q %q", name, c.Auth, c.ClientID, c.JWTKeyID, c.EnterpriseID, c.JWTKeyVar)
		}
	}

	// Each setting given differently in both places is an error naming both.
	for _, tc := range []struct{ variable, value, field string }{
		{"BOXPROXY_CLIENT_ID", "other-cid", "boxAppSettings.clientID"},
		{"BOXPROXY_CLIENT_SECRET", "other-secret-" + marker, "boxAppSettings.clientSecret"},
		{"BOXPROXY_JWT_KEY_ID", "kid2", "boxAppSettings.appAuth.publicKeyID"},
		{"BOXPROXY_JWT_PASSPHRASE", "other-pass-" + marker, "boxAppSettings.appAuth.passphrase"},
		{"BOXPROXY_ENTERPRISE_ID", "500200", "enterpriseID"},
		{"BOXPROXY_JWT_PRIVATE_KEY", "-----BEGIN PRIVATE KEY-----\nMIIother" + marker + "\n-----END PRIVATE KEY-----", "boxAppSettings.appAuth.privateKey"},
	} {
		_, err := config.Load(env(base, tc.variable+"="+tc.value))
		if err == nil {
			t.Errorf("%s differing from the file was accepted", tc.variable)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, tc.variable+": differs from "+tc.field+" in BOXPROXY_JWT_CONFIG") {
			t.Errorf("%s differing: %q, want it to name %s and %s", tc.variable, msg, tc.variable, tc.field)
		}
		if strings.Contains(msg, marker) || strings.Contains(msg, "other-cid") {
			t.Errorf("%s differing: %q echoes a value", tc.variable, msg)
		}
	}

	// What the file lacks, the environment gives; a user ID picks a user as the subject.
	partial := writeAppConfig(t, func(app, auth, doc map[string]any) {
		delete(auth, "passphrase")
		delete(doc, "enterpriseID")
	})
	c, err := config.Load([]string{"BOXPROXY_JWT_CONFIG=" + partial, "BOXPROXY_JWT_PASSPHRASE=" + passphrase, "BOXPROXY_USER_ID=2001"})
	if err != nil || c.JWTPassphrase != passphrase || c.UserID != "2001" || c.EnterpriseID != "" {
		t.Errorf("partial file + variables: %v", err)
	}
	_, err = config.Load([]string{"BOXPROXY_JWT_CONFIG=" + partial})
	if err == nil || !strings.Contains(err.Error(), "BOXPROXY_ENTERPRISE_ID: the jwt method needs a subject") {
		t.Errorf("file without enterpriseID and no subject: %v", err)
	}
	noID := writeAppConfig(t, func(app, _, _ map[string]any) { delete(app, "clientID") })
	_, err = config.Load([]string{"BOXPROXY_JWT_CONFIG=" + noID})
	if err == nil || !strings.Contains(err.Error(), "BOXPROXY_CLIENT_ID: the jwt method needs it (or boxAppSettings.clientID in BOXPROXY_JWT_CONFIG)") {
		t.Errorf("file without clientID: %v", err)
	}
}

func TestConfigSaysWhyItChoseTheAuthMethod(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		env            []string
		method, reason string
	}{
		{ccg, "ccg", "BOXPROXY_ENTERPRISE_ID"},
		{oauth, "oauth", "without a subject"},
		{token, "token", "BOXPROXY_DEVELOPER_TOKEN is set"},
		{jwtCfg, "jwt", "BOXPROXY_JWT_CONFIG is set"},
		{jwtKey, "jwt", "BOXPROXY_JWT_PRIVATE_KEY is set"},
		{env(oauth, "BOXPROXY_AUTH=oauth"), "oauth", "set by BOXPROXY_AUTH"},
	} {
		c, err := config.Load(tc.env)
		if err != nil {
			t.Fatal(err)
		}
		if c.Auth != tc.method || !strings.Contains(c.AuthReason, tc.reason) {
			t.Errorf("%v: %s because %q, want %s because …%s…", tc.env, c.Auth, c.AuthReason, tc.method, tc.reason)
		}
	}
}

func TestConfigCheckKeyListsAKeyProblemWithTheOthers(t *testing.T) {
	t.Parallel()
	var calls int
	check := func(pemKey []byte, pass string) error {
		calls++
		if string(pemKey) != fakePEM || pass != passphrase {
			t.Errorf("CheckKey got another key or passphrase")
		}
		return errors.New("cannot decrypt the private key: wrong passphrase")
	}
	_, err := config.LoadWith(env(jwtCfg, "BOXPROXY_LOG_LEVEL=loudXQ"), config.Options{CheckKey: check})
	if err == nil || !strings.Contains(err.Error(), "BOXPROXY_JWT_PASSPHRASE: cannot decrypt the private key: wrong passphrase") ||
		!strings.Contains(err.Error(), "BOXPROXY_LOG_LEVEL: ") || calls != 1 {
		t.Errorf("LoadWith: %v (%d calls), want the passphrase and the log level", err, calls)
	}
	// A key that cannot be had is not checked.
	_, _ = config.LoadWith([]string{"BOXPROXY_JWT_CONFIG=/nonexistent/config.json"}, config.Options{CheckKey: check})
	if calls != 1 {
		t.Errorf("CheckKey called without a key")
	}
}

func TestConfigTheKeyAndTheJSONFileSwappedSayWhereEachGoes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	keyFile, jsonFile := filepath.Join(dir, "key.pem"), filepath.Join(dir, "config.json")
	if err := os.WriteFile(keyFile, []byte(fakePEM), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(jsonFile, []byte(appJSON), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := config.Load([]string{"BOXPROXY_JWT_CONFIG=" + keyFile + "\n"}) // a path with a line break from $(…) works as a path
	if err == nil || !strings.Contains(err.Error(), "BOXPROXY_JWT_CONFIG: not valid JSON") || !strings.Contains(err.Error(), "goes in BOXPROXY_JWT_PRIVATE_KEY") {
		t.Errorf("key file as JWT_CONFIG: %v", err)
	}
	_, err = config.Load(env(jwtKey[1:], "BOXPROXY_JWT_PRIVATE_KEY="+jsonFile))
	if err == nil || !strings.Contains(err.Error(), "BOXPROXY_JWT_PRIVATE_KEY: the file it names holds JSON") || !strings.Contains(err.Error(), "goes in BOXPROXY_JWT_CONFIG") {
		t.Errorf("JSON file as JWT_PRIVATE_KEY: %v", err)
	}
	if err != nil && strings.Contains(err.Error(), marker) {
		t.Errorf("error %q holds a secret", err)
	}
}

package config_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/boxproxy/boxproxy/config"
)

// Every secret value in these tests contains this marker; no error may.
const marker = "Zq81"

const (
	secret     = "cfg-client-secret-" + marker
	devToken   = "cfg-developer-token-" + marker
	passphrase = "cfg-passphrase-" + marker
	inboundKey = "cfg-inbound-key-0123456789-" + marker
)

var (
	ccg   = []string{"BOXPROXY_CLIENT_ID=cid", "BOXPROXY_CLIENT_SECRET=" + secret, "BOXPROXY_ENTERPRISE_ID=500100"}
	oauth = []string{"BOXPROXY_CLIENT_ID=cid", "BOXPROXY_CLIENT_SECRET=" + secret}
	token = []string{"BOXPROXY_DEVELOPER_TOKEN=" + devToken}
	// The JSON app configuration and the key given as text (config does not parse the key).
	fakePEM = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHDBOBgkqhkiG9w0BBQ0wQTApBgkqhkiG9w0BBQwwHAQI" + marker + "\n-----END ENCRYPTED PRIVATE KEY-----\n"
	appJSON = `{"boxAppSettings":{"clientID":"cid","clientSecret":"` + secret + `","appAuth":{"publicKeyID":"kid1",` +
		`"privateKey":"` + strings.ReplaceAll(fakePEM, "\n", `\n`) + `","passphrase":""}},"enterpriseID":"500100"}`
	jwtCfg = []string{"BOXPROXY_JWT_CONFIG=" + appJSON, "BOXPROXY_JWT_PASSPHRASE=" + passphrase}
	jwtKey = []string{"BOXPROXY_JWT_PRIVATE_KEY=" + fakePEM, "BOXPROXY_JWT_KEY_ID=kid1", "BOXPROXY_CLIENT_ID=cid",
		"BOXPROXY_CLIENT_SECRET=" + secret, "BOXPROXY_USER_ID=2001"}
)

func env(base []string, extra ...string) []string {
	return append(append([]string{}, base...), extra...)
}

func TestConfigLoadInfersTheMethodAndFillsDefaults(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name             string
		env              []string
		method, asUser   string
		publicURL        string
		wantSubjectField string
	}{
		{"ccg with enterprise", ccg, "ccg", "token", "http://localhost:8080", ""},
		{"ccg with user", env(ccg[:2], "BOXPROXY_USER_ID=2001"), "ccg", "token", "http://localhost:8080", ""},
		{"jwt from the JSON file", jwtCfg, "jwt", "token", "http://localhost:8080", ""},
		{"jwt from separate variables", jwtKey, "jwt", "token", "http://localhost:8080", ""},
		{"oauth", oauth, "oauth", "header", "http://localhost:8080", ""},
		{"developer token", token, "token", "header", "http://localhost:8080", ""},
		{"explicit method", env(oauth, "BOXPROXY_AUTH=oauth"), "oauth", "header", "http://localhost:8080", ""},
		{"ccg with As-User header mode", env(ccg, "BOXPROXY_AS_USER=header"), "ccg", "header", "http://localhost:8080", ""},
		{"public URL follows the listen port", env(ccg, "BOXPROXY_LISTEN=127.0.0.1:9191"), "ccg", "token", "http://localhost:9191", ""},
		{"explicit public URL", env(ccg, "BOXPROXY_PUBLIC_URL=https://proxy.example/"), "ccg", "token", "https://proxy.example/", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := config.Load(tc.env)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if c.Auth != tc.method || c.AsUser != tc.asUser || c.PublicURL != tc.publicURL {
				t.Errorf("Auth=%q AsUser=%q PublicURL=%q, want %q %q %q", c.Auth, c.AsUser, c.PublicURL, tc.method, tc.asUser, tc.publicURL)
			}
			if c.Public == nil || c.API == nil || c.Upload == nil {
				t.Errorf("derived URLs not set: %v %v %v", c.Public, c.API, c.Upload)
			}
		})
	}

	c, err := config.Load(ccg)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"Listen": "127.0.0.1:8080", "TokenStore": "boxproxy-tokens.json", "TokenCacheSize": 10000,
		"APIURL": "https://api.box.com", "UploadURL": "https://upload.box.com",
		"TokenURL": "https://api.box.com/oauth2/token", "AuthorizeURL": "https://account.box.com/api/oauth2/authorize",
		"RetryBodyLimit": config.ByteSize(10 << 20), "UpstreamRetries": 0, "ShutdownTimeout": 30 * time.Second,
		"HeaderTimeout": 10 * time.Second, "QuitEndpoint": false, "LogLevel": "info", "LogFormat": "json",
	}
	v := reflect.ValueOf(*c)
	for field, w := range want {
		if got := v.FieldByName(field).Interface(); !reflect.DeepEqual(got, w) {
			t.Errorf("default %s = %v, want %v", field, got, w)
		}
	}
	if len(c.AllowedUsers) != 0 || c.InboundKey != "" {
		t.Errorf("AllowedUsers %v / InboundKey set by default", c.AllowedUsers)
	}
}

func TestConfigLoadAcceptsLoopbackAndKeyedListenAddresses(t *testing.T) {
	t.Parallel()
	for _, e := range [][]string{
		env(ccg, "BOXPROXY_LISTEN=localhost:8080"),
		env(ccg, "BOXPROXY_LISTEN=[::1]:8080"),
		env(ccg, "BOXPROXY_LISTEN=127.0.0.2:8080"),
		env(ccg, "BOXPROXY_LISTEN=0.0.0.0:8080", "BOXPROXY_INBOUND_KEY="+inboundKey),
		env(ccg, "BOXPROXY_LISTEN=:8080", "BOXPROXY_INBOUND_KEY="+inboundKey),
		env(ccg, "BOXPROXY_ALLOWED_USERS=2001, 2002 ,2003"),
		env(ccg, "BOXPROXY_RETRY_BODY_LIMIT=512KiB"),
	} {
		if _, err := config.Load(e); err != nil {
			t.Errorf("Load(%q): %v", e[len(e)-1], err)
		}
	}
	c, err := config.Load(env(ccg, "BOXPROXY_ALLOWED_USERS=2001, 2002 ,2003"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c.AllowedUsers, []string{"2001", "2002", "2003"}) {
		t.Errorf("AllowedUsers %q, want trimmed IDs", c.AllowedUsers)
	}
}

func TestConfigLoadRejectsBadSettingsWithOneLineNamingTheVariableWithoutSecrets(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	emptyFile := filepath.Join(dir, "empty")
	if err := os.WriteFile(emptyFile, []byte("\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	shortKeyFile := filepath.Join(dir, "short")
	if err := os.WriteFile(shortKeyFile, []byte("short-"+marker+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		env  []string
		want []string // every one must be in the error
	}{
		{"no credentials", nil, []string{"BOXPROXY_CLIENT_ID", "BOXPROXY_DEVELOPER_TOKEN", "BOXPROXY_JWT_CONFIG"}},
		{"only a client secret", []string{"BOXPROXY_CLIENT_SECRET=" + secret}, []string{"no Box credentials"}},
		// contradictory settings
		{"developer token and JWT config", env(token, "BOXPROXY_JWT_CONFIG=/x.json"), []string{"BOXPROXY_JWT_CONFIG", "contradictory"}},
		{"developer token and client secret", env(token, "BOXPROXY_CLIENT_SECRET="+secret), []string{"BOXPROXY_CLIENT_SECRET"}},
		{"jwt config and developer token with AUTH=jwt", env(jwtCfg, "BOXPROXY_AUTH=jwt", "BOXPROXY_DEVELOPER_TOKEN="+devToken), []string{"BOXPROXY_DEVELOPER_TOKEN"}},
		{"jwt config and another key", env(jwtCfg, "BOXPROXY_JWT_PRIVATE_KEY=-----BEGIN PRIVATE KEY-----\nMII"+marker), []string{"BOXPROXY_JWT_PRIVATE_KEY", "boxAppSettings.appAuth.privateKey"}},
		{"enterprise ID with oauth", env(ccg, "BOXPROXY_AUTH=oauth"), []string{"BOXPROXY_ENTERPRISE_ID"}},
		{"user ID with oauth", env(oauth, "BOXPROXY_AUTH=oauth", "BOXPROXY_USER_ID=2001"), []string{"BOXPROXY_USER_ID"}},
		{"ccg with JWT config", env(ccg, "BOXPROXY_AUTH=ccg", "BOXPROXY_JWT_CONFIG=/x.json"), []string{"BOXPROXY_JWT_CONFIG"}},
		{"AS_USER=token with developer token", env(token, "BOXPROXY_AS_USER=token"), []string{"BOXPROXY_AS_USER"}},
		{"AS_USER=token with oauth", env(oauth, "BOXPROXY_AS_USER=token"), []string{"BOXPROXY_AS_USER"}},
		{"unknown AS_USER", env(ccg, "BOXPROXY_AS_USER=both"), []string{"BOXPROXY_AS_USER"}},
		{"unknown method", env(ccg, "BOXPROXY_AUTH=basic"), []string{"BOXPROXY_AUTH"}},
		// missing pieces
		{"ccg without secret", env(ccg[:1], "BOXPROXY_ENTERPRISE_ID=1", "BOXPROXY_AUTH=ccg"), []string{"BOXPROXY_CLIENT_SECRET"}},
		{"ccg without subject", env(oauth, "BOXPROXY_AUTH=ccg"), []string{"BOXPROXY_ENTERPRISE_ID", "BOXPROXY_USER_ID"}},
		{"jwt key without key ID", env(jwtKey[:1], jwtKey[2:]...), []string{"BOXPROXY_JWT_KEY_ID"}},
		{"oauth without secret", []string{"BOXPROXY_CLIENT_ID=cid"}, []string{"BOXPROXY_CLIENT_SECRET"}},
		{"empty token store means the default", env(oauth, "BOXPROXY_TOKEN_STORE="), nil},
		// bad IDs
		{"enterprise ID not digits", env(ccg, "BOXPROXY_ENTERPRISE_ID=acme"), []string{"BOXPROXY_ENTERPRISE_ID", "digits"}},
		{"user ID not digits", env(ccg[:2], "BOXPROXY_USER_ID=12x"), []string{"BOXPROXY_USER_ID"}},
		{"user ID too long", env(ccg[:2], "BOXPROXY_USER_ID="+strings.Repeat("1", 21)), []string{"BOXPROXY_USER_ID"}},
		{"allowed users not digits", env(ccg, "BOXPROXY_ALLOWED_USERS=2001,bob"), []string{"BOXPROXY_ALLOWED_USERS", "item 2"}},
		{"allowed users empty item", env(ccg, "BOXPROXY_ALLOWED_USERS=2001,,2002"), []string{"BOXPROXY_ALLOWED_USERS"}},
		// bad URLs
		{"API URL without scheme", env(ccg, "BOXPROXY_API_URL=api.box.com"), []string{"BOXPROXY_API_URL"}},
		{"API URL ftp", env(ccg, "BOXPROXY_API_URL=ftp://api.box.com"), []string{"BOXPROXY_API_URL"}},
		{"upload URL without host", env(ccg, "BOXPROXY_UPLOAD_URL=https://"), []string{"BOXPROXY_UPLOAD_URL"}},
		{"token URL garbage", env(ccg, "BOXPROXY_TOKEN_URL=::"), []string{"BOXPROXY_TOKEN_URL"}},
		{"authorize URL relative", env(oauth, "BOXPROXY_AUTHORIZE_URL=/authorize"), []string{"BOXPROXY_AUTHORIZE_URL"}},
		{"public URL with password", env(ccg, "BOXPROXY_PUBLIC_URL=http://user:pw-"+marker+"@localhost:8080"), []string{"BOXPROXY_PUBLIC_URL"}},
		{"API URL with password", env(ccg, "BOXPROXY_API_URL=https://user:pw-"+marker+"@api.box.com"), []string{"BOXPROXY_API_URL"}},
		// bad sizes and numbers
		{"retry body limit unit", env(ccg, "BOXPROXY_RETRY_BODY_LIMIT=10XB"), []string{"BOXPROXY_RETRY_BODY_LIMIT", "size"}},
		{"retry body limit negative", env(ccg, "BOXPROXY_RETRY_BODY_LIMIT=-1"), []string{"BOXPROXY_RETRY_BODY_LIMIT"}},
		{"retry body limit overflow", env(ccg, "BOXPROXY_RETRY_BODY_LIMIT=99999999999GiB"), []string{"BOXPROXY_RETRY_BODY_LIMIT"}},
		{"cache size zero", env(ccg, "BOXPROXY_TOKEN_CACHE_SIZE=0"), []string{"BOXPROXY_TOKEN_CACHE_SIZE"}},
		{"cache size words", env(ccg, "BOXPROXY_TOKEN_CACHE_SIZE=many"), []string{"BOXPROXY_TOKEN_CACHE_SIZE"}},
		{"retries too many", env(ccg, "BOXPROXY_UPSTREAM_RETRIES=11"), []string{"BOXPROXY_UPSTREAM_RETRIES"}},
		{"retries negative", env(ccg, "BOXPROXY_UPSTREAM_RETRIES=-1"), []string{"BOXPROXY_UPSTREAM_RETRIES"}},
		{"shutdown timeout words", env(ccg, "BOXPROXY_SHUTDOWN_TIMEOUT=forever"), []string{"BOXPROXY_SHUTDOWN_TIMEOUT", "duration"}},
		{"shutdown timeout negative", env(ccg, "BOXPROXY_SHUTDOWN_TIMEOUT=-1s"), []string{"BOXPROXY_SHUTDOWN_TIMEOUT"}},
		{"header timeout zero", env(ccg, "BOXPROXY_HEADER_TIMEOUT=0s"), []string{"BOXPROXY_HEADER_TIMEOUT"}},
		{"token timeout zero", env(ccg, "BOXPROXY_TOKEN_TIMEOUT=0s"), []string{"BOXPROXY_TOKEN_TIMEOUT"}},
		{"quit endpoint maybe", env(ccg, "BOXPROXY_QUIT_ENDPOINT=maybe"), []string{"BOXPROXY_QUIT_ENDPOINT"}},
		{"log level", env(ccg, "BOXPROXY_LOG_LEVEL=loud"), []string{"BOXPROXY_LOG_LEVEL"}},
		{"log format", env(ccg, "BOXPROXY_LOG_FORMAT=xml"), []string{"BOXPROXY_LOG_FORMAT"}},
		// listening
		{"all interfaces without key", env(ccg, "BOXPROXY_LISTEN=0.0.0.0:8080"), []string{"BOXPROXY_LISTEN", "BOXPROXY_INBOUND_KEY"}},
		{"empty host without key", env(ccg, "BOXPROXY_LISTEN=:8080"), []string{"BOXPROXY_LISTEN", "BOXPROXY_INBOUND_KEY"}},
		{"IPv6 any without key", env(ccg, "BOXPROXY_LISTEN=[::]:8080"), []string{"BOXPROXY_LISTEN", "BOXPROXY_INBOUND_KEY"}},
		{"pod IP without key", env(ccg, "BOXPROXY_LISTEN=10.1.2.3:8080"), []string{"BOXPROXY_LISTEN", "BOXPROXY_INBOUND_KEY"}},
		{"listen without port", env(ccg, "BOXPROXY_LISTEN=8080"), []string{"BOXPROXY_LISTEN"}},
		{"listen port name", env(ccg, "BOXPROXY_LISTEN=127.0.0.1:http"), []string{"BOXPROXY_LISTEN"}},
		{"listen port too big", env(ccg, "BOXPROXY_LISTEN=127.0.0.1:65536"), []string{"BOXPROXY_LISTEN"}},
		{"short inbound key", env(ccg, "BOXPROXY_INBOUND_KEY=short-"+marker), []string{"BOXPROXY_INBOUND_KEY"}},
		// _FILE forms
		{"secret and its file", env(ccg, "BOXPROXY_CLIENT_SECRET_FILE="+secretFile), []string{"BOXPROXY_CLIENT_SECRET", "BOXPROXY_CLIENT_SECRET_FILE"}},
		{"missing secret file", env(ccg[:1], ccg[2], "BOXPROXY_CLIENT_SECRET_FILE="+filepath.Join(dir, "nope")), []string{"BOXPROXY_CLIENT_SECRET_FILE"}},
		{"secret file is a directory", env(ccg[:1], ccg[2], "BOXPROXY_CLIENT_SECRET_FILE="+dir), []string{"BOXPROXY_CLIENT_SECRET_FILE"}},
		{"empty secret file", env(ccg[:1], ccg[2], "BOXPROXY_CLIENT_SECRET_FILE="+emptyFile), []string{"BOXPROXY_CLIENT_SECRET_FILE", "empty"}},
		{"short key from a file", env(ccg, "BOXPROXY_INBOUND_KEY_FILE="+shortKeyFile), []string{"BOXPROXY_INBOUND_KEY"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Load(tc.env)
			if tc.want == nil {
				if err != nil {
					t.Errorf("Load: %v, want accepted", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Load accepted it")
			}
			msg := err.Error()
			if strings.ContainsAny(msg, "\r\n") {
				t.Errorf("error is not one line: %q", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
			if strings.Contains(msg, marker) {
				t.Errorf("error %q contains a secret value", msg)
			}
		})
	}
}

func TestConfigSecretFilesAreReadWithoutTheirFinalNewline(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	c, err := config.Load([]string{
		"BOXPROXY_CLIENT_ID_FILE=" + write("id", "cid\n"),
		"BOXPROXY_CLIENT_SECRET_FILE=" + write("secret", secret+"\r\n"),
		"BOXPROXY_ENTERPRISE_ID=1",
		"BOXPROXY_INBOUND_KEY_FILE=" + write("key", inboundKey+"\n\n"),
		"BOXPROXY_JWT_PASSPHRASE_FILE=" + write("pass", "  "+passphrase+"  \n"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.ClientID != "cid" || c.ClientSecret != secret || c.InboundKey != inboundKey {
		t.Errorf("values from files: %q %q %q", c.ClientID, c.ClientSecret, c.InboundKey)
	}
	if c.JWTPassphrase != "  "+passphrase+"  " {
		t.Errorf("passphrase %q: only the final line break may go, spaces can be part of a passphrase", c.JWTPassphrase)
	}
	c, err = config.Load([]string{"BOXPROXY_DEVELOPER_TOKEN_FILE=" + write("tok", devToken+"\n")})
	if err != nil || c.DeveloperToken != devToken || c.Auth != config.MethodToken {
		t.Errorf("BOXPROXY_DEVELOPER_TOKEN_FILE: %v %q %q", err, c.DeveloperToken, c.Auth)
	}
	// Other programs' variables are ignored.
	if _, err := config.Load(env(ccg, "PATH=/bin", "HOME=/root", "BOXPROXY")); err != nil {
		t.Errorf("foreign variables: %v", err)
	}
}

func TestConfigByteSizeParsesUnits(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int64{
		"0": 0, "1048576": 1 << 20, "10MiB": 10 << 20, "512KiB": 512 << 10, "1GiB": 1 << 30,
		"1GB": 1e9, "5MB": 5e6, "3KB": 3000, "7B": 7, " 10 MiB ": 10 << 20,
	} {
		var b config.ByteSize
		if err := b.UnmarshalText([]byte(in)); err != nil || int64(b) != want {
			t.Errorf("%q: %d, %v; want %d", in, b, err, want)
		}
	}
	for _, in := range []string{"", "10XB", "-1", "1.5MiB", "MiB", "1TiB", "9223372036854775807GiB"} {
		var b config.ByteSize
		if err := b.UnmarshalText([]byte(in)); err == nil {
			t.Errorf("%q accepted as %d", in, b)
		}
	}
}

func TestConfigHelpDescribesEveryVariableAndTheFileFormOfEverySecret(t *testing.T) {
	t.Parallel()
	help := config.Help()
	typ := reflect.TypeOf(config.Config{})
	for i := range typ.NumField() {
		f := typ.Field(i)
		name := f.Tag.Get("env")
		if name == "" || name == "-" {
			continue
		}
		var line string
		for _, l := range strings.Split(help, "\n") {
			if fs := strings.Fields(l); len(fs) > 0 && fs[0] == config.Prefix+name {
				line = l
			}
		}
		if line == "" {
			t.Errorf("Help does not list %s%s", config.Prefix, name)
			continue
		}
		if f.Tag.Get("help") == "" {
			t.Errorf("%s%s has no help text", config.Prefix, name)
		}
		if !strings.Contains(line, "(default ") {
			t.Errorf("%s%s shows no default: %q", config.Prefix, name, line)
		}
		if f.Tag.Get("secret") != "" && !strings.Contains(help, config.Prefix+name+"_FILE") {
			t.Errorf("Help does not list %s%s_FILE", config.Prefix, name)
		}
	}
}

func FuzzLoad(f *testing.F) {
	f.Add("127.0.0.1:8080", "10MiB", "https://api.box.com", "token", "2001,2002", "30s")
	f.Add("0.0.0.0:1", "10XB", "ftp://x", "both", "bob", "-1s")
	f.Add(":0", "1GiB", "http://u:p@h", "header", "", "forever")
	f.Add("[::1]:65535", "-0", "http://[::1", "", ",", "0")
	f.Add("host\n:1", "\x00", "http://a\nb", "tok\ren", "1\n2", "1h\n")
	f.Fuzz(func(t *testing.T, listen, size, apiURL, asUser, allowed, shutdown string) {
		vars := []string{
			"BOXPROXY_LISTEN=" + listen, "BOXPROXY_RETRY_BODY_LIMIT=" + size, "BOXPROXY_API_URL=" + apiURL,
			"BOXPROXY_AS_USER=" + asUser, "BOXPROXY_ALLOWED_USERS=" + allowed, "BOXPROXY_SHUTDOWN_TIMEOUT=" + shutdown,
		}
		c, err := config.Load(append(env(ccg, "BOXPROXY_JWT_PASSPHRASE="+passphrase), vars...))
		if err != nil {
			msg := err.Error()
			if strings.ContainsAny(msg, "\r\n") {
				t.Errorf("error is not one line: %q", msg)
			}
			if !strings.Contains(msg, "BOXPROXY_") {
				t.Errorf("error names no variable: %q", msg)
			}
			if !strings.Contains(strings.Join(vars, ""), marker) && strings.Contains(msg, marker) {
				t.Errorf("error contains a secret: %q", msg)
			}
			return
		}
		if c.API == nil || c.Public == nil || c.RetryBodyLimit < 0 || c.ShutdownTimeout < 0 {
			t.Errorf("accepted a configuration with %v %v %d %v", c.API, c.Public, c.RetryBodyLimit, c.ShutdownTimeout)
		}
	})
}

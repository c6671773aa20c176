package integration_test

// Issue 13 (configuration and commands) through the real binary: no piece of
// a secret put in the wrong variable is printed; unknown variables are named
// with the closest known one; every configuration error at once; every
// command's --help does nothing else; command output is for people; the
// version comes from the build information; millisecond timestamps; duration
// fields name their unit.

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/boxproxy/boxproxy/fakebox"
)

var plainWord = regexp.MustCompile(`^[a-zA-Z .'-]+$`)

// with is base and kv, in a new slice (append to a shared base would alias).
func with(base []string, kv ...string) []string {
	return append(append([]string(nil), base...), kv...)
}

// assertNoSecretPieces fails if text holds any 10-character piece of a secret.
func assertNoSecretPieces(t testing.TB, where, text string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		for i := 0; i+10 <= len(s); i++ {
			// Pieces that are plain words ("passphrase" of "it-passphrase-…") say nothing.
			if p := s[i : i+10]; !plainWord.MatchString(p) && strings.Contains(text, p) {
				t.Errorf("%s holds %q, a piece of a secret:\n%s", where, p, redact(text, p))
				break
			}
		}
	}
}

func TestCommandsSecretInAPathVariableIsNeverPrinted(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	app := newJWTApp(t, box)
	secret, tok, key := "sec-"+randomHex(t, 16), "tok-"+randomHex(t, 16), "key-"+randomHex(t, 16)
	encPEM := string(app.pems[0])
	body := strings.Join(strings.Split(strings.TrimSpace(encPEM), "\n")[1:3], "\n") // two base64 lines, no BEGIN
	jsonDoc, err := os.ReadFile(app.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	broken := string(jsonDoc[:len(jsonDoc)-20]) // cut short: not valid JSON
	ccg := ccgEnv(box)
	noSecret := opsEnvWithout(ccg, "BOXPROXY_CLIENT_SECRET")
	secrets := append(app.Secrets(), secret, tok, key, testClientSecret)

	for _, tc := range []struct {
		name, variable string
		env            []string
		hint           string
	}{
		{"client secret in its _FILE", "BOXPROXY_CLIENT_SECRET_FILE", with(noSecret, "BOXPROXY_CLIENT_SECRET_FILE="+secret), "BOXPROXY_CLIENT_SECRET instead"},
		{"developer token in its _FILE", "BOXPROXY_DEVELOPER_TOKEN_FILE", with(boxEnv(box), "BOXPROXY_DEVELOPER_TOKEN_FILE="+tok), "path"},
		{"inbound key in its _FILE", "BOXPROXY_INBOUND_KEY_FILE", with(ccg, "BOXPROXY_INBOUND_KEY_FILE="+key), "path"},
		{"passphrase in its _FILE", "BOXPROXY_JWT_PASSPHRASE_FILE", with(boxEnv(box), "BOXPROXY_JWT_PRIVATE_KEY="+writeTemp(t, app.pems[0]),
			"BOXPROXY_JWT_KEY_ID="+testKeyID, "BOXPROXY_CLIENT_ID="+testClientID, "BOXPROXY_CLIENT_SECRET="+testClientSecret,
			"BOXPROXY_ENTERPRISE_ID="+testEnterpriseID, "BOXPROXY_JWT_PASSPHRASE_FILE="+app.Passphrase), "path"},
		{"PEM key in a _FILE", "BOXPROXY_CLIENT_SECRET_FILE", with(noSecret, "BOXPROXY_CLIENT_SECRET_FILE="+encPEM), "looks like a PEM key"},
		{"key without its BEGIN line", "BOXPROXY_JWT_PRIVATE_KEY", with(boxEnv(box), "BOXPROXY_JWT_PRIVATE_KEY="+body,
			"BOXPROXY_JWT_KEY_ID="+testKeyID, "BOXPROXY_CLIENT_ID="+testClientID, "BOXPROXY_CLIENT_SECRET="+testClientSecret,
			"BOXPROXY_ENTERPRISE_ID="+testEnterpriseID, "BOXPROXY_JWT_PASSPHRASE="+app.Passphrase), "looks like a PEM key"},
		{"JSON text cut short", "BOXPROXY_JWT_CONFIG", with(boxEnv(box), "BOXPROXY_JWT_CONFIG="+broken), "not valid JSON"},
		{"secret as the method", "BOXPROXY_AUTH", with(ccg, "BOXPROXY_AUTH="+secret), "ccg, jwt, oauth or token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, args := range [][]string{nil, {"check"}, {"token"}} {
				stdout, stderr, code := runBinary(t, with(tc.env, "BOXPROXY_LISTEN=127.0.0.1:0"), args...)
				lines := opsHumanLines(stderr)
				if code != 1 || stdout != "" || len(lines) != 1 || len(logLines(t, stderr)) != 0 {
					t.Errorf("boxproxy %v: exit %d, stdout %q, stderr %q; want exit 1 and one plain line", args, code, stdout, stderr)
					continue
				}
				if !strings.Contains(lines[0], tc.variable+": ") || !strings.Contains(lines[0], tc.hint) {
					t.Errorf("boxproxy %v: %q does not name %s and say %q", args, lines[0], tc.variable, tc.hint)
				}
				assertNoSecretPieces(t, "output", stdout+stderr, secrets...)
			}
		})
	}

	// The value forms people type work: PEM text in BOXPROXY_JWT_PRIVATE_KEY,
	// JSON text in BOXPROXY_JWT_CONFIG.
	for name, env := range map[string][]string{
		"PEM text": with(boxEnv(box), "BOXPROXY_JWT_PRIVATE_KEY="+encPEM, "BOXPROXY_JWT_KEY_ID="+testKeyID, "BOXPROXY_CLIENT_ID="+testClientID,
			"BOXPROXY_CLIENT_SECRET="+testClientSecret, "BOXPROXY_ENTERPRISE_ID="+testEnterpriseID, "BOXPROXY_JWT_PASSPHRASE="+app.Passphrase),
		"JSON text": with(boxEnv(box), "BOXPROXY_JWT_CONFIG="+string(jsonDoc)),
	} {
		stdout, stderr, code := runBinary(t, env, "check")
		if code != 0 || !strings.HasPrefix(stdout, "ok: jwt method") || stderr != "" {
			t.Errorf("check with %s: exit %d, stdout %q, stderr %q", name, code, stdout, stderr)
		}
		assertNoSecretPieces(t, "check output", stdout+stderr, secrets...)
	}
}

func TestCommandsUnknownVariablesAreNamedWithTheClosestKnownName(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	// BOXPROXY_ENTERPRISEID: the ccg app would silently become an oauth one.
	env := with(opsEnvWithout(ccgEnv(box), "BOXPROXY_ENTERPRISE_ID"), "BOXPROXY_ENTERPRISEID="+testEnterpriseID, "BOXPROXY_LOG_LEVLE=debug")

	tokens := len(box.TokenRequests())
	stdout, stderr, code := runBinary(t, env, "check")
	lines := opsHumanLines(stderr)
	if code != 1 || stdout != "" || len(lines) != 1 {
		t.Fatalf("check with two misspelt variables: exit %d, stdout %q, stderr %q; want exit 1 and one line", code, stdout, stderr)
	}
	for _, w := range []string{
		"BOXPROXY_ENTERPRISEID: unknown variable; did you mean BOXPROXY_ENTERPRISE_ID?",
		"BOXPROXY_LOG_LEVLE: unknown variable; did you mean BOXPROXY_LOG_LEVEL?",
	} {
		if !strings.Contains(lines[0], w) {
			t.Errorf("check: %q does not say %q", lines[0], w)
		}
	}
	if n := len(box.TokenRequests()); n != tokens {
		t.Errorf("check asked for %d tokens with unknown variables set", n-tokens)
	}

	// serve warns and says which method it chose, and why.
	bp := startBinary(t, box, with(env, "BOXPROXY_TOKEN_STORE="+filepath.Join(t.TempDir(), "tokens.json"))...)
	var warned []string
	for _, l := range logLines(t, bp.Stderr.String()) {
		if l["level"] == "warn" && l["variable"] != nil {
			warned = append(warned, l["message"].(string))
		}
	}
	if len(warned) != 2 || !strings.Contains(strings.Join(warned, "|"), "did you mean BOXPROXY_ENTERPRISE_ID?") {
		t.Errorf("serve warned %q, want one warning per unknown variable with the closest name", warned)
	}
	if bp.Startup["auth"] != "oauth" || !strings.Contains(bp.Startup["auth_reason"].(string), "without a subject") {
		t.Errorf("start-up line %v: want auth oauth with a reason naming the missing subject", bp.Startup)
	}

	// token warns on stderr in plain words; stdout is the token alone.
	stdout, stderr, code = runBinary(t, with(ccgEnv(box), "BOXPROXY_LOG_LEVLE=debug"), "token")
	if code != 0 || !regexp.MustCompile(`^\S+\n$`).MatchString(stdout) || !isIssued(box, strings.TrimSpace(stdout)) {
		t.Fatalf("token with an unknown variable: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if lines := opsHumanLines(stderr); len(lines) != 1 || !strings.HasPrefix(lines[0], "boxproxy token: warning: BOXPROXY_LOG_LEVLE: unknown variable; did you mean BOXPROXY_LOG_LEVEL?") ||
		len(logLines(t, stderr)) != 0 {
		t.Errorf("token's stderr %q, want one plain warning naming BOXPROXY_LOG_LEVEL", stderr)
	}
}

func TestCommandsCheckAndAFailedStartListEveryConfigurationErrorAtOnce(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	env := with(ccgEnv(box), "BOXPROXY_LISTEN=0.0.0.0:0", "BOXPROXY_TOKEN_TIMEOUT=soon", "BOXPROXY_ALLOWED_USERS=2001,bob",
		"BOXPROXY_API_URL=ftp://example.com", "BOXPROXY_LOG_FORMAT=xml")
	want := []string{"BOXPROXY_LISTEN: ", "BOXPROXY_TOKEN_TIMEOUT: ", "BOXPROXY_ALLOWED_USERS: ", "BOXPROXY_API_URL: ", "BOXPROXY_LOG_FORMAT: "}
	for _, args := range [][]string{{"check"}, nil, {"serve"}, {"token"}} {
		stdout, stderr, code := runBinary(t, env, args...)
		lines := opsHumanLines(stderr)
		if code != 1 || stdout != "" || len(lines) != 1 {
			t.Errorf("boxproxy %v: exit %d, stdout %q, stderr %q; want exit 1 and one line", args, code, stdout, stderr)
			continue
		}
		if !strings.Contains(lines[0], "5 configuration errors: ") {
			t.Errorf("boxproxy %v: %q does not count 5 errors", args, lines[0])
		}
		for _, w := range want {
			if !strings.Contains(lines[0], w) {
				t.Errorf("boxproxy %v: %q does not name %s", args, lines[0], w)
			}
		}
		for _, v := range []string{"soon", "bob", "ftp://", "xml"} {
			if strings.Contains(lines[0], v) {
				t.Errorf("boxproxy %v: %q echoes the value %q", args, lines[0], v)
			}
		}
	}
}

func TestCommandsAWrongPassphraseIsListedWithTheOtherConfigurationErrors(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	app := newJWTApp(t, box)
	wrong := "wrong-" + randomHex(t, 8)
	file := writeJWTConfigFile(t, t.TempDir(), testClientID, testClientSecret, testKeyID, string(app.pems[0]), wrong, testEnterpriseID)
	for _, args := range [][]string{{"check"}, nil} {
		stdout, stderr, code := runBinary(t, with(boxEnv(box), "BOXPROXY_JWT_CONFIG="+file, "BOXPROXY_LOG_FORMAT=xml", "BOXPROXY_LISTEN=127.0.0.1:0"), args...)
		lines := opsHumanLines(stderr)
		if code != 1 || len(lines) != 1 || !strings.Contains(lines[0], "2 configuration errors: ") ||
			!strings.Contains(lines[0], "BOXPROXY_JWT_PASSPHRASE: cannot decrypt the private key") || !strings.Contains(lines[0], "BOXPROXY_LOG_FORMAT: ") {
			t.Errorf("boxproxy %v: exit %d, stderr %q; want one line with both the passphrase and the log format", args, code, stderr)
		}
		assertNoSecretPieces(t, "output", stdout+stderr, append(app.Secrets(), wrong)...)
	}
}

func TestCommandsJWTFileAndVariablesThatDisagreeAreAnErrorNotASilentChoice(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	app := newJWTApp(t, box)
	base := with(boxEnv(box), app.ConfigEnv()...)
	for _, tc := range []struct{ variable, value, field string }{
		{"BOXPROXY_CLIENT_ID", "another-client-id", "boxAppSettings.clientID"},
		{"BOXPROXY_ENTERPRISE_ID", "999999", "enterpriseID"},
		{"BOXPROXY_JWT_PASSPHRASE", "another-" + app.Passphrase, "boxAppSettings.appAuth.passphrase"},
	} {
		stdout, stderr, code := runBinary(t, with(base, tc.variable+"="+tc.value), "check")
		lines := opsHumanLines(stderr)
		if code != 1 || len(lines) != 1 || !strings.Contains(lines[0], tc.variable+": differs from "+tc.field+" in BOXPROXY_JWT_CONFIG") {
			t.Errorf("%s differing from the file: exit %d, stdout %q, stderr %q", tc.variable, code, stdout, stderr)
		}
		assertNoSecretPieces(t, "output", stdout+stderr, append(app.Secrets(), tc.value)...)
	}
	// The same value in both places is fine; what the file lacks the environment adds.
	stdout, stderr, code := runBinary(t, with(base, "BOXPROXY_CLIENT_ID="+testClientID, "BOXPROXY_USER_ID="+userAlice), "check")
	if code != 0 || !strings.Contains(stdout, userAlice) {
		t.Errorf("agreeing variables and a user ID: exit %d, stdout %q, stderr %q; want a token for user %s", code, stdout, stderr, userAlice)
	}
}

func TestCommandsHelpOfEveryCommandPrintsUsageAndDoesNothingElse(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	store := filepath.Join(t.TempDir(), "tokens.json")
	// A port nobody listens on: a command that served would keep it, and never exit.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	env := with(ccgEnv(box), "BOXPROXY_LISTEN="+addr, "BOXPROXY_TOKEN_STORE="+store)
	oauth := with(oauthEnv(box, store), "BOXPROXY_LISTEN="+addr)
	tokens, requests := len(box.TokenRequests()), len(box.Requests())
	for _, cmd := range []string{"", "serve", "token", "check", "login", "logout", "demo", "version"} {
		for _, h := range []string{"--help", "-h"} {
			args := []string{h}
			if cmd != "" {
				args = []string{cmd, h}
			}
			e := env
			if cmd == "login" || cmd == "logout" {
				e = oauth
			}
			start := time.Now()
			stdout, stderr, code := runBinary(t, e, args...)
			if code != 0 || stderr != "" || !strings.Contains(stdout, "Usage:") {
				t.Errorf("boxproxy %v: exit %d after %s, stderr %q, stdout %.80q; want exit 0 with usage", args, code, time.Since(start).Round(time.Millisecond), stderr, stdout)
			}
			if cmd != "" && cmd != "version" && !strings.Contains(stdout, "boxproxy "+cmd) {
				t.Errorf("boxproxy %v: usage does not name the command: %.200q", args, stdout)
			}
		}
		// Unknown flags and arguments are errors that name them.
		if cmd == "" {
			continue
		}
		for _, bad := range [][]string{{cmd, "--frobnicate"}, {cmd, "stray-word"}} {
			stdout, stderr, code := runBinary(t, envFor(cmd, env, oauth), bad...)
			lines := opsHumanLines(stderr)
			if code != 2 || stdout != "" || len(lines) != 1 || !strings.Contains(lines[0], strings.TrimLeft(bad[1], "-")) ||
				!strings.Contains(lines[0], "boxproxy "+cmd+" --help") {
				t.Errorf("boxproxy %v: exit %d, stdout %q, stderr %q; want exit 2 and one line naming %s", bad, code, stdout, stderr, bad[1])
			}
		}
	}
	if n, m := len(box.TokenRequests())-tokens, len(box.Requests())-requests; n != 0 || m != 0 {
		t.Errorf("--help and refused command lines made %d token requests and %d API requests", n, m)
	}
	if _, err := os.Stat(store); !os.IsNotExist(err) {
		t.Errorf("--help touched the token store: %v", err)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("something still listens on %s", addr)
	}
}

// envFor picks the oauth environment for login and logout.
func envFor(cmd string, env, oauth []string) []string {
	if cmd == "login" || cmd == "logout" {
		return oauth
	}
	return env
}

func TestCommandsFlagsWinOverTheirVariablesAndErrorsNameTheFlag(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	// The variable says a port that is taken; the flag's address is used.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cmd := exec.Command(binaryPath(t), "serve", "--listen", "127.0.0.1:0", "--log-format=json")
	cmd.Env = with(ccgEnv(box), "BOXPROXY_LISTEN="+taken.Addr().String(), "BOXPROXY_LOG_FORMAT=console")
	var errb syncBuffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	var startup map[string]any
	waitUntil(t, 20*time.Second, func() bool {
		for _, l := range logLines(t, errb.String()) {
			if l["message"] == "boxproxy serving" {
				startup = l
			}
		}
		return startup != nil
	}, "the start-up line (JSON, as --log-format says)")
	if startup["listen"] == taken.Addr().String() {
		t.Errorf("served on BOXPROXY_LISTEN %v although --listen was given", startup["listen"])
	}

	stdout, stderr, code := runBinary(t, ccgEnv(box), "check", "--auth", "sometimes")
	if lines := opsHumanLines(stderr); code != 1 || len(lines) != 1 || !strings.Contains(lines[0], "--auth (BOXPROXY_AUTH): ") {
		t.Errorf("check --auth sometimes: exit %d, stdout %q, stderr %q; want one line naming --auth", code, stdout, stderr)
	}
}

func TestCommandsOutputIsForPeopleNotLogRecords(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	// check: one line, even with a debug log level and a failing token endpoint.
	env := with(ccgEnv(box), "BOXPROXY_LOG_LEVEL=debug")
	stdout, stderr, code := runBinary(t, env, "check")
	if code != 0 || strings.Count(stdout, "\n") != 1 || stderr != "" {
		t.Errorf("check: exit %d, stdout %q, stderr %q; want exactly one line", code, stdout, stderr)
	}
	box.SetTokenFault(fakebox.Fault503)
	stdout, stderr, code = runBinary(t, env, "check")
	if code != 1 || stdout != "" || strings.Count(stderr, "\n") != 1 || strings.HasPrefix(stderr, "{") {
		t.Errorf("check while the token endpoint fails: exit %d, stdout %q, stderr %q; want one plain line", code, stdout, stderr)
	}
	stdout, stderr, code = runBinary(t, env, "token")
	if code != 1 || stdout != "" || strings.Count(stderr, "\n") != 1 || strings.HasPrefix(stderr, "{") {
		t.Errorf("token while the token endpoint fails: exit %d, stdout %q, stderr %q; want one plain line", code, stdout, stderr)
	}
	box.SetTokenFault(fakebox.FaultNone)

	// login: the URL on stdout, no log records (no "token request failed … login required").
	store := filepath.Join(t.TempDir(), "tokens.json")
	stdout, stderr, code = runBinary(t, with(oauthEnv(box, store), "BOXPROXY_LISTEN=127.0.0.1:0", "BOXPROXY_LOGIN_TIMEOUT=1s"), "login")
	if code != 1 || !strings.Contains(stdout, "/auth/login") {
		t.Errorf("login that times out: exit %d, stdout %q", code, stdout)
	}
	if len(logLines(t, stderr)) != 0 || strings.Contains(stderr, "login required") || strings.Count(stderr, "\n") != 1 ||
		!strings.HasPrefix(stderr, "boxproxy login: no login within 1s") {
		t.Errorf("login's stderr %q: want one plain sentence, no log records", stderr)
	}
}

func TestCommandsVersionIsTheBuildInformationOfTheBinary(t *testing.T) {
	t.Parallel()
	cpuHeavy(t)
	// Build with VCS stamping where the checkout allows it (CI sets -buildvcs=false).
	bin := filepath.Join(t.TempDir(), "boxproxy")
	build := exec.Command("go", "build", "-buildvcs=auto", "-o", bin, "github.com/boxproxy/boxproxy")
	build.Env = append(os.Environ(), "GOFLAGS=")
	vcs := true
	if out, err := build.CombinedOutput(); err != nil {
		vcs = false
		t.Logf("go build -buildvcs=auto failed (%v: %s); building without VCS data", err, bytes.TrimSpace(out))
		build = exec.Command("go", "build", "-buildvcs=false", "-o", bin, "github.com/boxproxy/boxproxy")
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("go build: %v\n%s", err, out)
		}
	}
	m, err := exec.Command("go", "version", "-m", bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	info := map[string]string{}
	for _, l := range strings.Split(string(m), "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) >= 3 && f[0] == "mod":
			info["version"] = f[2]
		case len(f) >= 2 && f[0] == "build" && strings.HasPrefix(f[1], "vcs.revision="):
			info["revision"] = strings.TrimPrefix(f[1], "vcs.revision=")
		case len(f) == 2 && strings.HasSuffix(f[0], ":"):
			info["go"] = f[1]
		}
	}
	if info["revision"] == "" {
		info["revision"] = "unknown"
		if fi, err := os.Stat("../.git"); err == nil && fi.IsDir() && vcs {
			t.Errorf("built in a git clone, but go version -m shows no vcs.revision:\n%s", m)
		}
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	want := "boxproxy " + info["version"] + " revision " + info["revision"]
	if line := string(out); !strings.HasPrefix(line, want+" ") && !strings.HasPrefix(line, want+" (modified) ") ||
		!strings.Contains(line, " "+info["go"]+" ") || strings.Count(line, "\n") != 1 {
		t.Errorf("boxproxy version = %q, want %q… with %s (go version -m says:\n%s)", line, want, info["go"], m)
	}

	// /metrics carries the same.
	box := startBox(t)
	c := exec.Command(bin)
	c.Env = with(ccgEnv(box), "BOXPROXY_LISTEN=127.0.0.1:0")
	var errb syncBuffer
	c.Stderr = &errb
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Process.Kill(); _ = c.Wait() }()
	var listen string
	waitUntil(t, 20*time.Second, func() bool {
		for _, l := range logLines(t, errb.String()) {
			if l["message"] == "boxproxy serving" {
				listen, _ = l["listen"].(string)
			}
		}
		return listen != ""
	}, "the start-up line")
	resp, err := http.Get("http://" + listen + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	metric := `boxproxy_build_info{goversion="` + info["go"] + `",revision="` + info["revision"] + `",version="` + info["version"] + `"} 1`
	if !strings.Contains(string(body), metric+"\n") {
		t.Errorf("/metrics has no %s:\n%s", metric, grepLines(string(body), "boxproxy_build_info"))
	}
}

func grepLines(text, s string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestCommandsLogLinesHaveMillisecondTimestampsAndDurationsNameTheirUnit(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	box.SetTokenFault(fakebox.Fault503) // the warm-up's token request fails and is logged with its back-off
	bp := startBinary(t, box, ccgEnv(box)...)
	var failed map[string]any
	waitUntil(t, 10*time.Second, func() bool {
		for _, l := range logLines(t, bp.Stderr.String()) {
			if l["message"] == "token request failed" {
				failed = l
			}
		}
		return failed != nil
	}, "a token request failed line")
	box.SetTokenFault(fakebox.FaultNone)
	rfc3339ms := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|[+-]\d\d:\d\d)$`)
	for _, l := range logLines(t, bp.Stderr.String()) {
		ts, _ := l["time"].(string)
		if !rfc3339ms.MatchString(ts) {
			t.Errorf("log line %v: time %q is not RFC 3339 with milliseconds", l["message"], ts)
		}
		if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
			t.Errorf("time %q: %v", ts, err)
		}
	}
	if _, ok := failed["retry_in_ms"].(float64); !ok || failed["retry_in"] != nil {
		t.Errorf("token request failed line %v: want retry_in_ms (a number), no unitless retry_in", failed)
	}
}

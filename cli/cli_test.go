package cli_test

import (
	"bytes"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/boxproxy/boxproxy/cli"
	"github.com/boxproxy/boxproxy/config"
	"github.com/boxproxy/boxproxy/fakebox"
)

const (
	clientID     = "cli-test-client"
	clientSecret = "cli-test-secret-Qw7p"
	enterpriseID = "700100"
)

// run calls cli.Main and returns its exit code and output.
func run(t *testing.T, environ []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = cli.Main(args, environ, &out, &errb, "1.2.3-test")
	return code, out.String(), errb.String()
}

// humanLines are stderr's lines that are not JSON log lines.
func humanLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "{") {
			out = append(out, l)
		}
	}
	return out
}

func startBox(t *testing.T) *fakebox.Box {
	t.Helper()
	b, err := fakebox.Start(fakebox.Config{
		ClientID: clientID, ClientSecret: clientSecret, EnterpriseID: enterpriseID,
		Users: []fakebox.User{{ID: "2001", Name: "Alice", Login: "alice@example.com"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

func ccgEnv(b *fakebox.Box, secret string) []string {
	return []string{
		"BOXPROXY_CLIENT_ID=" + clientID, "BOXPROXY_CLIENT_SECRET=" + secret, "BOXPROXY_ENTERPRISE_ID=" + enterpriseID,
		"BOXPROXY_API_URL=" + b.APIURL(), "BOXPROXY_UPLOAD_URL=" + b.UploadURL(), "BOXPROXY_TOKEN_URL=" + b.TokenURL(),
	}
}

func TestCLIVersionPrintsTheBuildVersion(t *testing.T) {
	t.Parallel()
	for _, arg := range []string{"version", "--version"} {
		code, stdout, stderr := run(t, nil, arg)
		if code != 0 || !regexp.MustCompile(`^boxproxy 1\.2\.3-test revision \S+ go\S+ \S+/\S+\n$`).MatchString(stdout) || stderr != "" {
			t.Errorf("%s: %d %q %q", arg, code, stdout, stderr)
		}
	}
}

func TestCLIHelpListsEveryConfigurationVariable(t *testing.T) {
	t.Parallel()
	code, stdout, stderr := run(t, nil, "--help")
	if code != 0 || stderr != "" {
		t.Fatalf("--help: %d %q", code, stderr)
	}
	typ := reflect.TypeOf(config.Config{})
	for i := range typ.NumField() {
		name := typ.Field(i).Tag.Get("env")
		if name == "" || name == "-" {
			continue
		}
		if !regexp.MustCompile(`(?m)^\s+` + config.Prefix + name + `\s+\(default [^)]+\)\s+\S`).MatchString(stdout) {
			t.Errorf("--help does not list %s%s with a default and a meaning", config.Prefix, name)
		}
	}
	if !strings.Contains(stdout, "NAME_FILE") {
		t.Error("--help does not explain the _FILE forms")
	}
}

func TestCLIUnknownCommandExits2WithOneLine(t *testing.T) {
	t.Parallel()
	code, stdout, stderr := run(t, nil, "srve")
	if code != 2 || stdout != "" || len(humanLines(stderr)) != 1 || !strings.Contains(stderr, `"srve"`) {
		t.Errorf("unknown command: %d %q %q; want 2 and one line naming it", code, stdout, stderr)
	}
}

func TestCLIConfigurationErrorsExit1WithOneLineForEveryCommand(t *testing.T) {
	t.Parallel()
	env := []string{"BOXPROXY_CLIENT_ID=x", "BOXPROXY_CLIENT_SECRET=" + clientSecret, "BOXPROXY_ENTERPRISE_ID=1", "BOXPROXY_LISTEN=0.0.0.0:8080"}
	for _, cmd := range []string{"serve", "token", "check"} {
		code, stdout, stderr := run(t, env, cmd)
		lines := humanLines(stderr)
		if code != 1 || stdout != "" || len(lines) != 1 || !strings.HasPrefix(lines[0], "boxproxy "+cmd+": BOXPROXY_LISTEN") {
			t.Errorf("%s with a bad configuration: %d %q %q; want 1 and one line naming BOXPROXY_LISTEN", cmd, code, stdout, stderr)
		}
		if strings.Contains(stdout+stderr, clientSecret) {
			t.Errorf("%s printed the client secret", cmd)
		}
	}
	// serve without any argument is serve.
	if code, _, stderr := run(t, env); code != 1 || !strings.HasPrefix(stderr, "boxproxy serve: ") {
		t.Errorf("no command: %d %q, want serve's error", code, stderr)
	}
}

func TestCLITokenRefusesBadArgumentsWithOneLine(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	devEnv := []string{"BOXPROXY_DEVELOPER_TOKEN=cli-dev-token-Qw7p"}
	allowed := append(ccgEnv(box, clientSecret), "BOXPROXY_ALLOWED_USERS=2001")
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want string
		code int // 2: a mistake on the command line; 1: the command failed
	}{
		{"missing ID", allowed, []string{"token", "--as-user"}, "--as-user", 2},
		{"not an ID", allowed, []string{"token", "--as-user", "alice"}, "--as-user", 2},
		{"unknown flag", allowed, []string{"token", "--user", "2001"}, "--user", 2},
		{"stray argument", allowed, []string{"token", "2001"}, `"2001"`, 2},
		{"user not allowed", allowed, []string{"token", "--as-user", "2002"}, "BOXPROXY_ALLOWED_USERS", 1},
		{"method without user tokens", devEnv, []string{"token", "--as-user", "2001"}, "ccg or jwt", 1},
	} {
		tokens := len(box.TokenRequests())
		code, stdout, stderr := run(t, tc.env, tc.args...)
		lines := humanLines(stderr)
		if code != tc.code || stdout != "" || len(lines) != 1 || !strings.Contains(lines[0], tc.want) {
			t.Errorf("%s: %d %q %q; want exit %d and one line mentioning %s", tc.name, code, stdout, stderr, tc.code, tc.want)
		}
		if strings.Contains(stdout+stderr, "Qw7p") {
			t.Errorf("%s: a secret was printed", tc.name)
		}
		if n := len(box.TokenRequests()); n != tokens {
			t.Errorf("%s: %d token requests for a refused command", tc.name, n-tokens)
		}
	}
}

func TestCLITokenPrintsOneTokenForTheAppOrAUser(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	for _, args := range [][]string{{"token"}, {"token", "--as-user", "2001"}, {"token", "--as-user=2001"}} {
		code, stdout, stderr := run(t, ccgEnv(box, clientSecret), args...)
		if code != 0 || !regexp.MustCompile(`^\S+\n$`).MatchString(stdout) {
			t.Fatalf("%v: %d, %d lines on stdout, stderr %q", args, code, strings.Count(stdout, "\n"), stderr)
		}
		tok := strings.TrimSpace(stdout)
		if strings.Contains(stderr, tok) {
			t.Errorf("%v: the token is also on stderr", args)
		}
	}
	if n := box.CountTokenRequestsFor("user", "2001"); n != 2 {
		t.Errorf("--as-user 2001 made %d user token requests, want 2", n)
	}
	if n := box.CountTokenRequestsFor("enterprise", enterpriseID); n != 1 {
		t.Errorf("token made %d enterprise token requests, want 1", n)
	}

	code, stdout, _ := run(t, []string{"BOXPROXY_DEVELOPER_TOKEN=cli-dev-token-Qw7p"}, "token")
	if code != 0 || stdout != "cli-dev-token-Qw7p\n" {
		t.Errorf("token with a developer token: %d %q, want the developer token", code, stdout)
	}
}

func TestCLICheckSaysOKOrExitsNonZeroWithTheReason(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	code, stdout, stderr := run(t, ccgEnv(box, clientSecret), "check")
	if code != 0 || !regexp.MustCompile(`^ok: ccg method \(client ID with BOXPROXY_ENTERPRISE_ID and no key\), token for \S*`+enterpriseID+`\S* obtained, expires in \S+\n$`).MatchString(stdout) {
		t.Errorf("check: %d %q %q", code, stdout, stderr)
	}
	box.SetTokenFault(fakebox.Fault503)
	code, stdout, stderr = run(t, ccgEnv(box, clientSecret), "check")
	if lines := humanLines(stderr); code != 1 || stdout != "" || len(lines) != 1 || !strings.HasPrefix(lines[0], "boxproxy check: ") {
		t.Errorf("check while the token endpoint answers 503: %d %q %q; want 1 and one line", code, stdout, stderr)
	}
	box.SetTokenFault(fakebox.FaultNone)
	wrong := "cli-wrong-secret-Zx3"
	code, stdout, stderr = run(t, ccgEnv(box, wrong), "check")
	if lines := humanLines(stderr); code != 1 || stdout != "" || len(lines) != 1 || strings.Contains(stderr, wrong) {
		t.Errorf("check with a wrong secret: %d %q %q; want 1 and one line without the secret", code, stdout, stderr)
	}
}

func TestCLIHelpOfEveryCommandPrintsUsageAndRunsNothing(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	env := append(ccgEnv(box, clientSecret), "BOXPROXY_LISTEN=127.0.0.1:1") // serving would fail: port 1 is privileged
	for _, cmd := range []string{"", "serve", "token", "check", "login", "logout", "demo", "version", "help"} {
		for _, h := range []string{"--help", "-h"} {
			args := []string{h}
			if cmd != "" {
				args = []string{cmd, h}
			}
			code, stdout, stderr := run(t, env, args...)
			if code != 0 || stderr != "" || !strings.Contains(stdout, "Usage:") {
				t.Errorf("%v: %d, stderr %q, stdout %.60q; want 0 and usage", args, code, stderr, stdout)
			}
		}
	}
	if n := len(box.TokenRequests()); n != 0 {
		t.Errorf("--help made %d token requests", n)
	}
}

func TestCLIUnknownVariableFailsCheckAndIsAPlainWarningForToken(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	env := append(ccgEnv(box, clientSecret), "BOXPROXY_TOKEN_CACHE=5")
	code, stdout, stderr := run(t, env, "check")
	if code != 1 || stdout != "" || stderr != "boxproxy check: BOXPROXY_TOKEN_CACHE: unknown variable; did you mean BOXPROXY_TOKEN_CACHE_SIZE?\n" {
		t.Errorf("check: %d %q %q", code, stdout, stderr)
	}
	code, stdout, stderr = run(t, env, "token")
	if code != 0 || !regexp.MustCompile(`^\S+\n$`).MatchString(stdout) ||
		stderr != "boxproxy token: warning: BOXPROXY_TOKEN_CACHE: unknown variable; did you mean BOXPROXY_TOKEN_CACHE_SIZE? (ignored)\n" {
		t.Errorf("token: %d %q %q", code, stdout, stderr)
	}
}

func TestCLIFlagWinsOverItsVariableAndItsErrorsNameTheFlag(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	// --auth oauth over a ccg environment: the enterprise ID no longer fits.
	code, _, stderr := run(t, append(ccgEnv(box, clientSecret), "BOXPROXY_AUTH=ccg"), "check", "--auth", "oauth")
	if code != 1 || !strings.Contains(stderr, "BOXPROXY_ENTERPRISE_ID: set, but the oauth method does not use it") {
		t.Errorf("check --auth oauth: %d %q", code, stderr)
	}
	code, _, stderr = run(t, ccgEnv(box, clientSecret), "check", "--auth=basic")
	if code != 1 || !strings.Contains(stderr, "--auth (BOXPROXY_AUTH): unknown method") {
		t.Errorf("check --auth=basic: %d %q", code, stderr)
	}
	if n := len(box.TokenRequests()); n != 0 {
		t.Errorf("%d token requests for refused configurations", n)
	}
}

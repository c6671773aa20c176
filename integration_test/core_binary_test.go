package integration_test

// Issue 2 through the real binary, memory, and logs: start-up line, access
// lines, bad configuration, a 200 MiB upload under 100 MiB of resident memory,
// and no secret anywhere.

import (
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/boxproxy/boxproxy/fakebox"
)

func TestBinaryServesAsTheServiceAccountAndLogsStartupAndOneAccessLinePerRequest(t *testing.T) {
	t.Parallel()
	for _, method := range []string{"ccg", "jwt"} {
		t.Run(method, func(t *testing.T) {
			t.Parallel()
			box := startBox(t)
			env := ccgEnv(box)
			var app *jwtApp
			if method == "jwt" {
				app = newJWTApp(t, box)
				env = append(boxEnv(box), app.ConfigEnv()...)
			}
			bp := startBinary(t, box, env...)
			if app != nil {
				bp.AddSecret(app.Secrets()...)
			}

			su := bp.Startup
			if su["auth"] != method || !strings.Contains(fmt.Sprint(su["subject"]), testEnterpriseID) ||
				su["api"] != box.APIURL() || su["upload"] != box.UploadURL() {
				t.Errorf("start-up line %v, want auth %s, subject with %s, api %s, upload %s", su, method, testEnterpriseID, box.APIURL(), box.UploadURL())
			}

			get := func(path string, hdr ...string) (int, []byte) {
				req, _ := http.NewRequest(http.MethodGet, bp.URL+path, nil)
				for i := 0; i+1 < len(hdr); i += 2 {
					req.Header.Set(hdr[i], hdr[i+1])
				}
				resp, err := noRedirectClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, body
			}
			if status, body := get("/2.0/users/me"); status != http.StatusOK || jsonBody(t, body)["id"] != testServiceAccountID {
				t.Fatalf("GET /2.0/users/me = %d %s, want the Service Account", status, body)
			}
			if status, body := get("/2.0/users/me", "As-User", userAlice); status != http.StatusOK || jsonBody(t, body)["id"] != userAlice {
				t.Fatalf("GET /2.0/users/me As-User = %d %s", status, body)
			}
			if status, _ := get("/nowhere"); status != http.StatusNotFound {
				t.Fatalf("GET /nowhere = %d", status)
			}
			// What curl sends to localhost:8080.
			_, port, _ := strings.Cut(bp.Addr, ":")
			status, body := rawHTTP(t, bp.Addr, "GET /2.0/users/me HTTP/1.1\r\nHost: localhost:"+port+
				"\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\nConnection: close\r\n\r\n")
			if status != http.StatusOK || jsonBody(t, []byte(body))["id"] != testServiceAccountID {
				t.Fatalf("curl-like GET with Host localhost = %d %s", status, body)
			}

			var lines []map[string]any
			waitUntil(t, 5*time.Second, func() bool { lines = bp.AccessLines(t); return len(lines) >= 4 }, "four access lines are logged")
			if len(lines) != 4 {
				t.Fatalf("%d access lines for 4 requests: %v", len(lines), lines)
			}
			checkAccessLine(t, lines[0], "GET", "/2.0/users/me", 200, testEnterpriseID, 1)
			checkAccessLine(t, lines[1], "GET", "/2.0/users/me", 200, userAlice, 1)
			checkAccessLine(t, lines[2], "GET", "/nowhere", 404, "", 0)
			checkAccessLine(t, lines[3], "GET", "/2.0/users/me", 200, testEnterpriseID, 1)
		})
	}
}

// checkAccessLine checks one access-log line; subject "" means a request that
// was not proxied (no subject or attempts needed).
func checkAccessLine(t *testing.T, l map[string]any, method, path string, status int, subject string, attempts int) {
	t.Helper()
	if l["method"] != method || l["path"] != path || l["status"] != float64(status) {
		t.Errorf("access line %v, want method %s path %s status %d", l, method, path, status)
	}
	if d, ok := l["duration_ms"].(float64); !ok || d < 0 {
		t.Errorf("access line %v has no duration_ms", l)
	}
	if subject == "" {
		return
	}
	if !strings.Contains(fmt.Sprint(l["subject"]), subject) || l["attempts"] != float64(attempts) {
		t.Errorf("access line %v, want subject %s and attempts %d", l, subject, attempts)
	}
}

func TestInProcessAccessLogHasOneLinePerRequestWithSubjectAndAttempts(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	app := newJWTApp(t, box)
	p := startProxy(t, box, append(boxEnv(box), app.ConfigEnv()...)...)
	p.AddSecret(app.Secrets()...)

	p.Get(t, "/2.0/users/me")
	p.Get(t, "/2.0/users/me", "As-User", userCarol)
	box.Inject("/2.0/folders/0", 1, fakebox.Unauthorized())
	p.Get(t, "/2.0/folders/0")
	p.Get(t, "/2.0/users/me", "As-User", "nope")
	p.Get(t, "/elsewhere")
	p.Get(t, "/healthz") // probes are not logged

	lines := p.AccessLines(t)
	if len(lines) != 5 {
		t.Fatalf("%d access lines for 5 requests:\n%s", len(lines), p.Logs())
	}
	checkAccessLine(t, lines[0], "GET", "/2.0/users/me", 200, testEnterpriseID, 1)
	checkAccessLine(t, lines[1], "GET", "/2.0/users/me", 200, userCarol, 1)
	checkAccessLine(t, lines[2], "GET", "/2.0/folders/0", 200, testEnterpriseID, 2)
	checkAccessLine(t, lines[3], "GET", "/2.0/users/me", 400, "", 0)
	checkAccessLine(t, lines[4], "GET", "/elsewhere", 404, "", 0)
}

func TestBadConfigurationStopsTheBinaryWithOneLineSayingWhatToFix(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	app := newJWTApp(t, box)
	base := boxEnv(box)
	with := func(kv ...string) []string { return append(append([]string(nil), base...), kv...) }
	cases := []struct {
		name string
		env  []string
		want string // the line must name this
	}{
		{"no credentials", with(), "BOXPROXY_CLIENT_ID"},
		{"ccg without subject", with("BOXPROXY_AUTH=ccg", "BOXPROXY_CLIENT_ID=x", "BOXPROXY_CLIENT_SECRET="+testClientSecret), "BOXPROXY_ENTERPRISE_ID"},
		{"ccg without secret", with("BOXPROXY_AUTH=ccg", "BOXPROXY_CLIENT_ID=x", "BOXPROXY_ENTERPRISE_ID=1"), "BOXPROXY_CLIENT_SECRET"},
		{"bad As-User mode", append(ccgEnv(box), "BOXPROXY_AS_USER=sometimes"), "BOXPROXY_AS_USER"},
		{"bad allowed user", append(ccgEnv(box), "BOXPROXY_ALLOWED_USERS=2001,bob"), "BOXPROXY_ALLOWED_USERS"},
		{"non-loopback listen without key", append(ccgEnv(box), "BOXPROXY_LISTEN=0.0.0.0:0"), "BOXPROXY_INBOUND_KEY"},
		{"contradictory", with("BOXPROXY_DEVELOPER_TOKEN=devtok-"+testClientSecret, "BOXPROXY_CLIENT_SECRET="+testClientSecret), "BOXPROXY_CLIENT_SECRET"},
		{"bad retry body limit", append(ccgEnv(box), "BOXPROXY_RETRY_BODY_LIMIT=lots"), "BOXPROXY_RETRY_BODY_LIMIT"},
		{"bad API URL", append(ccgEnv(box), "BOXPROXY_API_URL=ftp://example.com"), "BOXPROXY_API_URL"},
		{"missing key file", with("BOXPROXY_JWT_PRIVATE_KEY=/nonexistent/key.pem", "BOXPROXY_JWT_KEY_ID=k",
			"BOXPROXY_CLIENT_ID=x", "BOXPROXY_CLIENT_SECRET="+testClientSecret, "BOXPROXY_ENTERPRISE_ID=1"), "BOXPROXY_JWT_PRIVATE_KEY"},
		{"encrypted key without passphrase", with("BOXPROXY_JWT_PRIVATE_KEY="+writeTemp(t, app.pems[0]), "BOXPROXY_JWT_KEY_ID=k",
			"BOXPROXY_CLIENT_ID=x", "BOXPROXY_CLIENT_SECRET="+testClientSecret, "BOXPROXY_ENTERPRISE_ID=1"), "passphrase"},
		{"wrong passphrase", append(with(app.ConfigEnv()...), "BOXPROXY_JWT_PASSPHRASE=wrong-"+app.Passphrase), "passphrase"},
	}
	secrets := append(app.Secrets(), testClientSecret, "wrong-"+app.Passphrase)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := tc.env
			if _, ok := envValue(env, "BOXPROXY_LISTEN"); !ok {
				env = append(env, "BOXPROXY_LISTEN=127.0.0.1:0")
			}
			stdout, stderr, code := runBinary(t, env)
			if code == 0 || code == -1 {
				t.Fatalf("exit code %d, want a non-zero exit at start; stderr %q", code, stderr)
			}
			lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
			if len(lines) != 1 || strings.TrimSpace(lines[0]) == "" {
				t.Errorf("stderr has %d lines, want one: %q", len(lines), stderr)
			}
			if !strings.Contains(stderr, tc.want) {
				t.Errorf("stderr %q does not name %s", stderr, tc.want)
			}
			assertNoSecrets(t, "output", stdout+stderr, secrets)
		})
	}
}

func writeTemp(t *testing.T, data []byte) string {
	t.Helper()
	dir := t.TempDir()
	path := dir + "/key.pem"
	if err := writeFile(path, data); err != nil {
		t.Fatal(err)
	}
	return path
}

// A 200 MiB upload streams through the real binary: the proxy's peak resident
// memory stays far below the body's size.
func TestBinaryStreams200MiBUploadWithPeakRSSUnder100MiB(t *testing.T) {
	t.Parallel()
	cpuHeavy(t)
	const size = 200 << 20
	box := startBox(t)
	bp := startBinary(t, box, ccgEnv(box)...)

	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	h := sha1.New()
	go func() {
		err := mw.WriteField("attributes", `{"name":"big-200MiB.bin","parent":{"id":"0"}}`)
		if err == nil {
			var fw io.Writer
			if fw, err = mw.CreateFormFile("file", "big-200MiB.bin"); err == nil {
				_, err = io.Copy(fw, io.TeeReader(fakebox.PatternReader(size), h))
			}
		}
		if err == nil {
			err = mw.Close()
		}
		pw.CloseWithError(err)
	}()
	req, err := http.NewRequest(http.MethodPost, bp.URL+"/api/2.0/files/content", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	start := time.Now()
	resp, err := noRedirectClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	elapsed := time.Since(start)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /api/2.0/files/content (200 MiB) = %d %s", resp.StatusCode, body)
	}
	var files struct {
		Entries []struct {
			SHA1 string `json:"sha1"`
			Size int64  `json:"size"`
		} `json:"entries"`
	}
	want := hex.EncodeToString(h.Sum(nil))
	if err := json.Unmarshal(body, &files); err != nil || len(files.Entries) != 1 ||
		files.Entries[0].SHA1 != want || files.Entries[0].Size != size {
		t.Fatalf("upload answer %s, want sha1 %s and size %d", body, want, size)
	}
	peak := vmHWM(t, bp.Cmd.Process.Pid)
	t.Logf("200 MiB upload through the binary in %s; proxy peak RSS (VmHWM) %.1f MiB", elapsed.Round(time.Millisecond), float64(peak)/(1<<20))
	if peak >= 100<<20 {
		t.Errorf("the proxy's peak RSS was %.1f MiB during a 200 MiB upload, want under 100 MiB", float64(peak)/(1<<20))
	}
}

// The binary paces its garbage collector at GOGC=150 unless the operator set
// GOGC (main.go, README "Operations"); an empty GOGC (a templated manifest's
// "") counts as unset. /metrics shows the pacing the Go runtime uses.
func TestBinaryPacesItsCollectorAt150UnlessGOGCIsSet(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	const noLimit = float64(math.MaxInt64) // what Go reports without GOMEMLIMIT
	for _, c := range []struct {
		env       []string
		want      float64
		wantLimit float64
	}{
		{nil, 150, noLimit},
		{[]string{"GOGC="}, 150, noLimit},
		{[]string{"GOGC=80"}, 80, noLimit},
		{[]string{"GOGC=100"}, 100, noLimit},
		{[]string{"GOMEMLIMIT=50MiB"}, 150, 50 << 20},
	} {
		bp := startBinary(t, box, append(ccgEnv(box), c.env...)...)
		m := opsScrape(t, bp.URL)
		if !m.has("go_gc_gogc_percent") || !m.has("go_gc_gomemlimit_bytes") {
			t.Fatalf("/metrics has no go_gc_gogc_percent or go_gc_gomemlimit_bytes")
		}
		if got := m.get("go_gc_gogc_percent"); got != c.want {
			t.Errorf("environment %q: go_gc_gogc_percent %v, want %v", c.env, got, c.want)
		}
		if got := m.get("go_gc_gomemlimit_bytes"); got != c.wantLimit {
			t.Errorf("environment %q: go_gc_gomemlimit_bytes %v, want %v", c.env, got, c.wantLimit)
		}
	}
}

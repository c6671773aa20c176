package integration_test

// Operations (issue 4): probes, metrics, shutdown, inbound protection,
// _FILE secrets, the commands and request IDs, each through the public
// interface: HTTP against the in-process server or the real binary.
//
// Decision on shutdown: SIGTERM always ends the process with exit code 0,
// also when BOXPROXY_SHUTDOWN_TIMEOUT cut requests that were still running
// (that case is logged as a warning). A sidecar told to stop has done what it
// was told; Kubernetes would otherwise report a failed container for every
// rollout (cloud-sql-proxy's --exit-zero-on-sigterm is the same choice).

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/boxproxy/boxproxy/fakebox"
)

// ---------------------------------------------------------------- helpers

// opsMetrics is one scrape of /metrics: "name{k="v",...}" (labels sorted) → value.
type opsMetrics map[string]float64

var opsSampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$`)
var opsLabelPair = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)

// opsScrape GETs url+"/metrics" (with the extra headers) and parses the text format.
func opsScrape(t testing.TB, url string, hdr ...string) opsMetrics {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := noRedirectClient.Do(req)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %q", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("/metrics Content-Type %q, want the Prometheus text format (text/plain; version=0.0.4)", ct)
	}
	return opsParseMetrics(t, string(body))
}

func opsParseMetrics(t testing.TB, text string) opsMetrics {
	t.Helper()
	m := opsMetrics{}
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		g := opsSampleLine.FindStringSubmatch(line)
		if g == nil {
			t.Errorf("/metrics line not in the text format: %q", line)
			continue
		}
		v, err := strconv.ParseFloat(g[3], 64)
		if err != nil {
			t.Errorf("/metrics value of %q: %v", line, err)
			continue
		}
		var kv []string
		for _, p := range opsLabelPair.FindAllStringSubmatch(g[2], -1) {
			kv = append(kv, p[1], p[2])
		}
		m[opsMetricKey(g[1], kv...)] = v
	}
	return m
}

func opsMetricKey(name string, kv ...string) string {
	var pairs []string
	for i := 0; i+1 < len(kv); i += 2 {
		pairs = append(pairs, kv[i]+`="`+kv[i+1]+`"`)
	}
	sort.Strings(pairs)
	return name + "{" + strings.Join(pairs, ",") + "}"
}

// get is the sample's value, 0 when absent (a counter that never moved).
func (m opsMetrics) get(name string, kv ...string) float64 { return m[opsMetricKey(name, kv...)] }

func (m opsMetrics) has(name string, kv ...string) bool {
	_, ok := m[opsMetricKey(name, kv...)]
	return ok
}

// opsScrapeUntil scrapes until cond holds (the server counts a request just
// after its response is sent) and returns that scrape, or the last one after 3s.
func opsScrapeUntil(t testing.TB, url string, cond func(opsMetrics) bool) opsMetrics {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		m := opsScrape(t, url)
		if cond(m) || time.Now().After(deadline) {
			return m
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// opsWaitReady polls /readyz until it answers 200.
func opsWaitReady(t testing.TB, url string) {
	t.Helper()
	waitUntil(t, 15*time.Second, func() bool {
		resp, err := http.Get(url + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, "/readyz answers 200")
}

// opsAccessLine waits for the access-log line whose request_id is id.
func opsAccessLine(t testing.TB, lines func() []map[string]any, id string) map[string]any {
	t.Helper()
	var found map[string]any
	waitUntil(t, 5*time.Second, func() bool {
		for _, l := range lines() {
			if l["request_id"] == id {
				found = l
				return true
			}
		}
		return false
	}, "the access log has a line with request_id "+id)
	return found
}

// opsWaitExit waits for the binary to exit, failing the test after within.
func opsWaitExit(t testing.TB, b *binaryProxy, within time.Duration) {
	t.Helper()
	select {
	case <-b.exited:
	case <-time.After(within):
		t.Fatalf("boxproxy still running %s later; stderr:\n%s", within, b.Stderr)
	}
}

// opsHumanLines returns the lines of s that are not JSON log lines (error messages for people).
func opsHumanLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "{") {
			out = append(out, l)
		}
	}
	return out
}

// opsEnvWithout drops the named variables from env.
func opsEnvWithout(env []string, names ...string) []string {
	var out []string
next:
	for _, kv := range env {
		for _, n := range names {
			if strings.HasPrefix(kv, n+"=") {
				continue next
			}
		}
		out = append(out, kv)
	}
	return out
}

// opsWriteFile writes data into a new file of t.TempDir().
func opsWriteFile(t testing.TB, name, data string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// ---------------------------------------------------------------- 1. probes

func TestOpsHealthzAndReadyzAnswer200WithoutForwardingAnythingToBox(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	p := startProxy(t, box, ccgEnv(box)...)
	opsWaitReady(t, p.URL)
	before := len(box.Requests())

	resp, body := p.Get(t, "/healthz")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz: %d %q", resp.StatusCode, body)
	}
	resp, body = p.Get(t, "/readyz")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/readyz: %d %q", resp.StatusCode, body)
	}
	m := jsonBody(t, body)
	if m["status"] != "ready" || m["auth"] != "ccg" {
		t.Errorf("/readyz body %q, want status ready and auth ccg", body)
	}
	if n := len(box.Requests()); n != before {
		t.Errorf("the probes sent %d requests to Box's API, want none", n-before)
	}
	for _, l := range p.AccessLines(t) {
		if l["route"] == "healthz" || l["route"] == "readyz" {
			t.Errorf("probes are written to the access log (every 10s per kubelet): %v", l)
		}
	}
}

func TestOpsReadyzIs503WithAJSONReasonWhileTheTokenEndpointFailsAndRecoversAfter(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	box.SetTokenFault(fakebox.Fault500)
	p := startProxy(t, box, ccgEnv(box)...)

	resp, body := p.Get(t, "/healthz")
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz while the token endpoint fails: %d %q, want 200 (the process serves)", resp.StatusCode, body)
	}
	resp, body = p.Get(t, "/readyz")
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz while the token endpoint answers 500: %d %q, want 503", resp.StatusCode, body)
	}
	e := decodeBoxError(t, resp, body)
	if !strings.Contains(strings.ToLower(e.Message), "token") {
		t.Errorf("/readyz reason %q does not say that the token endpoint is the problem", e.Message)
	}
	if n := len(box.Requests()); n != 0 {
		t.Errorf("the probes sent %d requests to Box's API, want none", n)
	}

	box.SetTokenFault(fakebox.FaultNone)
	opsWaitReady(t, p.URL)
}

func TestOpsReadyzIs503WhenTheClientSecretIsWrong(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	wrong := "wrong-secret-" + randomHex(t, 6)
	p := startProxy(t, box, append(ccgEnv(box), "BOXPROXY_CLIENT_SECRET="+wrong)...)
	resp, body := p.Get(t, "/readyz")
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz with a wrong client secret: %d %q, want 503", resp.StatusCode, body)
	}
	e := decodeBoxError(t, resp, body)
	if e.Code == "" || e.Message == "" {
		t.Errorf("/readyz gives no reason: %q", body)
	}
	if resp, _ := p.Get(t, "/healthz"); resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz with a wrong client secret: %d, want 200", resp.StatusCode)
	}
	if n := len(box.Requests()); n != 0 {
		t.Errorf("the probes sent %d requests to Box's API, want none", n)
	}
}

// ---------------------------------------------------------------- 2. metrics

func TestOpsMetricsCountKnownTrafficRetriesTokensCacheAndLatency(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	p := startProxy(t, box, ccgEnv(box)...)
	opsWaitReady(t, p.URL)
	idle := func(m opsMetrics) bool { return m.get("boxproxy_requests_in_flight") == 1 }
	before := opsScrapeUntil(t, p.URL, idle)
	if v := before.get("boxproxy_requests_in_flight"); v != 1 {
		t.Errorf("boxproxy_requests_in_flight while idle = %v, want 1 (the scrape itself)", v)
	}
	tokensBefore := box.CountTokenRequests(true)

	for i := 0; i < 3; i++ {
		if resp, body := p.Get(t, "/2.0/users/me"); resp.StatusCode != 200 {
			t.Fatalf("GET /2.0/users/me: %d %q", resp.StatusCode, body)
		}
	}
	for i := 0; i < 2; i++ {
		if resp, body := p.Get(t, "/2.0/users/me", "As-User", "not-a-user-id"); resp.StatusCode != 400 {
			t.Fatalf("bad As-User: %d %q, want 400", resp.StatusCode, body)
		}
	}
	box.RevokeAll() // the next request gets a 401, a new token, and is sent again
	if resp, body := p.Get(t, "/2.0/users/me"); resp.StatusCode != 200 {
		t.Fatalf("GET after RevokeAll: %d %q", resp.StatusCode, body)
	}

	// One slow request in flight while scraping.
	slow := make(chan int, 1)
	go func() {
		resp, err := http.Get(p.URL + "/2.0/test/slow?ms=700")
		if err != nil {
			slow <- 0
			return
		}
		resp.Body.Close()
		slow <- resp.StatusCode
	}()
	waitUntil(t, 5*time.Second, func() bool {
		for _, r := range box.Requests() {
			if r.Path == "/2.0/test/slow" {
				return true
			}
		}
		return false
	}, "the slow request reaches Box")
	during := opsScrapeUntil(t, p.URL, func(m opsMetrics) bool { return m.get("boxproxy_requests_in_flight") == 2 })
	if v := during.get("boxproxy_requests_in_flight"); v != 2 {
		t.Errorf("boxproxy_requests_in_flight during one slow request = %v, want 2 (it and the scrape)", v)
	}
	if code := <-slow; code != 200 {
		t.Fatalf("slow request: %d", code)
	}

	after := opsScrapeUntil(t, p.URL, func(m opsMetrics) bool {
		return idle(m) && m.get("boxproxy_requests_total", "route", "api", "code", "200")-before.get("boxproxy_requests_total", "route", "api", "code", "200") >= 5
	})
	delta := func(name string, kv ...string) float64 { return after.get(name, kv...) - before.get(name, kv...) }
	tokens := box.CountTokenRequests(true)
	checks := []struct {
		what string
		got  float64
		want float64
	}{
		{`boxproxy_requests_total{route="api",code="200"} increase`, delta("boxproxy_requests_total", "route", "api", "code", "200"), 5},
		{`boxproxy_requests_total{route="api",code="400"} increase`, delta("boxproxy_requests_total", "route", "api", "code", "400"), 2},
		{`boxproxy_upstream_retries_total{reason="401"} increase`, delta("boxproxy_upstream_retries_total", "reason", "401"), 1},
		{`boxproxy_upstream_request_duration_seconds_count{route="api"} increase (attempts)`, delta("boxproxy_upstream_request_duration_seconds_count", "route", "api"), 6},
		{`boxproxy_token_requests_total{method="ccg",outcome="ok"} (= the stand-in's count)`, after.get("boxproxy_token_requests_total", "method", "ccg", "outcome", "ok"), float64(tokens)},
		{`boxproxy_token_requests_total{method="ccg",outcome="ok"} increase`, delta("boxproxy_token_requests_total", "method", "ccg", "outcome", "ok"), float64(tokens - tokensBefore)},
		{`boxproxy_token_request_duration_seconds_count{method="ccg"} increase`, delta("boxproxy_token_request_duration_seconds_count", "method", "ccg"), float64(tokens - tokensBefore)},
		{`boxproxy_token_cache_hits_total increase`, delta("boxproxy_token_cache_hits_total"), 5},
		{`boxproxy_token_cache_misses_total increase`, delta("boxproxy_token_cache_misses_total"), 1},
		{`boxproxy_requests_in_flight after the traffic`, after.get("boxproxy_requests_in_flight"), 1},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
		}
	}
	if tokens-tokensBefore != 1 {
		t.Errorf("the 401 caused %d token requests, want 1", tokens-tokensBefore)
	}
	if v := after.get("boxproxy_requests_total", "route", "readyz", "code", "200"); v < 1 {
		t.Errorf(`boxproxy_requests_total{route="readyz",code="200"} = %v, want >= 1`, v)
	}
	if exp := after.get("boxproxy_default_token_expiry_seconds"); exp <= 0 || exp > 3600 {
		t.Errorf("boxproxy_default_token_expiry_seconds = %v, want in (0, 3600]", exp)
	}
	if b := after.get("boxproxy_upstream_request_duration_seconds_bucket", "route", "api", "le", "+Inf"); b != after.get("boxproxy_upstream_request_duration_seconds_count", "route", "api") {
		t.Errorf("histogram +Inf bucket %v != count", b)
	}
	if s := delta("boxproxy_upstream_request_duration_seconds_sum", "route", "api"); s < 0.7 {
		t.Errorf("upstream latency sum grew by %vs, want >= 0.7s (one 700ms request)", s)
	}
	for _, name := range []string{"boxproxy_token_cache_evictions_total", "go_goroutines", "process_resident_memory_bytes"} {
		if !after.has(name) {
			t.Errorf("/metrics has no %s", name)
		}
	}
}

func TestOpsMetricsCountTokenCacheEvictions(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	p := startProxy(t, box, append(ccgEnv(box), "BOXPROXY_TOKEN_CACHE_SIZE=1")...)
	opsWaitReady(t, p.URL)
	before := opsScrape(t, p.URL).get("boxproxy_token_cache_evictions_total")
	for _, u := range []string{userAlice, userCarol} {
		if resp, body := p.Get(t, "/2.0/users/me", "As-User", u); resp.StatusCode != 200 {
			t.Fatalf("As-User %s: %d %q", u, resp.StatusCode, body)
		}
	}
	if d := opsScrape(t, p.URL).get("boxproxy_token_cache_evictions_total") - before; d != 2 {
		t.Errorf("with room for one subject, two more subjects evicted %v tokens, want 2", d)
	}
}

// ---------------------------------------------------------------- 3. shutdown

func TestOpsSIGTERMLetsASlowRequestFinishRefusesNewConnectionsAndExits0(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	b := startBinary(t, box, ccgEnv(box)...)

	type result struct {
		status int
		body   string
		err    error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := http.Get(b.URL + "/2.0/test/slow?ms=1500")
		if err != nil {
			done <- result{err: err}
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		done <- result{resp.StatusCode, string(body), err}
	}()
	opsWaitForSlowRequestAtBox(t, box)

	opsSignalAndWaitUntilRefused(t, b, syscall.SIGTERM, "SIGTERM")
	select {
	case r := <-done:
		t.Fatalf("the slow request ended (%d, %v) before new connections were refused; the test proves nothing", r.status, r.err)
	default:
	}

	select {
	case r := <-done:
		if r.err != nil || r.status != http.StatusOK || !strings.Contains(r.body, `"slept_ms":1500`) {
			t.Fatalf("the in-flight request was not allowed to finish: %d %q %v", r.status, r.body, r.err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the slow request did not finish")
	}
	opsWaitExit(t, b, 10*time.Second)
	if b.waitErr != nil {
		t.Fatalf("boxproxy exited with %v after SIGTERM, want 0\nstderr:\n%s", b.waitErr, b.Stderr)
	}
	if !strings.Contains(b.Stderr.String(), "draining") {
		t.Errorf("no log line says that the proxy drains after the signal:\n%s", b.Stderr)
	}
}

func TestOpsSIGTERMCutsRequestsLongerThanTheShutdownTimeoutAndStillExits0(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	b := startBinary(t, box, append(ccgEnv(box), "BOXPROXY_SHUTDOWN_TIMEOUT=200ms")...)

	done := make(chan error, 1)
	go func() {
		resp, err := http.Get(b.URL + "/2.0/test/slow?ms=5000")
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode == 200 {
				err = errors.New("finished with 200")
			}
		}
		done <- err
	}()
	opsWaitForSlowRequestAtBox(t, box)

	sent := time.Now()
	if err := b.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	opsWaitExit(t, b, 4*time.Second)
	// ~1s is the promise; allow slack for -race on a loaded machine.
	if took := time.Since(sent); took > 2500*time.Millisecond {
		t.Errorf("boxproxy took %s to exit with BOXPROXY_SHUTDOWN_TIMEOUT=200ms, want about 1s at most", took)
	}
	if b.waitErr != nil {
		t.Errorf("boxproxy exited with %v, want 0 (SIGTERM is a normal stop even when requests had to be cut)\nstderr:\n%s", b.waitErr, b.Stderr)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Error("the 5s request seems to have succeeded although the shutdown timeout was 200ms")
		}
	case <-time.After(5 * time.Second):
		t.Error("the client of the cut request was left hanging")
	}
	if !strings.Contains(b.Stderr.String(), "did not finish in time") {
		t.Errorf("no warning says that requests were cut:\n%s", b.Stderr)
	}
}

func TestOpsPostQuitquitquitEndsTheProcessWithExit0AndGetIs405(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	b := startBinary(t, box, append(ccgEnv(box), "BOXPROXY_QUIT_ENDPOINT=true")...)

	resp, err := http.Get(b.URL + "/quitquitquit")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "POST" {
		t.Fatalf("GET /quitquitquit: %d Allow=%q %q, want 405 with Allow: POST", resp.StatusCode, resp.Header.Get("Allow"), body)
	}
	decodeBoxError(t, resp, body)
	select {
	case <-b.exited:
		t.Fatal("GET /quitquitquit ended the process")
	case <-time.After(100 * time.Millisecond):
	}

	resp, err = http.Post(b.URL+"/quitquitquit", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /quitquitquit: %d, want 200", resp.StatusCode)
	}
	opsWaitExit(t, b, 10*time.Second)
	if b.waitErr != nil {
		t.Fatalf("boxproxy exited with %v after /quitquitquit, want 0\nstderr:\n%s", b.waitErr, b.Stderr)
	}
}

func TestOpsQuitquitquitIs404UnlessEnabled(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	p := startProxy(t, box, ccgEnv(box)...)
	resp, body := p.Do(t, p.Request(t, http.MethodPost, "/quitquitquit", nil))
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("POST /quitquitquit without BOXPROXY_QUIT_ENDPOINT: %d %q, want 404", resp.StatusCode, body)
	}
	decodeBoxError(t, resp, body)
	select {
	case <-p.Server.Quit():
		t.Fatal("the disabled /quitquitquit asked the server to stop")
	default:
	}
	if resp, _ := p.Get(t, "/healthz"); resp.StatusCode != 200 {
		t.Errorf("/healthz after POST /quitquitquit: %d, want 200 (still serving)", resp.StatusCode)
	}
}

// ---------------------------------------------------------------- 4. inbound protection

func TestOpsInboundKeyIsRequiredAsProxyAuthorizationAndNeverForwarded(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	key := "ops-inbound-key-" + randomHex(t, 12)
	p := startProxy(t, box, append(ccgEnv(box), "BOXPROXY_INBOUND_KEY="+key)...)
	before := len(box.Requests())

	for _, tc := range []struct{ name, header string }{
		{"no Proxy-Authorization", ""},
		{"wrong key", "Bearer ops-wrong-key-" + randomHex(t, 12)},
		{"key without its last character", "Bearer " + key[:len(key)-1]},
		{"key with one more character", "Bearer " + key + "x"},
		{"Basic scheme", "Basic " + key},
		{"key without scheme", key},
	} {
		var hdr []string
		if tc.header != "" {
			hdr = []string{"Proxy-Authorization", tc.header}
		}
		resp, body := p.Get(t, "/2.0/users/me", hdr...)
		if resp.StatusCode != http.StatusProxyAuthRequired {
			t.Errorf("%s: %d %q, want 407", tc.name, resp.StatusCode, body)
			continue
		}
		decodeBoxError(t, resp, body)
		if pa := resp.Header.Get("Proxy-Authenticate"); !strings.HasPrefix(pa, "Bearer") {
			t.Errorf("%s: 407 with Proxy-Authenticate %q, want a Bearer challenge", tc.name, pa)
		}
	}
	if n := len(box.Requests()); n != before {
		t.Fatalf("%d requests without the right key reached Box", n-before)
	}

	for _, scheme := range []string{"Bearer", "bearer"} {
		resp, body := p.Get(t, "/2.0/users/me", "Proxy-Authorization", scheme+" "+key)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("Proxy-Authorization: %s <key>: %d %q, want 200", scheme, resp.StatusCode, body)
		}
	}
	reqs := box.Requests()
	if len(reqs) != before+2 {
		t.Fatalf("Box saw %d requests, want 2", len(reqs)-before)
	}
	for _, r := range reqs {
		if v, ok := r.Header["Proxy-Authorization"]; ok {
			t.Errorf("Box received Proxy-Authorization %q", redact(strings.Join(v, ","), key))
		}
	}
}

func TestOpsProbesAndMetricsAnswerWithoutTheInboundKey(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	key := "ops-inbound-key-" + randomHex(t, 12)
	p := startProxy(t, box, append(ccgEnv(box), "BOXPROXY_INBOUND_KEY="+key)...)
	opsWaitReady(t, p.URL) // no key
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if resp, body := p.Get(t, path); resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s without the inbound key (kubelet, Prometheus): %d %q, want 200", path, resp.StatusCode, body)
		}
	}
	if resp, body := p.Get(t, "/2.0/nothing-here-for-you"); resp.StatusCode != http.StatusProxyAuthRequired {
		t.Errorf("an unknown path without the key: %d %q, want 407 (routes are no business of strangers)", resp.StatusCode, body)
	}
}

func TestOpsNonLoopbackListenWithoutInboundKeyRefusesToStartWithOneLine(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	for _, listen := range []string{"0.0.0.0:0", ":0"} {
		env := append(ccgEnv(box), "BOXPROXY_LISTEN="+listen)
		stdout, stderr, code := runBinary(t, env)
		if code == 0 || code == -1 {
			t.Fatalf("BOXPROXY_LISTEN=%s without a key: exit %d, want a non-zero exit at start\nstderr:\n%s", listen, code, stderr)
		}
		lines := opsHumanLines(stderr)
		if len(lines) != 1 || !strings.Contains(lines[0], "BOXPROXY_LISTEN") || !strings.Contains(lines[0], "BOXPROXY_INBOUND_KEY") {
			t.Errorf("BOXPROXY_LISTEN=%s: stderr %q, want one line naming BOXPROXY_LISTEN and BOXPROXY_INBOUND_KEY", listen, stderr)
		}
		if strings.Contains(stderr, "boxproxy serving") || stdout != "" {
			t.Errorf("BOXPROXY_LISTEN=%s: output %q %q", listen, stdout, stderr)
		}
	}
}

func TestOpsNonLoopbackListenWithInboundKeyServes(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	key := "ops-inbound-key-" + randomHex(t, 12)
	b := startBinary(t, box, append(ccgEnv(box), "BOXPROXY_LISTEN=0.0.0.0:0", "BOXPROXY_INBOUND_KEY="+key)...)
	_, port, err := net.SplitHostPort(b.Addr)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1:"+port+"/2.0/users/me", nil)
	req.Header.Set("Proxy-Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), testServiceAccountID) {
		t.Fatalf("on 0.0.0.0 with the key: %d %q, want 200", resp.StatusCode, body)
	}
}

func TestOpsForeignHostHeaderIsRefusedWith403AndNothingIsForwarded(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	p := startProxy(t, box, ccgEnv(box)...)
	_, port, _ := net.SplitHostPort(p.Addr)

	before := len(box.Requests())
	for _, host := range []string{"other.example", "other.example:" + port, "127.0.0.1.nip.io:" + port, "localhost.other.example", "10.0.0.7:" + port} {
		req := p.Request(t, http.MethodGet, "/2.0/users/me", nil)
		req.Host = host
		resp, body := p.Do(t, req)
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("Host %s: %d %q, want 403", host, resp.StatusCode, body)
			continue
		}
		decodeBoxError(t, resp, body)
	}
	if n := len(box.Requests()); n != before {
		t.Errorf("%d requests with a foreign Host reached Box", n-before)
	}
	for _, host := range []string{"localhost:" + port, "127.0.0.1:" + port, "[::1]:" + port, "LOCALHOST:" + port} {
		req := p.Request(t, http.MethodGet, "/2.0/users/me", nil)
		req.Host = host
		if resp, body := p.Do(t, req); resp.StatusCode != http.StatusOK {
			t.Errorf("Host %s: %d %q, want 200", host, resp.StatusCode, body)
		}
	}
}

func TestOpsHostOfThePublicURLIsAccepted(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	p := startProxy(t, box, append(ccgEnv(box), "BOXPROXY_PUBLIC_URL=http://boxproxy.svc.example:8080")...)
	for host, want := range map[string]int{"boxproxy.svc.example:8080": 200, "boxproxy.svc.example": 200, "other.svc.example:8080": 403} {
		req := p.Request(t, http.MethodGet, "/2.0/users/me", nil)
		req.Host = host
		if resp, body := p.Do(t, req); resp.StatusCode != want {
			t.Errorf("Host %s with BOXPROXY_PUBLIC_URL=http://boxproxy.svc.example:8080: %d %q, want %d", host, resp.StatusCode, body, want)
		}
	}
}

func TestOpsCrossOriginBrowserRequestIsRefusedAndSameOriginPasses(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	p := startProxy(t, box, ccgEnv(box)...) // BOXPROXY_PUBLIC_URL = p.URL
	_, port, _ := net.SplitHostPort(p.Addr)

	before := len(box.Requests())
	for _, origin := range []string{"https://evil.example", "null", "http://127.0.0.1:1", "https://127.0.0.1:" + port, "http://localhost:" + port} {
		resp, body := p.Get(t, "/2.0/users/me", "Origin", origin)
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("Origin %s: %d %q, want 403", origin, resp.StatusCode, body)
			continue
		}
		decodeBoxError(t, resp, body)
	}
	if n := len(box.Requests()); n != before {
		t.Errorf("%d cross-origin requests reached Box", n-before)
	}
	if resp, body := p.Get(t, "/2.0/users/me", "Origin", p.URL); resp.StatusCode != http.StatusOK {
		t.Errorf("Origin equal to BOXPROXY_PUBLIC_URL (%s): %d %q, want 200", p.URL, resp.StatusCode, body)
	}
}

func TestOpsClientThatStallsInTheHeadersIsDisconnected(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	p := startProxy(t, box, append(ccgEnv(box), "BOXPROXY_HEADER_TIMEOUT=300ms")...)

	for _, partial := range []string{"", "GET /2.0/users/me HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Sl"} {
		conn, err := net.Dial("tcp", p.Addr)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if _, err := io.WriteString(conn, partial); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = io.ReadAll(conn) // returns when the server closes
		took := time.Since(start)
		conn.Close()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("sent %q and stalled: still connected after 5s, want disconnected after BOXPROXY_HEADER_TIMEOUT=300ms", partial)
		} else if took < 250*time.Millisecond {
			t.Errorf("sent %q: disconnected after %s, before the header timeout", partial, took)
		}
	}
	if n := len(box.Requests()); n != 0 {
		t.Errorf("%d requests reached Box", n)
	}
}

func TestOpsHeadersOver64KiBGet431AndAreNotForwarded(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	p := startProxy(t, box, ccgEnv(box)...)
	opsWaitReady(t, p.URL)

	// 16 KiB of headers is fine.
	if resp, body := p.Get(t, "/2.0/users/me", "X-Padding", strings.Repeat("a", 16<<10)); resp.StatusCode != http.StatusOK {
		t.Fatalf("16 KiB header: %d %q, want 200", resp.StatusCode, body)
	}
	before := len(box.Requests())

	conn, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	req := "GET /2.0/users/me HTTP/1.1\r\nHost: " + p.Addr + "\r\n"
	for i := 0; i < 10; i++ {
		req += "X-Padding-" + strconv.Itoa(i) + ": " + strings.Repeat("b", 8<<10) + "\r\n"
	}
	req += "\r\n"
	go func() { _, _ = io.WriteString(conn, req) }() // the server may stop reading early
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("80 KiB of headers: no response: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("80 KiB of headers: %d, want 431", resp.StatusCode)
	}
	if n := len(box.Requests()); n != before {
		t.Errorf("the oversized request reached Box")
	}
}

// ---------------------------------------------------------------- 5. _FILE secrets

func TestOpsSecretsGivenAsFilesWithTrailingNewlineWork(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	key := "ops-inbound-key-" + randomHex(t, 12)
	env := append(opsEnvWithout(ccgEnv(box), "BOXPROXY_CLIENT_SECRET", "BOXPROXY_CLIENT_ID"),
		"BOXPROXY_CLIENT_ID_FILE="+opsWriteFile(t, "client-id", testClientID+"\n"),
		"BOXPROXY_CLIENT_SECRET_FILE="+opsWriteFile(t, "client-secret", testClientSecret+"\n"),
		"BOXPROXY_INBOUND_KEY_FILE="+opsWriteFile(t, "inbound-key", key+"\r\n"))
	p := startProxy(t, box, env...)
	p.AddSecret(key)
	if resp, body := p.Get(t, "/2.0/users/me"); resp.StatusCode != http.StatusProxyAuthRequired {
		t.Errorf("BOXPROXY_INBOUND_KEY_FILE: request without the key: %d %q, want 407", resp.StatusCode, body)
	}
	resp, body := p.Get(t, "/2.0/users/me", "Proxy-Authorization", "Bearer "+key)
	if resp.StatusCode != http.StatusOK || jsonBody(t, body)["id"] != testServiceAccountID {
		t.Fatalf("with BOXPROXY_CLIENT_SECRET_FILE: %d %q, want 200 as the Service Account", resp.StatusCode, body)
	}

	// The same through the binary.
	stdout, stderr, code := runBinary(t, env, "check")
	if code != 0 || !strings.HasPrefix(stdout, "ok:") {
		t.Errorf("boxproxy check with BOXPROXY_CLIENT_SECRET_FILE: exit %d, %q %q", code, stdout, stderr)
	}
	assertNoSecrets(t, "boxproxy check output", stdout+stderr, []string{testClientSecret, key})
}

func TestOpsSecretAndItsFileFormBothSetStopsStartWithOneLine(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	env := append(ccgEnv(box), "BOXPROXY_CLIENT_SECRET_FILE="+opsWriteFile(t, "secret", testClientSecret+"\n"))
	stdout, stderr, code := runBinary(t, env)
	lines := opsHumanLines(stderr)
	if code == 0 || code == -1 || len(lines) != 1 {
		t.Fatalf("BOXPROXY_CLIENT_SECRET and _FILE both set: exit %d, stderr %q; want a non-zero exit with one line", code, stderr)
	}
	if !strings.Contains(lines[0], "BOXPROXY_CLIENT_SECRET") || !strings.Contains(lines[0], "BOXPROXY_CLIENT_SECRET_FILE") {
		t.Errorf("error %q does not name both variables", lines[0])
	}
	assertNoSecrets(t, "start error", stdout+stderr, []string{testClientSecret})
}

func TestOpsUnusableSecretFileStopsStartNamingTheVariableNotTheContents(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	base := opsEnvWithout(ccgEnv(box), "BOXPROXY_CLIENT_SECRET")
	short := "tiny-key-" + randomHex(t, 2) // too short to be accepted as an inbound key
	type tc struct {
		name, variable, content string
		env                     []string
	}
	cases := []tc{
		{"missing file", "BOXPROXY_CLIENT_SECRET_FILE", "", []string{"BOXPROXY_CLIENT_SECRET_FILE=" + filepath.Join(t.TempDir(), "nope")}},
		{"a directory", "BOXPROXY_CLIENT_SECRET_FILE", "", []string{"BOXPROXY_CLIENT_SECRET_FILE=" + t.TempDir()}},
		{"empty file", "BOXPROXY_CLIENT_SECRET_FILE", "", []string{"BOXPROXY_CLIENT_SECRET_FILE=" + opsWriteFile(t, "empty", "\n")}},
		{"rejected value", "BOXPROXY_INBOUND_KEY", short, []string{
			"BOXPROXY_CLIENT_SECRET=" + testClientSecret,
			"BOXPROXY_INBOUND_KEY_FILE=" + opsWriteFile(t, "key", short+"\n")}},
	}
	if os.Geteuid() != 0 { // root reads anything
		p := opsWriteFile(t, "unreadable", testClientSecret+"\n")
		if err := os.Chmod(p, 0); err != nil {
			t.Fatal(err)
		}
		cases = append(cases, tc{"unreadable file", "BOXPROXY_CLIENT_SECRET_FILE", testClientSecret, []string{"BOXPROXY_CLIENT_SECRET_FILE=" + p}})
	}
	for _, c := range cases {
		stdout, stderr, code := runBinary(t, append(append([]string{}, base...), c.env...))
		lines := opsHumanLines(stderr)
		if code == 0 || code == -1 || len(lines) != 1 {
			t.Errorf("%s: exit %d, stderr %q; want a non-zero exit with one line", c.name, code, stderr)
			continue
		}
		if !strings.Contains(lines[0], c.variable) {
			t.Errorf("%s: error %q does not name %s", c.name, lines[0], c.variable)
		}
		if c.content != "" {
			assertNoSecrets(t, c.name+" error", stdout+stderr, []string{c.content})
		}
	}
}

// ---------------------------------------------------------------- 6. commands

func TestOpsTokenCommandPrintsOneTokenThatBoxAccepts(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	check := func(args []string, wantUser string) {
		t.Helper()
		stdout, stderr, code := runBinary(t, ccgEnv(box), args...)
		if code != 0 {
			t.Fatalf("boxproxy %s: exit %d\n%s", strings.Join(args, " "), code, stderr)
		}
		if !regexp.MustCompile(`^\S+\n$`).MatchString(stdout) {
			t.Fatalf("boxproxy %s printed %d bytes in %d lines, want exactly one token line", strings.Join(args, " "), len(stdout), strings.Count(stdout, "\n"))
		}
		tok := strings.TrimSpace(stdout)
		if !isIssued(box, tok) {
			t.Fatalf("boxproxy %s printed something the stand-in never issued", strings.Join(args, " "))
		}
		assertNoSecrets(t, "boxproxy token stderr", stderr, []string{tok, testClientSecret})

		req, _ := http.NewRequest(http.MethodGet, box.APIURL()+"/2.0/users/me", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("Box refused the printed token: %d %q", resp.StatusCode, body)
		}
		if id := jsonBody(t, body)["id"]; id != wantUser {
			t.Errorf("boxproxy %s: the token acts as %v, want %s", strings.Join(args, " "), id, wantUser)
		}
		reqs := box.Requests()
		if last := reqs[len(reqs)-1]; last.UserID != wantUser {
			t.Errorf("the stand-in recorded acting user %q, want %s", last.UserID, wantUser)
		}
	}
	check([]string{"token"}, testServiceAccountID)
	check([]string{"token", "--as-user", userAlice}, userAlice)
	check([]string{"token", "--as-user=" + userCarol}, userCarol)

	for _, args := range [][]string{{"token", "--as-user"}, {"token", "--as-user", "alice"}, {"token", "--bogus"}} {
		stdout, stderr, code := runBinary(t, ccgEnv(box), args...)
		if code == 0 || stdout != "" || len(opsHumanLines(stderr)) != 1 {
			t.Errorf("boxproxy %s: exit %d, stdout %q, stderr %q; want non-zero, nothing on stdout, one line on stderr", strings.Join(args, " "), code, stdout, stderr)
		}
	}
}

func TestOpsCheckCommandSaysOKOrGivesAOneLineReason(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	env := opsEnvWithout(ccgEnv(box), "BOXPROXY_LOG_LEVEL")

	stdout, stderr, code := runBinary(t, env, "check")
	if code != 0 {
		t.Fatalf("boxproxy check: exit %d\n%s", code, stderr)
	}
	if lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "ok:") {
		t.Errorf("boxproxy check printed %q, want one line starting with ok:", stdout)
	}
	assertNoSecrets(t, "boxproxy check output", stdout+stderr, append(box.IssuedTokens(), testClientSecret))

	wrong := "wrong-secret-" + randomHex(t, 6)
	stdout, stderr, code = runBinary(t, append(env, "BOXPROXY_CLIENT_SECRET="+wrong), "check")
	lines := opsHumanLines(stderr)
	if code == 0 || code == -1 || strings.Contains(stdout, "ok:") || len(lines) != 1 {
		t.Fatalf("boxproxy check with a wrong secret: exit %d, stdout %q, stderr %q; want non-zero and one line", code, stdout, stderr)
	}
	if !strings.HasPrefix(lines[0], "boxproxy check: ") || !regexp.MustCompile(`invalid_(client|grant)`).MatchString(lines[0]) {
		t.Errorf("boxproxy check reason %q, want it to start with \"boxproxy check: \" and carry Box's error code", lines[0])
	}
	assertNoSecrets(t, "boxproxy check output", stdout+stderr, []string{wrong, testClientSecret})

	// A configuration error fails before any token request.
	tokens := len(box.TokenRequests())
	_, stderr, code = runBinary(t, append(env, "BOXPROXY_ENTERPRISE_ID=acme"), "check")
	if lines := opsHumanLines(stderr); code == 0 || len(lines) != 1 || !strings.Contains(lines[0], "BOXPROXY_ENTERPRISE_ID") {
		t.Errorf("boxproxy check with BOXPROXY_ENTERPRISE_ID=acme: exit %d, %q", code, stderr)
	}
	if n := len(box.TokenRequests()); n != tokens {
		t.Errorf("boxproxy check asked for a token although the configuration is invalid")
	}
}

// interfaceVariables is every variable of /work/shared/interface.md with its
// default as a fragment of the "(default …)" that --help must show ("" when
// the interface gives none).
var interfaceVariables = []struct{ name, def string }{
	{"BOXPROXY_LISTEN", "127.0.0.1:8080"},
	{"BOXPROXY_AUTH", "inferred"},
	{"BOXPROXY_CLIENT_ID", ""},
	{"BOXPROXY_CLIENT_SECRET", ""},
	{"BOXPROXY_ENTERPRISE_ID", ""},
	{"BOXPROXY_USER_ID", ""},
	{"BOXPROXY_JWT_CONFIG", ""},
	{"BOXPROXY_JWT_KEY_ID", ""},
	{"BOXPROXY_JWT_PRIVATE_KEY", ""},
	{"BOXPROXY_JWT_PASSPHRASE", ""},
	{"BOXPROXY_DEVELOPER_TOKEN", ""},
	{"BOXPROXY_TOKEN_STORE", "boxproxy-tokens.json"},
	{"BOXPROXY_PUBLIC_URL", "http://localhost:"},
	{"BOXPROXY_AS_USER", "token"},
	{"BOXPROXY_ALLOWED_USERS", "all"},
	{"BOXPROXY_TOKEN_CACHE_SIZE", "10000"},
	{"BOXPROXY_INBOUND_KEY", ""},
	{"BOXPROXY_API_URL", "https://api.box.com"},
	{"BOXPROXY_UPLOAD_URL", "https://upload.box.com"},
	{"BOXPROXY_TOKEN_URL", "https://api.box.com/oauth2/token"},
	{"BOXPROXY_AUTHORIZE_URL", "https://account.box.com/api/oauth2/authorize"},
	{"BOXPROXY_RETRY_BODY_LIMIT", "10MiB"},
	{"BOXPROXY_UPSTREAM_RETRIES", "0"},
	{"BOXPROXY_SHUTDOWN_TIMEOUT", "30s"},
	{"BOXPROXY_QUIT_ENDPOINT", "false"},
	{"BOXPROXY_LOG_LEVEL", "info"},
	{"BOXPROXY_LOG_FORMAT", "json"},
}

func TestOpsHelpListsEveryCommandAndEveryVariableWithItsDefault(t *testing.T) {
	t.Parallel()
	for _, arg := range []string{"--help", "-h", "help"} {
		stdout, stderr, code := runBinary(t, nil, arg)
		if code != 0 || stderr != "" {
			t.Fatalf("boxproxy %s: exit %d, stderr %q", arg, code, stderr)
		}
		lines := map[string]string{}
		for _, l := range strings.Split(stdout, "\n") {
			if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(f[0], "BOXPROXY_") {
				lines[f[0]] = l
			}
		}
		for _, v := range interfaceVariables {
			l, ok := lines[v.name]
			if !ok {
				t.Errorf("boxproxy %s does not list %s", arg, v.name)
				continue
			}
			m := regexp.MustCompile(`\(default ([^)]*)\)`).FindStringSubmatch(l)
			if m == nil {
				t.Errorf("boxproxy %s: %s has no (default …): %q", arg, v.name, l)
				continue
			}
			if v.def != "" && !strings.Contains(m[1], v.def) {
				t.Errorf("boxproxy %s: %s shows (default %s), want %s", arg, v.name, m[1], v.def)
			}
		}
		for _, s := range []string{"BOXPROXY_CLIENT_SECRET", "BOXPROXY_JWT_PASSPHRASE", "BOXPROXY_DEVELOPER_TOKEN", "BOXPROXY_INBOUND_KEY"} {
			if _, ok := lines[s+"_FILE"]; !ok {
				t.Errorf("boxproxy %s does not list %s_FILE", arg, s)
			}
		}
		for _, cmd := range []string{"serve", "token", "check", "login", "logout", "demo", "version"} {
			if !regexp.MustCompile(`(?m)^\s+boxproxy \[?` + cmd + `\b`).MatchString(stdout) {
				t.Errorf("boxproxy %s does not list the %s command", arg, cmd)
			}
		}
	}
}

func TestOpsVersionPrintsOneLineAndUnknownCommandExits2(t *testing.T) {
	t.Parallel()
	stdout, stderr, code := runBinary(t, nil, "version")
	if code != 0 || stderr != "" || !regexp.MustCompile(`^boxproxy \S+ revision \S+( \(modified\))? go\S+ \S+/\S+\n$`).MatchString(stdout) {
		t.Errorf("boxproxy version: exit %d, stdout %q, stderr %q; want one line \"boxproxy <version> revision <rev> <go version> <os/arch>\"", code, stdout, stderr)
	}
	stdout, stderr, code = runBinary(t, nil, "frobnicate")
	if code != 2 || stdout != "" || len(opsHumanLines(stderr)) != 1 || !strings.Contains(stderr, "frobnicate") || !strings.Contains(stderr, "--help") {
		t.Errorf("boxproxy frobnicate: exit %d, stdout %q, stderr %q; want exit 2 and one line pointing at --help", code, stdout, stderr)
	}
}

// ---------------------------------------------------------------- 7. request IDs

func TestOpsClientRequestIDIsEchoedLoggedAndForwardedToBox(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	p := startProxy(t, box, ccgEnv(box)...)
	id := "ops-client-" + randomHex(t, 8)
	resp, body := p.Get(t, "/2.0/users/me", "X-Request-Id", id)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	if got := resp.Header.Get("X-Request-Id"); got != id {
		t.Errorf("response X-Request-Id %q, want the client's %q", got, id)
	}
	reqs := box.Requests()
	if got := reqs[len(reqs)-1].Header.Get("X-Request-Id"); got != id {
		t.Errorf("Box received X-Request-Id %q, want %q", got, id)
	}
	l := opsAccessLine(t, func() []map[string]any { return p.AccessLines(t) }, id)
	if l["path"] != "/2.0/users/me" || l["status"] != float64(200) || l["method"] != "GET" {
		t.Errorf("access log line %v", l)
	}

	// A refused request carries its ID too.
	id2 := "ops-refused-" + randomHex(t, 8)
	req := p.Request(t, http.MethodGet, "/2.0/users/me", nil, "X-Request-Id", id2)
	req.Host = "other.example"
	resp, _ = p.Do(t, req)
	if resp.StatusCode != 403 || resp.Header.Get("X-Request-Id") != id2 {
		t.Errorf("refused request: %d X-Request-Id %q, want 403 with %q", resp.StatusCode, resp.Header.Get("X-Request-Id"), id2)
	}
	if l := opsAccessLine(t, func() []map[string]any { return p.AccessLines(t) }, id2); l["status"] != float64(403) {
		t.Errorf("access log line of the refused request: %v", l)
	}
}

func TestOpsMissingOrUnsafeRequestIDIsReplacedByANewUniqueOneThatStaysWithBoxproxy(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	p := startProxy(t, box, ccgEnv(box)...)
	seen := map[string]bool{}
	sent := [][]string{nil, nil, nil, nil, nil,
		{"X-Request-Id", strings.Repeat("x", 300)},
		{"X-Request-Id", "has space"},
		{"X-Request-Id", "line\tbreak"},
	}
	for _, hdr := range sent {
		resp, body := p.Get(t, "/2.0/users/me", hdr...)
		if resp.StatusCode != 200 {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
		id := resp.Header.Get("X-Request-Id")
		if id == "" {
			t.Fatalf("response without X-Request-Id (client sent %q)", hdr)
		}
		if len(hdr) == 2 && id == hdr[1] {
			if strings.ContainsAny(id, " \t") || len(id) > 128 {
				t.Errorf("unsafe client X-Request-Id %.40q was kept", id)
			}
		}
		if seen[id] {
			t.Errorf("request ID %q given twice", id)
		}
		seen[id] = true
		// boxproxy's own IDs stay with it (Box names the request itself);
		// nor does a client's unsafe value go on.
		reqs := box.Requests()
		if got, ok := reqs[len(reqs)-1].Header["X-Request-Id"]; ok {
			t.Errorf("Box received X-Request-Id %q; boxproxy made %q for the client's %q", got, id, hdr)
		}
		opsAccessLine(t, func() []map[string]any { return p.AccessLines(t) }, id)
	}
}

func TestOpsBoxRequestIDOfAnErrorIsInTheAccessLog(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	p := startProxy(t, box, ccgEnv(box)...)

	// The stand-in's own 404 (BOX-REQUEST-ID header and request_id in the body).
	resp, body := p.Get(t, "/2.0/files/987654321", "X-Request-Id", "ops-404-"+randomHex(t, 4))
	if resp.StatusCode != 404 {
		t.Fatalf("GET a missing file: %d %q", resp.StatusCode, body)
	}
	boxID := resp.Header.Get("Box-Request-Id")
	if boxID == "" {
		t.Fatal("the stand-in's 404 has no BOX-REQUEST-ID")
	}
	if l := opsAccessLine(t, func() []map[string]any { return p.AccessLines(t) }, resp.Header.Get("X-Request-Id")); l["box_request_id"] != boxID {
		t.Errorf("access log box_request_id %v, want Box's %q", l["box_request_id"], boxID)
	}

	// An injected error with a known header.
	box.Inject("/2.0/files/555", 1, fakebox.Injected{Status: 409, Header: http.Header{"Box-Request-Id": {"opsboxhdr0123456789"}},
		Body: `{"type":"error","status":409,"code":"conflict","message":"Conflict","request_id":"opsbody1"}`})
	resp, _ = p.Get(t, "/2.0/files/555")
	if resp.StatusCode != 409 {
		t.Fatalf("injected 409: got %d", resp.StatusCode)
	}
	if l := opsAccessLine(t, func() []map[string]any { return p.AccessLines(t) }, resp.Header.Get("X-Request-Id")); l["box_request_id"] != "opsboxhdr0123456789" {
		t.Errorf("access log box_request_id %v, want the BOX-REQUEST-ID header's", l["box_request_id"])
	}
}

func TestOpsBoxRequestIDFromAnErrorBodyWithoutHeaderIsInTheAccessLog(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := json.Marshal(map[string]any{"type": "error", "status": 404, "code": "not_found", "message": "Not Found", "request_id": "opsbodyonly42"})
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(404)
		_, _ = w.Write(body)
	}))
	t.Cleanup(upstream.Close)
	p := startProxy(t, box, append(ccgEnv(box), "BOXPROXY_API_URL="+upstream.URL)...)
	resp, body := p.Get(t, "/2.0/files/1")
	if resp.StatusCode != 404 || !strings.Contains(string(body), "opsbodyonly42") {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	if l := opsAccessLine(t, func() []map[string]any { return p.AccessLines(t) }, resp.Header.Get("X-Request-Id")); l["box_request_id"] != "opsbodyonly42" {
		t.Errorf("access log box_request_id %v, want the body's request_id opsbodyonly42", l["box_request_id"])
	}
}

func TestOpsSIGINTDrainsLikeSIGTERMAndASecondSignalStopsAtOnce(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	b := startBinary(t, box, ccgEnv(box)...) // BOXPROXY_SHUTDOWN_TIMEOUT 30s

	go func() {
		if resp, err := http.Get(b.URL + "/2.0/test/slow?ms=8000"); err == nil {
			resp.Body.Close()
		}
	}()
	opsWaitForSlowRequestAtBox(t, box)
	opsSignalAndWaitUntilRefused(t, b, os.Interrupt, "SIGINT")
	select {
	case <-b.exited:
		t.Fatalf("boxproxy exited (%v) at the first SIGINT instead of draining the slow request", b.waitErr)
	case <-time.After(200 * time.Millisecond):
	}

	// Ctrl-C once more: the person does not want to wait for the drain.
	sent := time.Now()
	if err := b.Cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	opsWaitExit(t, b, 10*time.Second)
	if took := time.Since(sent); took > 2*time.Second {
		t.Errorf("a second SIGINT during the drain took %s to stop boxproxy, want at once", took)
	}
}

func TestOpsCheckWithADeveloperTokenAsksBoxWhetherTheTokenIsValid(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	good, err := box.IssueToken(userAlice)
	if err != nil {
		t.Fatal(err)
	}
	env := append(boxEnv(box), "BOXPROXY_DEVELOPER_TOKEN="+good)
	stdout, stderr, code := runBinary(t, env, "check")
	if code != 0 || !strings.HasPrefix(stdout, "ok:") {
		t.Fatalf("boxproxy check with a valid developer token: exit %d %q %q", code, stdout, stderr)
	}
	assertNoSecrets(t, "boxproxy check output", stdout+stderr, []string{good})

	box.RevokeAll() // developer tokens live 60 minutes; this one has expired
	stdout, stderr, code = runBinary(t, env, "check")
	lines := opsHumanLines(stderr)
	if code == 0 || strings.Contains(stdout, "ok:") || len(lines) != 1 {
		t.Fatalf("boxproxy check with a developer token that Box rejects: exit %d, stdout %q, stderr %q; want non-zero and one line", code, stdout, stderr)
	}
	assertNoSecrets(t, "boxproxy check output", stdout+stderr, []string{good})
}

// opsWaitForSlowRequestAtBox waits until a GET /2.0/test/slow has reached the stand-in.
func opsWaitForSlowRequestAtBox(t *testing.T, box *fakebox.Box) {
	t.Helper()
	waitUntil(t, 10*time.Second, func() bool {
		for _, r := range box.Requests() {
			if r.Path == "/2.0/test/slow" {
				return true
			}
		}
		return false
	}, "the slow request reaches Box")
}

// opsSignalAndWaitUntilRefused sends sig to the binary and waits until it
// refuses new connections.
func opsSignalAndWaitUntilRefused(t *testing.T, b *binaryProxy, sig os.Signal, name string) {
	t.Helper()
	if err := b.Cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 3*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", b.Addr, 500*time.Millisecond)
		if err != nil {
			return true
		}
		c.Close()
		return false
	}, "new connections are refused after "+name)
}

package integration_test

// Issue 2, "Tokens" and "Retry after 401": single flight, configuration
// errors, token endpoint outages, refresh-ahead, and the one retry after a 401.

import (
	"bytes"
	"crypto/sha1"
	"encoding/hex"
	"io"
	"maps"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/boxproxy/boxproxy/fakebox"
)

func TestManyConcurrentRequestsForASubjectWithoutTokenCauseExactlyOneTokenRequest(t *testing.T) {
	t.Parallel()
	cpuHeavy(t)
	box := startBox(t)
	p := startProxy(t, box, ccgEnv(box)...)
	waitUntil(t, 10*time.Second, func() bool { return len(box.TokenRequests()) == 1 }, "the default token is fetched")

	// 1000 requests at once; 250 connections carry them (more connections
	// only add set-up cost under -race, not more concurrency at the cache).
	const n = 1000
	tr := &http.Transport{MaxConnsPerHost: 250, MaxIdleConnsPerHost: 250, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 60 * time.Second}

	start := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[int]int{}
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodGet, p.URL+"/2.0/users/me", nil)
			req.Header.Set("As-User", userAlice)
			<-start
			status := 0
			if resp, err := client.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				status = resp.StatusCode
			}
			mu.Lock()
			statuses[status]++
			mu.Unlock()
		}()
	}
	began := time.Now()
	close(start)
	wg.Wait()
	t.Logf("%d requests took %s", n, time.Since(began).Round(time.Millisecond))
	if statuses[http.StatusOK] != n {
		t.Errorf("statuses %v, want %d × 200", statuses, n)
	}
	var forAlice []fakebox.TokenRequest
	for _, tr := range box.TokenRequests() {
		if tr.SubjectID == userAlice {
			forAlice = append(forAlice, tr)
		}
	}
	if len(forAlice) != 1 || !forAlice[0].OK {
		t.Errorf("%d concurrent requests for user %s caused %d token requests, want exactly 1: %+v", n, userAlice, len(forAlice), forAlice)
	}
}

func TestBoxConfigurationErrorsGive502NamingTheCauseAndAreNotRetriedInALoop(t *testing.T) {
	t.Parallel()
	notAuthorized := false
	cases := []struct {
		name  string
		mod   func(*fakebox.Config)
		env   func(box *fakebox.Box) []string
		cause string // Box's words, which the message must repeat
	}{
		{"wrong client secret", nil, func(box *fakebox.Box) []string {
			return append(ccgEnv(box), "BOXPROXY_CLIENT_SECRET=wrong-secret-"+testClientSecret)
		}, "Grant credentials are invalid"},
		{"unknown client", nil, func(box *fakebox.Box) []string {
			return append(ccgEnv(box), "BOXPROXY_CLIENT_ID=unknown-client-id")
		}, "invalid_client"},
		{"app not authorized", func(c *fakebox.Config) { c.AppAuthorized = &notAuthorized }, ccgEnv, "unauthorized_client"},
		{"unknown enterprise", nil, func(box *fakebox.Box) []string {
			return append(ccgEnv(box), "BOXPROXY_ENTERPRISE_ID=999999")
		}, "Grant credentials are invalid"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var mods []func(*fakebox.Config)
			if tc.mod != nil {
				mods = append(mods, tc.mod)
			}
			box := startBox(t, mods...)
			p := startProxy(t, box, tc.env(box)...)

			resp, body := p.Get(t, "/2.0/users/me")
			if resp.StatusCode != http.StatusBadGateway {
				t.Fatalf("GET /2.0/users/me = %d %s, want 502", resp.StatusCode, body)
			}
			e := decodeBoxError(t, resp, body)
			if e.Code != "box_configuration_error" || !strings.Contains(e.Message, tc.cause) {
				t.Errorf("error %+v, want code box_configuration_error and a message naming %q", e, tc.cause)
			}
			before := len(box.TokenRequests())
			if before < 1 || before > 2 {
				t.Errorf("%d token requests after the first request, want 1 or 2", before)
			}
			for i := 0; i < 20; i++ {
				resp, body := p.Get(t, "/2.0/users/me")
				if resp.StatusCode != http.StatusBadGateway {
					t.Fatalf("request %d = %d %s, want 502", i+2, resp.StatusCode, body)
				}
			}
			if after := len(box.TokenRequests()); after > before+1 {
				t.Errorf("20 more requests caused %d more token requests, want at most 1", after-before)
			}
			if n := len(box.Requests()); n != 0 {
				t.Errorf("requests without a token reached the stand-in: %d", n)
			}
			if logs := p.Logs(); !strings.Contains(logs, tc.cause) {
				t.Errorf("the log does not name the cause %q:\n%s", tc.cause, logs)
			}
		})
	}
}

func TestFailingTokenEndpointGivesJSONErrorAndTheProxyRecoversByItself(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		fault fakebox.Fault
	}{{"503", fakebox.Fault503}, {"down", fakebox.FaultDown}, {"500", fakebox.Fault500},
		{"html page", fakebox.FaultHTML}, {"no access_token", fakebox.FaultNoAccessToken}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			box := startBox(t)
			p := startProxy(t, box, ccgEnv(box)...)
			waitUntil(t, 10*time.Second, func() bool { return box.CountTokenRequestsFor("enterprise", testEnterpriseID) == 1 }, "the default token is fetched")

			box.SetTokenFault(tc.fault)
			resp, body := p.Get(t, "/2.0/users/me", "As-User", userAlice) // a subject without a token
			if resp.StatusCode != http.StatusServiceUnavailable && resp.StatusCode != http.StatusBadGateway {
				t.Fatalf("with the token endpoint failing (%s): %d %s, want 503 or 502", tc.fault, resp.StatusCode, body)
			}
			e := decodeBoxError(t, resp, body)
			if e.Code == "box_configuration_error" || !strings.Contains(strings.ToLower(e.Message), "token endpoint") {
				t.Errorf("error %+v should say that the token endpoint is failing", e)
			}
			// The default subject's token still works meanwhile.
			if resp, body := p.Get(t, "/2.0/users/me"); resp.StatusCode != http.StatusOK {
				t.Errorf("the cached default token stopped working: %d %s", resp.StatusCode, body)
			}
			// No hammering: 20 quick requests cause hardly any token requests.
			before := len(box.TokenRequests())
			for i := 0; i < 20; i++ {
				resp, _ := p.Get(t, "/2.0/users/me", "As-User", userAlice)
				if resp.StatusCode == http.StatusOK {
					t.Fatal("200 while the token endpoint fails")
				}
			}
			if extra := len(box.TokenRequests()) - before; extra > 2 {
				t.Errorf("20 requests during the outage caused %d token requests, want at most 2 (back off)", extra)
			}

			box.SetTokenFault(fakebox.FaultNone)
			healed := time.Now()
			waitUntil(t, 15*time.Second, func() bool {
				resp, _ := p.Get(t, "/2.0/users/me", "As-User", userAlice)
				return resp.StatusCode == http.StatusOK
			}, "the proxy recovers after the token endpoint heals")
			t.Logf("recovered %s after the fault was cleared", time.Since(healed).Round(time.Millisecond))
			if n := box.CountTokenRequestsFor("user", userAlice); n != 1 {
				t.Errorf("%d successful token requests for user %s, want 1", n, userAlice)
			}
		})
	}
}

// With 3-second tokens the proxy stops using a token 0.3 s before it expires,
// so this test must not compete for the CPU with the heavy tests (cpuQuiet).
func TestTokensAreRenewedAheadSoNoRequestEverCarriesAnExpiredToken(t *testing.T) {
	t.Parallel()
	cpuQuiet(t)
	box := startBox(t, func(c *fakebox.Config) { c.TokenTTL = 3 * time.Second })
	p := startProxy(t, box, ccgEnv(box)...)

	deadline := time.Now().Add(5 * time.Second)
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[int]int{}
	for _, asUser := range []string{"", "", userAlice, userCarol} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				req, _ := http.NewRequest(http.MethodGet, p.URL+"/2.0/users/me", nil)
				if asUser != "" {
					req.Header.Set("As-User", asUser)
				}
				status := 0
				if resp, err := p.Client.Do(req); err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					status = resp.StatusCode
				}
				mu.Lock()
				statuses[status]++
				mu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	total := 0
	for _, n := range statuses {
		total += n
	}
	if statuses[http.StatusOK] != total || total < 50 {
		t.Errorf("statuses %v, want only 200s (and at least 50 requests)", statuses)
	}
	unauthorized := 0
	for _, r := range box.Requests() {
		if r.Status == http.StatusUnauthorized {
			unauthorized++
		}
	}
	if unauthorized != 0 {
		t.Errorf("%d of %d requests reached the stand-in with an expired token", unauthorized, len(box.Requests()))
		for _, tr := range box.TokenRequests() {
			t.Logf("token request at %s: %s %s ok=%v", tr.Time.Format("15:04:05.000"), tr.SubjectType, tr.SubjectID, tr.OK)
		}
	}
	if n := box.CountTokenRequestsFor("enterprise", testEnterpriseID); n < 2 {
		t.Errorf("%d token requests for the enterprise in 5 s with 3 s tokens, want renewals", n)
	}
	if n := box.CountTokenRequests(false); n != 0 {
		t.Errorf("%d failed token requests", n)
	}
}

func TestAfter401TheSameRequestIsSentOnceMoreWithANewToken(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	p := startProxy(t, box, ccgEnv(box)...)
	if resp, body := p.Get(t, "/2.0/users/me"); resp.StatusCode != http.StatusOK {
		t.Fatalf("warm-up: %d %s", resp.StatusCode, body)
	}
	for _, tc := range []struct {
		name    string
		chunked bool
	}{{"with Content-Length", false}, {"chunked", true}} {
		box.RevokeAll()
		box.ResetRecords()
		payload := []byte(`{"name":"retry me","parent":{"id":"0"},"n":` + strings.Repeat("1", 100) + `}`)
		var body io.Reader = bytes.NewReader(payload)
		if tc.chunked {
			body = io.MultiReader(bytes.NewReader(payload)) // no length known: sent chunked
		}
		req := p.Request(t, http.MethodPost, "/2.0/test/echo/retry?b=2&&a=1;x", body,
			"Content-Type", "application/json", "X-Custom", "kept", "If-Match", `"3"`)
		resp, respBody := p.Do(t, req)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: POST after RevokeAll = %d %s, want 200", tc.name, resp.StatusCode, respBody)
		}
		reqs := box.Requests()
		if len(reqs) != 2 || reqs[0].Status != http.StatusUnauthorized || reqs[1].Status != http.StatusOK {
			t.Fatalf("%s: the stand-in saw %+v, want a 401 then a 200", tc.name, reqs)
		}
		// The first attempt's body is the same bytes, or was not read at all
		// (the stand-in, as Box, refuses a bad token before the body).
		a, b := reqs[0], reqs[1]
		sum := sha1.Sum(payload)
		if a.Method != b.Method || a.Path != b.Path || a.RawQuery != b.RawQuery || a.RawQuery != "b=2&&a=1;x" ||
			(a.BodyLen != 0 && a.BodySHA1 != b.BodySHA1) || b.BodySHA1 != hex.EncodeToString(sum[:]) || b.BodyLen != int64(len(payload)) {
			t.Errorf("%s: attempts differ: %s %s?%s %d bytes %s / %s %s?%s %d bytes %s", tc.name,
				a.Method, a.Path, a.RawQuery, a.BodyLen, a.BodySHA1, b.Method, b.Path, b.RawQuery, b.BodyLen, b.BodySHA1)
		}
		ha, hb := a.Header.Clone(), b.Header.Clone()
		ha.Del("Authorization")
		hb.Del("Authorization")
		if !maps.EqualFunc(ha, hb, func(x, y []string) bool { return strings.Join(x, "\x00") == strings.Join(y, "\x00") }) {
			t.Errorf("%s: headers differ between attempts:\n%v\n%v", tc.name, ha, hb)
		}
		if a.Token == b.Token || !isIssued(box, b.Token) {
			t.Errorf("%s: the second attempt did not carry a new token", tc.name)
		}
		if n := box.CountTokenRequestsFor("enterprise", testEnterpriseID); n != 1 {
			t.Errorf("%s: %d token requests for the retry, want 1", tc.name, n)
		}
	}
	// A second 401 goes back to the client: no loop.
	box.ResetRecords()
	box.Inject("/2.0/users/me", 2, fakebox.Unauthorized())
	resp, body := p.Get(t, "/2.0/users/me")
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("two 401s in a row: client got %d %s, want Box's 401", resp.StatusCode, body)
	}
	if n := len(box.Requests()); n != 2 {
		t.Errorf("the stand-in saw %d attempts, want 2", n)
	}
}

// A body larger than BOXPROXY_RETRY_BODY_LIMIT is not kept: it goes with
// Expect: 100-continue. An upstream that refuses the token before reading
// the body (as Go's server and the stand-in do) gets it once more with a new
// token; one that reads the body first has it, so its 401 goes back to the
// client.
func TestBodyLargerThanRetryBodyLimitIsReplayedOnlyWhenBoxRefusedBeforeTheBody(t *testing.T) {
	t.Parallel()
	payload := bytes.Repeat([]byte("0123456789abcdef"), 64<<10/16)
	sum := sha1.Sum(payload)
	for _, readFirst := range []bool{false, true} {
		box := startBox(t, func(c *fakebox.Config) { c.ReadBodyBeforeAuth = readFirst })
		p := startProxy(t, box, append(ccgEnv(box), "BOXPROXY_RETRY_BODY_LIMIT=1KiB")...)
		if resp, body := p.Get(t, "/2.0/users/me"); resp.StatusCode != http.StatusOK {
			t.Fatalf("warm-up: %d %s", resp.StatusCode, body)
		}
		for _, chunked := range []bool{false, true} {
			box.RevokeAll()
			box.ResetRecords()
			var body io.Reader = bytes.NewReader(payload)
			if chunked {
				body = io.MultiReader(bytes.NewReader(payload))
			}
			resp, respBody := p.Do(t, p.Request(t, http.MethodPost, "/2.0/test/echo/big", body, "Content-Type", "application/octet-stream"))
			reqs := box.Requests()
			if !readFirst {
				if resp.StatusCode != http.StatusOK || len(reqs) != 2 || reqs[0].BodyLen != 0 ||
					reqs[1].BodyLen != int64(len(payload)) || reqs[1].BodySHA1 != hex.EncodeToString(sum[:]) {
					t.Fatalf("chunked=%v: 64 KiB POST after RevokeAll = %d %s; the stand-in saw %+v, want a 401 before the body, then the body once", chunked, resp.StatusCode, respBody, reqs)
				}
				continue
			}
			if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
				t.Fatalf("chunked=%v: 64 KiB POST after RevokeAll = %d (WWW-Authenticate %q) %s, want Box's 401",
					chunked, resp.StatusCode, resp.Header.Get("WWW-Authenticate"), respBody)
			}
			if len(reqs) != 1 || reqs[0].BodyLen != int64(len(payload)) || reqs[0].BodySHA1 != hex.EncodeToString(sum[:]) {
				t.Fatalf("chunked=%v: the stand-in saw %d attempts (%+v), want one with the whole body", chunked, len(reqs), reqs)
			}
			// The rejected token was dropped: the next request gets a new one and works.
			resp, respBody = p.Do(t, p.Request(t, http.MethodPost, "/2.0/test/echo/big", bytes.NewReader(payload)))
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("chunked=%v: the next request = %d %s", chunked, resp.StatusCode, respBody)
			}
		}
	}
}

func TestConcurrent401sCauseOneNewTokenNotOnePerRequest(t *testing.T) {
	t.Parallel()
	cpuHeavy(t)
	box := startBox(t)
	p := startProxy(t, box, ccgEnv(box)...)
	if resp, body := p.Get(t, "/2.0/users/me"); resp.StatusCode != http.StatusOK {
		t.Fatalf("warm-up: %d %s", resp.StatusCode, body)
	}
	box.RevokeAll()
	box.ResetRecords()

	const n = 50
	var wg sync.WaitGroup
	errs := make(chan string, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := p.Client.Post(p.URL+"/2.0/test/echo/concurrent", "application/json", strings.NewReader(`{"i":1}`))
			if err != nil {
				errs <- err.Error()
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				errs <- resp.Status
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Errorf("request after RevokeAll: %s", e)
	}
	if got := len(box.TokenRequests()); got != 1 {
		t.Errorf("%d concurrent 401s caused %d token requests, want 1 (a newer token is not dropped)", n, got)
	}
}

func TestTokenCacheKeepsOneTokenPerSubjectUpToTokenCacheSize(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	p := startProxy(t, box, append(ccgEnv(box), "BOXPROXY_TOKEN_CACHE_SIZE=2")...)
	as := func(user string) {
		t.Helper()
		if resp, body := p.Get(t, "/2.0/users/me", "As-User", user); resp.StatusCode != http.StatusOK || jsonBody(t, body)["id"] != user {
			t.Fatalf("As-User %s = %d %s", user, resp.StatusCode, body)
		}
	}
	as(userAlice)
	as(userAlice)
	as(userAlice)
	if n := box.CountTokenRequestsFor("user", userAlice); n != 1 {
		t.Fatalf("3 requests as %s caused %d token requests, want 1 (cached)", userAlice, n)
	}
	as(userBob)   // the cache holds two subjects: now Alice and Bob
	as(userCarol) // Carol pushes out the least recently used, Alice
	as(userCarol)
	as(userAlice)
	if n := box.CountTokenRequestsFor("user", userAlice); n != 2 {
		t.Errorf("%d token requests for %s, want 2 (evicted from a cache of 2 subjects)", n, userAlice)
	}
	if n := box.CountTokenRequestsFor("user", userCarol); n != 1 {
		t.Errorf("%d token requests for %s, want 1", n, userCarol)
	}
}

package integration_test

// Issue 6 (hardening): boxproxy keeps working under faults, load and hostile
// input, and leaks nothing. This file has the token endpoint and upstream
// faults and the helpers of the hardening_*_test.go files (prefix "hard"):
//   - hardening_load_test.go: revocations under load, client disconnects and leaks;
//   - hardening_input_test.go: hostile requests, each refused with nothing forwarded;
//   - hardening_secrets_test.go: no secret in any log line, body, header or metric.

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/boxproxy/boxproxy/fakebox"
)

// ---------------------------------------------------------------- helpers

// hardClient is an HTTP client with a bounded wait and enough idle
// connections for the load tests; it never follows redirects. Its idle
// connections are closed when the test ends, before the proxy shuts down:
// a connection that a client dialled but never used counts as active for 5 s
// in http.Server.Shutdown.
func hardClient(t testing.TB, timeout time.Duration, conns int) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = conns
	tr.MaxIdleConns = conns
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{
		Timeout:       timeout,
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// hardTokenRequestsFor counts the token requests (successful or not) that
// named subjectID.
func hardTokenRequestsFor(box *fakebox.Box, subjectID string) int {
	n := 0
	for _, tr := range box.TokenRequests() {
		if tr.SubjectID == subjectID {
			n++
		}
	}
	return n
}

// hardRequestsFor counts the stand-in's recorded requests whose path starts with prefix.
func hardRequestsFor(box *fakebox.Box, prefix string) int {
	n := 0
	for _, r := range box.Requests() {
		if strings.HasPrefix(r.Path, prefix) {
			n++
		}
	}
	return n
}

// hardRawResult is what came back on a raw TCP connection.
type hardRawResult struct {
	Status int // 0: the connection closed without an answer
	Header http.Header
	Body   string
	Took   time.Duration
}

// hardRaw writes request over a new TCP connection (ignoring write errors:
// the server may answer and close before it has read everything) and reads
// one response, waiting at most timeout.
func hardRaw(t testing.TB, addr, request string, timeout time.Duration) hardRawResult {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	_ = conn.SetDeadline(start.Add(timeout))
	_, _ = io.WriteString(conn, request)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return hardRawResult{Took: time.Since(start)}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return hardRawResult{Status: resp.StatusCode, Header: resp.Header, Body: string(body), Took: time.Since(start)}
}

// ---------------------------------------------------------------- 1. token endpoint faults

// Every way the token endpoint can fail gives the client a prompt JSON
// 502/503/504 that names the cause; subjects that hold a token keep working;
// the proxy backs off instead of hammering Box, and recovers by itself once
// Box is back.
func TestHardTokenEndpointFaultsGivePromptJSONErrorsWhileHeldTokensKeepWorkingAndTheProxyRecovers(t *testing.T) {
	t.Parallel()
	// prompt bounds answers that come from the back-off or from a fault the
	// proxy sees at once: well below tokenTimeout, which a proxy that waited
	// for the token endpoint would take, and generous enough for a busy
	// 2-core machine (seven of these run in parallel, each with its own
	// stand-in and proxy).
	const tokenTimeout = 3 * time.Second
	const prompt = 2 * time.Second
	cases := []struct {
		fault  fakebox.Fault
		status int
		code   string
		cause  string // what the message must say
		prompt time.Duration
	}{
		{fakebox.FaultDown, http.StatusServiceUnavailable, "token_endpoint_unavailable", "connection closed without an answer", prompt},
		{fakebox.FaultHang, http.StatusGatewayTimeout, "token_endpoint_timeout", "did not answer in time", tokenTimeout + prompt},
		{fakebox.FaultHTML, http.StatusBadGateway, "token_endpoint_bad_response", "not a JSON token object", prompt},
		{fakebox.FaultTruncated, http.StatusBadGateway, "token_endpoint_bad_response", "not a JSON token object", prompt},
		{fakebox.FaultNoAccessToken, http.StatusBadGateway, "token_endpoint_bad_response", "no access_token", prompt},
		{fakebox.Fault500, http.StatusServiceUnavailable, "token_endpoint_unavailable", "HTTP 500", prompt},
		{fakebox.Fault503, http.StatusServiceUnavailable, "token_endpoint_unavailable", "HTTP 503", prompt},
	}
	for _, tc := range cases {
		t.Run(tc.fault.String(), func(t *testing.T) {
			t.Parallel()
			box := startBox(t)
			p := startProxy(t, box, append(ccgEnv(box), "BOXPROXY_TOKEN_TIMEOUT="+tokenTimeout.String())...)

			// Before the fault: the default subject and Alice hold tokens.
			for _, as := range []string{"", userAlice} {
				if resp, body := p.Get(t, "/2.0/users/me", hardAsUser(as)...); resp.StatusCode != http.StatusOK {
					t.Fatalf("before the fault, GET /2.0/users/me as %q = %d %s", as, resp.StatusCode, body)
				}
			}
			heldTokenRequests := len(box.TokenRequests())

			box.SetTokenFault(tc.fault)

			// Bob has no token: his request fails promptly with a JSON error naming the cause.
			start := time.Now()
			resp, body := p.Get(t, "/2.0/users/me", "As-User", userBob)
			took := time.Since(start)
			if resp.StatusCode != tc.status {
				t.Fatalf("GET as Bob during fault %s = %d %s, want %d", tc.fault, resp.StatusCode, body, tc.status)
			}
			if took > tc.prompt {
				t.Errorf("the error took %s, want at most %s", took, tc.prompt)
			}
			e := decodeBoxError(t, resp, body)
			if e.Code != tc.code || !strings.Contains(e.Message, tc.cause) {
				t.Errorf("error %+v, want code %s and a message that says %q", e, tc.code, tc.cause)
			}
			if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 {
				t.Errorf("the error has Retry-After %q, want whole seconds >= 1", resp.Header.Get("Retry-After"))
			}

			// Subjects that hold a token keep working.
			for _, as := range []string{"", userAlice} {
				if resp, body := p.Get(t, "/2.0/users/me", hardAsUser(as)...); resp.StatusCode != http.StatusOK {
					t.Errorf("during the fault, GET as %q (token held) = %d %s, want 200", as, resp.StatusCode, body)
				}
			}

			// A burst for Bob is answered from the back-off, not by hammering Box.
			hardBurst(t, p, 50, 10, func(resp *http.Response, body []byte, took time.Duration) {
				if resp.StatusCode != tc.status {
					t.Errorf("burst: %d %s, want %d", resp.StatusCode, body, tc.status)
					return
				}
				if e := decodeBoxError(t, resp, body); e.Code != tc.code {
					t.Errorf("burst: code %s, want %s", e.Code, tc.code)
				}
				if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 {
					t.Errorf("burst answer has Retry-After %q, want whole seconds >= 1", resp.Header.Get("Retry-After"))
				}
				if took > tc.prompt {
					t.Errorf("burst answer took %s, want at most %s", took, tc.prompt)
				}
			})
			if n := hardTokenRequestsFor(box, userBob); n > 2 {
				t.Errorf("one failure and a burst of 50 requests caused %d token requests for Bob, want at most 2", n)
			}
			if n := len(box.TokenRequests()) - heldTokenRequests - hardTokenRequestsFor(box, userBob); n != 0 {
				t.Errorf("%d token requests for subjects that hold a valid token, want 0", n)
			}

			// Box comes back: the proxy recovers without a restart.
			box.SetTokenFault(fakebox.FaultNone)
			recovered := time.Now()
			waitUntil(t, 10*time.Second, func() bool {
				resp, _ := p.Get(t, "/2.0/users/me", "As-User", userBob)
				return resp.StatusCode == http.StatusOK
			}, "requests as Bob succeed again after the fault cleared")
			t.Logf("fault %s: recovered %s after the fault cleared; %d token requests for Bob in all",
				tc.fault, time.Since(recovered).Round(time.Millisecond), hardTokenRequestsFor(box, userBob))
			if resp, body := p.Get(t, "/2.0/users/me", "As-User", userCarol); resp.StatusCode != http.StatusOK {
				t.Errorf("after recovery, a new subject gets %d %s", resp.StatusCode, body)
			}
		})
	}
}

// hardAsUser is the header list for As-User as (none when as is empty).
func hardAsUser(as string) []string {
	if as == "" {
		return nil
	}
	return []string{"As-User", as}
}

// hardBurst sends n GET /2.0/users/me As-User Bob requests from workers
// goroutines and checks each answer with check (called under a lock).
func hardBurst(t *testing.T, p *testProxy, n, workers int, check func(*http.Response, []byte, time.Duration)) {
	t.Helper()
	client := hardClient(t, 10*time.Second, workers)
	var mu sync.Mutex
	var wg sync.WaitGroup
	jobs := make(chan struct{}, n)
	for range n {
		jobs <- struct{}{}
	}
	close(jobs)
	for range workers {
		wg.Go(func() {
			for range jobs {
				req := p.Request(t, http.MethodGet, "/2.0/users/me", nil, "As-User", userBob)
				start := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					t.Errorf("burst request: %v", err)
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				took := time.Since(start)
				mu.Lock()
				p.mu.Lock()
				p.bodies = append(p.bodies, string(body))
				p.mu.Unlock()
				check(resp, body, took)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
}

// ---------------------------------------------------------------- 3. upstream faults

// hardBoxErrorBody is a body in the shape of Box's errors.
func hardBoxErrorBody(status int, code string) string {
	return `{"type":"error","status":` + strconv.Itoa(status) + `,"code":"` + code +
		`","help_url":"https://developer.box.com/guides/api-calls/permissions-and-errors/common-errors/","message":"injected","request_id":"hard` + code + `"}`
}

func hardRetryAfter(v string) http.Header {
	h := http.Header{}
	h.Set("Retry-After", v)
	return h
}

// Without BOXPROXY_UPSTREAM_RETRIES the client gets Box's own 5xx/429
// (Retry-After intact) or, when the connection breaks, a JSON 502: never a hang.
func TestHardUpstreamResetsGiveJSON502And5xx429PassThroughUnchangedByDefault(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	p := startProxy(t, box, ccgEnv(box)...)
	client := hardClient(t, 10*time.Second, 4)

	t.Run("reset", func(t *testing.T) {
		// Go's transport may try once more itself on a reused connection, so
		// every attempt is reset.
		box.Inject("/2.0/test/echo/reset", 5, fakebox.Injected{Reset: true})
		start := time.Now()
		resp, body := p.DoWith(t, client, p.Request(t, http.MethodGet, "/2.0/test/echo/reset", nil))
		if resp.StatusCode != http.StatusBadGateway {
			t.Fatalf("GET with the connection reset = %d %s, want 502", resp.StatusCode, body)
		}
		if e := decodeBoxError(t, resp, body); e.Code != "upstream_unreachable" {
			t.Errorf("error %+v, want code upstream_unreachable", e)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("the 502 took %s", took)
		}
	})

	for _, status := range []int{http.StatusInternalServerError, http.StatusServiceUnavailable, http.StatusTooManyRequests} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			path := "/2.0/test/echo/pass-" + strconv.Itoa(status)
			want := hardBoxErrorBody(status, "injected_"+strconv.Itoa(status))
			box.Inject(path, 1, fakebox.Injected{Status: status, Header: hardRetryAfter("7"), Body: want})
			resp, body := p.DoWith(t, client, p.Request(t, http.MethodGet, path, nil))
			if resp.StatusCode != status || string(body) != want {
				t.Fatalf("GET = %d %q, want Box's %d %q unchanged", resp.StatusCode, body, status, want)
			}
			if ra := resp.Header.Get("Retry-After"); ra != "7" {
				t.Errorf("Retry-After = %q, want Box's 7", ra)
			}
			if n := hardRequestsFor(box, path); n != 1 {
				t.Errorf("the stand-in saw %d attempts, want 1 (no retries by default)", n)
			}
		})
	}
}

// With BOXPROXY_UPSTREAM_RETRIES=2 idempotent requests are sent again after
// 5xx, 429 and broken connections, waiting as Retry-After says (capped);
// POST is never sent twice.
func TestHardUpstreamRetriesRetryIdempotentRequestsHonouringRetryAfterWithACap(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	p := startProxy(t, box, append(ccgEnv(box), "BOXPROXY_UPSTREAM_RETRIES=2")...)
	client := hardClient(t, 30*time.Second, 8)

	t.Run("GET 503 then 200", func(t *testing.T) {
		t.Parallel()
		path := "/2.0/test/echo/retry-503"
		box.Inject(path, 1, fakebox.Injected{Status: 503, Header: hardRetryAfter("1"), Body: hardBoxErrorBody(503, "unavailable")})
		start := time.Now()
		resp, body := p.DoWith(t, client, p.Request(t, http.MethodGet, path, nil))
		took := time.Since(start)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET = %d %s, want 200 after one retry", resp.StatusCode, body)
		}
		if n := hardRequestsFor(box, path); n != 2 {
			t.Errorf("the stand-in saw %d attempts, want 2", n)
		}
		if took < 900*time.Millisecond || took > 5*time.Second {
			t.Errorf("the answer took %s, want about 1s (Retry-After: 1)", took)
		}
	})

	t.Run("GET reset then 200", func(t *testing.T) {
		t.Parallel()
		path := "/2.0/test/echo/retry-reset"
		box.Inject(path, 1, fakebox.Injected{Reset: true})
		resp, body := p.DoWith(t, client, p.Request(t, http.MethodGet, path, nil))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET = %d %s, want 200 after a retry", resp.StatusCode, body)
		}
	})

	t.Run("POST 503 not retried", func(t *testing.T) {
		t.Parallel()
		path := "/2.0/test/echo/retry-post"
		want := hardBoxErrorBody(503, "unavailable")
		box.Inject(path, 1, fakebox.Injected{Status: 503, Header: hardRetryAfter("1"), Body: want})
		resp, body := p.DoWith(t, client, p.Request(t, http.MethodPost, path, strings.NewReader(`{"name":"x"}`), "Content-Type", "application/json"))
		if resp.StatusCode != 503 || string(body) != want || resp.Header.Get("Retry-After") != "1" {
			t.Fatalf("POST = %d %q (Retry-After %q), want Box's 503 unchanged", resp.StatusCode, body, resp.Header.Get("Retry-After"))
		}
		if n := hardRequestsFor(box, path); n != 1 {
			t.Errorf("the stand-in saw %d attempts of a POST, want 1", n)
		}
	})

	t.Run("GET 503 every time gives Box's last answer", func(t *testing.T) {
		t.Parallel()
		path := "/2.0/test/echo/retry-always"
		want := hardBoxErrorBody(503, "unavailable")
		box.Inject(path, 3, fakebox.Injected{Status: 503, Header: hardRetryAfter("1"), Body: want})
		resp, body := p.DoWith(t, client, p.Request(t, http.MethodGet, path, nil))
		if resp.StatusCode != 503 || string(body) != want || resp.Header.Get("Retry-After") != "1" {
			t.Fatalf("GET = %d %q (Retry-After %q), want Box's last 503 unchanged", resp.StatusCode, body, resp.Header.Get("Retry-After"))
		}
		if n := hardRequestsFor(box, path); n != 3 {
			t.Errorf("the stand-in saw %d attempts, want 3 (1 + BOXPROXY_UPSTREAM_RETRIES=2)", n)
		}
	})

	t.Run("GET 429 Retry-After 3600 waits the 10s cap", func(t *testing.T) {
		t.Parallel()
		path := "/2.0/test/echo/retry-429"
		box.Inject(path, 1, fakebox.Injected{Status: 429, Header: hardRetryAfter("3600"), Body: hardBoxErrorBody(429, "rate_limit_exceeded")})
		start := time.Now()
		resp, body := p.DoWith(t, client, p.Request(t, http.MethodGet, path, nil))
		took := time.Since(start)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET = %d %s, want 200 after one capped wait", resp.StatusCode, body)
		}
		// At least the cap, and far below the hour asked for (the upper bound
		// leaves room for a busy machine).
		if took < 9*time.Second || took > 30*time.Second {
			t.Errorf("the answer took %s, want about 10s (Retry-After 3600 capped at 10s)", took)
		}
		if n := hardRequestsFor(box, path); n != 2 {
			t.Errorf("the stand-in saw %d attempts, want 2", n)
		}
	})
}

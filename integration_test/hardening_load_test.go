package integration_test

// Issue 6: revocations and expiries under load; clients that disconnect
// mid-transfer. Bounded in count and time, on 127.0.0.1 only.

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/boxproxy/boxproxy/fakebox"
)

// ---------------------------------------------------------------- 2. revocation and expiry under load

// Box revokes every token at random moments while tokens also expire every
// few seconds and 16 clients send requests as 8 subjects: no client request
// fails (the proxy gets a new token and sends the request again), and Box
// sees about one token request per subject per revocation or expiry, not one
// per request.
func TestHardRevocationsAndExpiriesUnderLoadFailNoRequestAndCostAboutOneTokenRequestPerSubjectEach(t *testing.T) {
	t.Parallel()
	const (
		ttl      = 3 * time.Second
		duration = 7 * time.Second
		workers  = 16
	)
	extra := []string{"2101", "2102", "2103", "2104"}
	box := startBox(t, func(c *fakebox.Config) {
		c.TokenTTL = ttl
		for _, id := range extra {
			c.Users = append(c.Users, fakebox.User{ID: id})
		}
	})
	p := startProxy(t, box, ccgEnv(box)...)
	subjects := append([]string{"", userAlice, userBob, userCarol}, extra...)
	client := hardClient(t, 30*time.Second, workers*2)

	var (
		ok, failed  atomic.Int64
		mu          sync.Mutex
		failures    []string
		revocations atomic.Int64
		wg          sync.WaitGroup
	)
	start := time.Now()
	stop := start.Add(duration)
	done := make(chan struct{})
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(500*time.Millisecond + rand.N(time.Second)):
			}
			if time.Now().After(stop) {
				return
			}
			box.RevokeAll()
			revocations.Add(1)
		}
	})
	var workersWG sync.WaitGroup
	for w := range workers {
		workersWG.Go(func() {
			for i := w; time.Now().Before(stop); i++ {
				as := subjects[i%len(subjects)]
				want := as
				if want == "" {
					want = testServiceAccountID
				}
				req := p.Request(t, http.MethodGet, "/2.0/users/me", nil, hardAsUser(as)...)
				resp, err := client.Do(req)
				var body []byte
				if err == nil {
					body, err = io.ReadAll(resp.Body)
					_ = resp.Body.Close()
				}
				switch {
				case err == nil && resp.StatusCode == http.StatusOK && strings.Contains(string(body), `"id":"`+want+`"`):
					ok.Add(1)
				default:
					failed.Add(1)
					mu.Lock()
					if len(failures) < 10 {
						if err != nil {
							failures = append(failures, fmt.Sprintf("as %q: %v", as, err))
						} else {
							failures = append(failures, fmt.Sprintf("as %q: %d %s", as, resp.StatusCode, body))
						}
					}
					mu.Unlock()
				}
			}
		})
	}
	workersWG.Wait()
	close(done)
	wg.Wait()
	elapsed := time.Since(start)

	trs := box.TokenRequests()
	for _, tr := range trs {
		if !tr.OK {
			t.Errorf("a token request failed: %+v", tr)
		}
	}
	unauthorized := 0
	for _, r := range box.Requests() {
		if r.Status == http.StatusUnauthorized {
			unauthorized++
		}
	}
	revs := int(revocations.Load())
	// A token is renewed ahead of its expiry, from about 70% of its life on.
	expiries := int(elapsed/(ttl*7/10)) + 1
	bound := len(subjects) * (revs + expiries + 2) * 2
	t.Logf("%s: %d requests ok, %d failed; %d revocations, up to %d expiries per subject; %d token requests (bound %d); Box answered %d 401s",
		elapsed.Round(time.Millisecond), ok.Load(), failed.Load(), revs, expiries, len(trs), bound, unauthorized)

	if failed.Load() != 0 {
		t.Errorf("%d of %d client requests failed, want 0; first failures:\n%s", failed.Load(), ok.Load()+failed.Load(), strings.Join(failures, "\n"))
	}
	if revs < 3 {
		t.Errorf("only %d revocations happened; the test did not test much", revs)
	}
	if len(trs) < len(subjects) || len(trs) > bound {
		t.Errorf("%d token requests for %d subjects, %d revocations and %d expiries, want between %d and %d",
			len(trs), len(subjects), revs, expiries, len(subjects), bound)
	}
	if int64(len(trs))*10 > ok.Load() {
		t.Errorf("%d token requests for %d client requests: tokens are not being reused", len(trs), ok.Load())
	}
}

// ---------------------------------------------------------------- 4. client disconnects

// hardCountFDs is the number of open file descriptors of this process.
func hardCountFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count file descriptors: %v", err)
	}
	return len(ents)
}

// hardInFlight reads boxproxy_requests_in_flight from the proxy's /metrics.
func hardInFlight(t testing.TB, p *testProxy) int {
	t.Helper()
	_, body := p.Get(t, "/metrics")
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "boxproxy_requests_in_flight "); ok {
			n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("cannot parse %q", line)
			}
			return int(n) - 1 // the scrape itself is in flight
		}
	}
	t.Fatalf("/metrics has no boxproxy_requests_in_flight:\n%s", body)
	return 0
}

const (
	hardDownloadSize = 200 << 20 // what the stand-in would send
	hardUploadSize   = 64 << 20  // what the client announces (more than BOXPROXY_RETRY_BODY_LIMIT: streamed)
)

// hardAbortDownload asks for a 200 MiB download, reads 1 MiB of the answer and hangs up.
func hardAbortDownload(t testing.TB, addr string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(conn, "GET /2.0/test/bytes?n=%d HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", hardDownloadSize)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("download: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("download: status %d", resp.StatusCode)
	}
	if _, err := io.CopyN(io.Discard, resp.Body, 1<<20); err != nil {
		t.Fatalf("download: reading the first MiB: %v", err)
	}
}

// hardAbortUpload announces a 64 MiB upload, sends 2 MiB of it, waits until
// forwarded() and hangs up.
func hardAbortUpload(t testing.TB, addr string, forwarded func() bool) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(conn, "PUT /2.0/test/echo/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", hardUploadSize)
	chunk := make([]byte, 64<<10)
	for range (2 << 20) / len(chunk) {
		if _, err := conn.Write(chunk); err != nil {
			t.Fatalf("upload: %v", err)
		}
	}
	waitUntil(t, 5*time.Second, forwarded, "the upload reached the stand-in")
}

// A client that hangs up in the middle of an upload or a download ends the
// upstream request at once, and over many such requests no goroutine and no
// file descriptor is left behind.
func TestHardClientDisconnectsMidTransferCancelTheUpstreamRequestAndLeakNothing(t *testing.T) {
	// Not parallel: it counts the goroutines and descriptors of the whole
	// process, which parallel tests would disturb.
	const rounds = 25 // 25 downloads + 25 uploads
	box := startBox(t)
	p := startProxy(t, box, ccgEnv(box)...)

	// Warm up: the default token, one complete download and upload.
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	if resp, body := p.DoWith(t, client, p.Request(t, http.MethodGet, "/2.0/test/bytes?n=1048576", nil)); resp.StatusCode != 200 || len(body) != 1<<20 {
		t.Fatalf("warm-up download: %d, %d bytes", resp.StatusCode, len(body))
	}
	if resp, body := p.DoWith(t, client, p.Request(t, http.MethodPut, "/2.0/test/echo/upload", strings.NewReader(strings.Repeat("x", 1<<20)))); resp.StatusCode != 200 {
		t.Fatalf("warm-up upload: %d %s", resp.StatusCode, body)
	}
	waitUntil(t, 5*time.Second, func() bool { return box.ActiveRequests() == 0 }, "the warm-up requests are done")
	time.Sleep(100 * time.Millisecond)
	baseFDs, baseG := hardCountFDs(t), runtime.NumGoroutine()
	ignoreBefore := goleak.IgnoreCurrent()
	downloads0, uploads0 := hardRequestsFor(box, "/2.0/test/bytes"), hardRequestsFor(box, "/2.0/test/echo/upload")

	var slowest time.Duration
	settle := func(what string) {
		start := time.Now()
		waitUntil(t, 3*time.Second, func() bool { return box.ActiveRequests() == 0 }, "the stand-in has no request left after a client hung up mid-"+what)
		slowest = max(slowest, time.Since(start))
	}
	for i := range rounds {
		hardAbortDownload(t, p.Addr)
		settle("download")
		hardAbortUpload(t, p.Addr, func() bool { return hardRequestsFor(box, "/2.0/test/echo/upload")-uploads0 > i })
		settle("upload")
	}
	t.Logf("the stand-in's handlers ended at most %s after the client hung up", slowest.Round(time.Millisecond))

	if n := hardRequestsFor(box, "/2.0/test/bytes") - downloads0; n != rounds {
		t.Errorf("the stand-in saw %d downloads, want %d", n, rounds)
	}
	for _, r := range box.Requests() {
		if r.Path == "/2.0/test/echo/upload" && r.BodyLen >= hardUploadSize {
			t.Errorf("an abandoned upload reached the stand-in whole (%d bytes)", r.BodyLen)
		}
	}
	if n := hardRequestsFor(box, "/2.0/test/echo/upload") - uploads0; n != rounds {
		t.Errorf("the stand-in saw %d uploads, want %d", n, rounds)
	}

	// goleak retries for about half a second only; a closing server
	// connection alone sleeps that long (net/http's RST avoidance).
	deadline := time.Now().Add(5 * time.Second)
	for err := goleak.Find(ignoreBefore); err != nil; err = goleak.Find(ignoreBefore) {
		if time.Now().After(deadline) {
			t.Errorf("goroutines leaked after %d abandoned transfers: %v", 2*rounds, err)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	waitUntil(t, 5*time.Second, func() bool { return runtime.NumGoroutine() <= baseG+2 }, fmt.Sprintf("the goroutines (%d before) settle", baseG))
	waitUntil(t, 5*time.Second, func() bool { return hardCountFDs(t) <= baseFDs+2 }, fmt.Sprintf("the file descriptors (%d before) settle", baseFDs))
}

// A download whose client hangs up still gets its access-log line and its
// count in boxproxy_requests_total, and leaves boxproxy_requests_in_flight
// where it was.
func TestHardAbortedDownloadIsLoggedAndCountedAndLeavesNothingInFlight(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	p := startProxy(t, box, ccgEnv(box)...)
	if resp, body := p.Get(t, "/2.0/users/me"); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /2.0/users/me = %d %s", resp.StatusCode, body)
	}
	hardAbortDownload(t, p.Addr)
	waitUntil(t, 3*time.Second, func() bool { return box.ActiveRequests() == 0 }, "the stand-in's download handler ended")
	waitUntil(t, 3*time.Second, func() bool { return hardInFlight(t, p) == 0 }, "boxproxy_requests_in_flight is back to 0")
	waitUntil(t, 3*time.Second, func() bool {
		for _, l := range p.AccessLines(t) {
			if l["path"] == "/2.0/test/bytes" {
				if b, _ := l["bytes"].(float64); b >= hardDownloadSize {
					t.Errorf("the proxy sent all %v bytes of a download whose client had hung up", b)
				}
				return true
			}
		}
		return false
	}, "the aborted download has an access-log line")
}

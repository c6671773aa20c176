package integration_test

// Graceful shutdown and the token requests in flight: SIGTERM while an oauth
// refresh is at Box must not lose the login. Box rotates the refresh token
// when it handles the refresh; the answer is the only copy of the new one, so
// the process must wait for it and save it before it exits.

import (
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/boxproxy/boxproxy/fakebox"
	"github.com/boxproxy/boxproxy/internal/redistest"
)

// refreshAtBox sends requests through p until the stand-in has rotated the
// refresh token once more than before (its answer is then held back by the
// stand-in's answer delay), and returns when it has.
func refreshAtBox(t *testing.T, box *fakebox.Box, p *binaryProxy, before int) {
	t.Helper()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c := &http.Client{Timeout: 20 * time.Second}
		for {
			select {
			case <-stop:
				return
			default:
			}
			// Asynchronously: a request that waits for the refresh (its
			// token expired) must not hold the others back.
			go func() {
				if resp, err := c.Get(p.URL + "/2.0/users/me"); err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}()
			time.Sleep(50 * time.Millisecond)
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	waitUntil(t, 15*time.Second, func() bool {
		ok, _ := grantRequests(box, "refresh_token")
		return ok > before
	}, "a refresh reaches the stand-in")
}

// meAfterRestart asks /2.0/users/me for a while (past the life of every
// access token issued before the restart, so that a refresh is needed) and
// fails on anything but 200 (a 401 is asked again: short-lived tokens may
// expire on their way on a loaded machine).
func meAfterRestart(t *testing.T, base string, stderr func() string) {
	t.Helper()
	c := &http.Client{Timeout: 20 * time.Second}
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		for attempt := 0; ; attempt++ {
			resp, err := c.Get(base + "/2.0/users/me")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
			if resp.StatusCode != http.StatusUnauthorized || attempt == 3 {
				t.Fatalf("after the restart: /2.0/users/me %d %s\nstderr of the stopped process:\n%s", resp.StatusCode, body, stderr())
			}
		}
	}
}

func TestShutdownSIGTERMWhileAnOAuthRefreshIsAtBoxWaitsForItsAnswerAndKeepsTheLogin(t *testing.T) {
	for _, fleet := range []bool{false, true} {
		name := "token store file"
		if fleet {
			name = "fleet replica"
		}
		t.Run(name, func(t *testing.T) {
			cpuHeavy(t)
			// Tokens of 6 s: renewed ahead of expiry 4.2–4.8 s into their
			// life, so that the renewal is still at Box (held 4 s) when the
			// signal comes, and its token still has life when it arrives.
			box := startBox(t, func(c *fakebox.Config) { c.TokenTTL = 6 * time.Second })
			store := filepath.Join(t.TempDir(), "tokens.json")
			var r *redistest.Server
			start := func() *binaryProxy {
				t.Helper()
				if fleet {
					return oauthReplica(t, box, r, store)
				}
				addr := freeAddr(t)
				return startBinary(t, box, append(oauthEnv(box, store), "BOXPROXY_LISTEN="+addr, "BOXPROXY_PUBLIC_URL=http://"+addr)...)
			}
			if fleet {
				r = redistest.Start(t)
			}
			p := start()
			if status, page := newOAuthBrowser(t).login(p.URL, box); status != http.StatusOK {
				t.Fatalf("login: %d\n%s", status, page)
			}
			before, _ := grantRequests(box, "refresh_token")

			// Box handles the next refresh at once (the refresh token
			// rotates) and answers 4 s later.
			const hold = 4 * time.Second
			box.SetTokenAnswerDelay(hold)
			refreshAtBox(t, box, p, before)
			sent := time.Now()
			if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			opsWaitExit(t, p, 30*time.Second)
			took := time.Since(sent)
			box.SetTokenAnswerDelay(0)
			if p.waitErr != nil {
				t.Fatalf("boxproxy exited with %v after SIGTERM, want 0\nstderr:\n%s", p.waitErr, p.Stderr)
			}
			logs := p.Stderr.String()
			saved := strings.Contains(logs, "refreshed; new refresh token saved")
			if !saved {
				t.Errorf("boxproxy exited %s after SIGTERM without saving the refresh that Box had answered (held %s)\nstderr:\n%s", took.Round(time.Millisecond), hold, logs)
			}
			if took < hold/2 {
				t.Errorf("boxproxy exited %s after SIGTERM, before the held answer (%s) can have arrived", took, hold)
			}
			if !strings.Contains(logs, "shutdown: waiting for") {
				t.Errorf("no log line says what the shutdown waits for")
			}
			if saved {
				t.Logf("exited %s after SIGTERM, once the refresh held %s at Box was answered and saved", took.Round(time.Millisecond), hold)
			}

			q := start() // a restart on the same store (file or Redis)
			meAfterRestart(t, q.URL, p.Stderr.String)
			if ok, failed := grantRequests(box, "refresh_token"); failed != 0 || ok < before+2 {
				t.Fatalf("refreshes: %d ok, %d rejected; want none rejected (the stored refresh token must be the one Box issued last) and one after the restart", ok-before, failed)
			}
			if fleet {
				checkRedisHoldsNoSecret(t, r, box)
			}
		})
	}
}

func TestShutdownSIGTERMWhileAFleetRenewalIsAtBoxSharesItsTokenBeforeClosingRedis(t *testing.T) {
	cpuHeavy(t)
	// Tokens of 10 s: renewed 7–8 s into their life; the renewal's token,
	// held 4 s at Box, is then still fresh for the fleet for a few seconds.
	box := startBox(t, func(c *fakebox.Config) { c.TokenTTL = 10 * time.Second })
	r := redistest.Start(t)
	p := startReplica(t, box, r, ccgEnv(box)...)
	if status, body := meAs(t, p.URL); status != http.StatusOK {
		t.Fatalf("first request: %d %s", status, body)
	}
	before, _ := grantRequests(box, "client_credentials")
	const hold = 4 * time.Second
	box.SetTokenAnswerDelay(hold)
	waitUntil(t, 15*time.Second, func() bool {
		_, _ = fleetGet(t, p.URL, "/2.0/users/me")
		ok, _ := grantRequests(box, "client_credentials")
		return ok > before
	}, "the renewal ahead of expiry reaches the stand-in")
	sent := time.Now()
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	opsWaitExit(t, p, 30*time.Second)
	took := time.Since(sent)
	box.SetTokenAnswerDelay(0)
	if p.waitErr != nil {
		t.Fatalf("boxproxy exited with %v after SIGTERM, want 0\nstderr:\n%s", p.waitErr, p.Stderr)
	}
	logs := p.Stderr.String()
	if took < hold/2 || !strings.Contains(logs, "shutdown: the token requests in flight have ended") {
		t.Errorf("boxproxy exited %s after SIGTERM without waiting for the renewal at Box (held %s)", took.Round(time.Millisecond), hold)
	}
	if strings.Contains(logs, "cannot share a new token through Redis") {
		t.Errorf("the renewal could not write its token to Redis: closed before it?")
	}
	// The renewal's token is in Redis: a replica started now takes it
	// without asking Box.
	q := startReplica(t, box, r, ccgEnv(box)...)
	if status, body := meAs(t, q.URL); status != http.StatusOK {
		t.Fatalf("a replica started after the stop: %d %s", status, body)
	}
	if ok, _ := grantRequests(box, "client_credentials"); ok != before+1 {
		t.Errorf("%d token requests after the stop, want 0: the renewal's token should have been shared through Redis", ok-before-1)
	}
	checkRedisHoldsNoSecret(t, r, box)
}

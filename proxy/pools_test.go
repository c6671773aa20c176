package proxy

import (
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/boxproxy/boxproxy/auth"
)

// usersPerConn is an upstream that notes which As-User each of its
// connections carried.
type usersPerConn struct {
	mu    sync.Mutex
	seen  map[string]map[string]bool // remote address -> As-User values
	proto map[string]bool
}

func (u *usersPerConn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	if u.seen[r.RemoteAddr] == nil {
		u.seen[r.RemoteAddr] = map[string]bool{}
	}
	u.seen[r.RemoteAddr][r.Header.Get("As-User")] = true
	u.proto[r.Proto] = true
	u.mu.Unlock()
	_, _ = io.WriteString(w, "{}")
}

func poolsProxy(t *testing.T, upstream string, rt *http.Transport) *Proxy {
	t.Helper()
	u, _ := url.Parse(upstream)
	pub, _ := url.Parse("http://127.0.0.1:8080")
	p, err := New(Options{
		API: u, Upload: u, Public: pub,
		Tokens:         &fixedTokens{tok: auth.NewToken("T", time.Now().Add(time.Hour))},
		DefaultSubject: auth.Subject{Type: auth.Enterprise, ID: "1"},
		AsUserToken:    false, RetryBodyLimit: 1 << 20, Transport: rt, Logger: zerolog.Nop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func drive(t *testing.T, p *Proxy, users []string, n int) {
	t.Helper()
	var wg sync.WaitGroup
	for _, user := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range n {
				r := httptest.NewRequest(http.MethodGet, "/2.0/users/me", nil)
				r.Header.Set("As-User", user)
				w := httptest.NewRecorder()
				p.ServeHTTP(w, r)
				if w.Code != http.StatusOK {
					t.Errorf("%s: %d", user, w.Code)
				}
			}
		}()
	}
	wg.Wait()
}

// Over HTTP/1.1 no connection carries two users' requests, so a stray
// answer can never reach another user.
func TestHTTP1ConnectionsAreNeverSharedBetweenUsers(t *testing.T) {
	up := &usersPerConn{seen: map[string]map[string]bool{}, proto: map[string]bool{}}
	srv := httptest.NewServer(up)
	defer srv.Close()
	rt, err := NewTransport(TransportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	drive(t, poolsProxy(t, srv.URL, rt), []string{"11", "22", "33", "44"}, 50)
	for addr, users := range up.seen {
		if len(users) != 1 {
			t.Errorf("connection %s carried requests of %d users: %v", addr, len(users), users)
		}
	}
	if len(up.seen) < 4 {
		t.Errorf("%d connections for 4 users", len(up.seen))
	}
}

// Over HTTP/2 too: a host that answered over HTTP/2 may agree HTTP/1.1 on
// its next connection, so users never share.
func TestHTTP2ConnectionsAreNotSharedEither(t *testing.T) {
	up := &usersPerConn{seen: map[string]map[string]bool{}, proto: map[string]bool{}}
	srv := httptest.NewUnstartedServer(up)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	rt, err := NewTransport(TransportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rt.TLSClientConfig = &tls.Config{RootCAs: srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs}
	drive(t, poolsProxy(t, srv.URL, rt), []string{"11", "22", "33", "44"}, 20)
	if !up.proto["HTTP/2.0"] {
		t.Fatalf("protocols seen: %v, want HTTP/2.0", up.proto)
	}
	for addr, users := range up.seen {
		if len(users) != 1 {
			t.Errorf("connection %s carried requests of %d users: %v", addr, len(users), users)
		}
	}
}

// Token requests never reuse a connection, whatever its protocol (a stray
// answer could carry another subject's token).
func TestTokenRequestsTakeAConnectionEach(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		up := &usersPerConn{seen: map[string]map[string]bool{}, proto: map[string]bool{}}
		srv, rt := startUpstream(t, up, h2)
		c := &http.Client{Transport: OneRequestPerConnection(rt)}
		for range 5 {
			resp, err := c.Post(srv.URL+"/oauth2/token", "application/x-www-form-urlencoded", nil)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
		}
		srv.Close()
		if got := len(up.seen); got != 5 {
			t.Errorf("HTTP/2 %v: %d connections for 5 token requests, want 5", h2, got)
		}
	}
}

func TestPoolsKeepTheMostRecentUsersAndDropTheLeastRecent(t *testing.T) {
	p := newPools(&http.Transport{})
	first := p.forUser("user:1")
	if p.forUser("user:1") != first {
		t.Fatal("the same user got a second Transport")
	}
	for i := 2; i <= maxUserPools; i++ {
		p.forUser("user:" + strconv.Itoa(i))
	}
	if p.forUser("user:1") != first { // renewed: now the most recent
		t.Fatal("user:1 lost its Transport while fewer than maxUserPools users were kept")
	}
	p.forUser("user:new") // evicts the least recent: user:2
	if p.users.Len() != maxUserPools {
		t.Fatalf("%d Transports kept, want %d", p.users.Len(), maxUserPools)
	}
	if _, ok := p.users.Peek("user:2"); ok {
		t.Error("the least recently used user's Transport was kept beyond maxUserPools")
	}
	if p.forUser("user:1") != first {
		t.Error("a recently used user's Transport was dropped")
	}
}

func TestPoolsNeverHandOutADroppedTransport(t *testing.T) {
	p := newPools(&http.Transport{})
	first := p.forUser("user:1") // now the last one used
	p.users.Remove("user:1")     // as an eviction does: its idle connections are closed
	if p.forUser("user:1") == first {
		t.Fatal("a Transport dropped from the pools was handed out again")
	}
}

// Box's answer fields change hands onto the client's answer (deliver): over
// HTTP/1.1 and HTTP/2, with many users at once, every answer carries the
// fields of its own user's answer and no other's.
func TestAnswerFieldsStayWithTheirUser(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		srv, rt := startUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			u := r.Header.Get("As-User")
			w.Header()["X-User"] = []string{u, "again-" + u}
			w.Header()["Box-Request-Id"] = []string{"req-" + u}
			w.Header()["Vary"] = []string{"As-User"}
			_, _ = io.WriteString(w, `{"id":"`+u+`"}`)
		}), h2)
		front := httptest.NewServer(poolsProxy(t, srv.URL, rt))
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
		var wg sync.WaitGroup
		for i := range 8 {
			user := strconv.Itoa(101 + i)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 30 {
					req, _ := http.NewRequest(http.MethodGet, front.URL+"/2.0/users/me", nil)
					req.Header.Set("As-User", user)
					resp, err := client.Do(req)
					if err != nil {
						t.Error(err)
						return
					}
					body, _ := io.ReadAll(resp.Body)
					_ = resp.Body.Close()
					h := resp.Header
					if got := strings.Join(h["X-User"], ","); got != user+",again-"+user || h.Get("Box-Request-Id") != "req-"+user ||
						h.Get("Vary") != "As-User" || string(body) != `{"id":"`+user+`"}` {
						t.Errorf("HTTP/2 %v, user %s got X-User %q, Box-Request-Id %q, Vary %q, body %s", h2, user, got, h.Get("Box-Request-Id"), h["Vary"], body)
						return
					}
				}
			}()
		}
		wg.Wait()
		front.Close()
		srv.Close()
	}
}

// startUpstream starts h as a plain HTTP upstream, or over TLS offering
// HTTP/2, and returns it with boxproxy's Transport set to trust it.
func startUpstream(t *testing.T, h http.Handler, h2 bool) (*httptest.Server, *http.Transport) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	rt, err := NewTransport(TransportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h2 {
		srv.EnableHTTP2 = true
		srv.StartTLS()
		rt.TLSClientConfig = &tls.Config{RootCAs: srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs}
	} else {
		srv.Start()
	}
	return srv, rt
}

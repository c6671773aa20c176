package integration_test

// An upstream that sends bytes nobody asked for must never make one user's
// answer reach another: net/http's Transport drops such a connection.

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/boxproxy/boxproxy/fakebox"
)

// strayUpstream is a raw HTTP/1.1 server (plain or TLS) that answers every
// request with the bearer token it carried, and misbehaves after the
// answer as mode says.
type strayUpstream struct {
	URL  string
	ln   net.Listener
	mode string
	wg   sync.WaitGroup
}

func startStrayUpstream(t *testing.T, mode string, useTLS bool) *strayUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &strayUpstream{ln: ln, mode: mode, URL: "http://" + ln.Addr().String()}
	if useTLS {
		// Any stand-in's certificate will do: they share the process's CA.
		box, err := fakebox.Start(fakebox.Config{ClientID: "x", ClientSecret: "y", EnterpriseID: "1", TLS: true})
		if err != nil {
			t.Fatal(err)
		}
		cert := box.TLSCertificate()
		box.Close()
		u.ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}})
		u.URL = "https://" + ln.Addr().String()
	}
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		for {
			c, err := u.ln.Accept()
			if err != nil {
				return
			}
			u.wg.Add(1)
			go func() { defer u.wg.Done(); u.serve(c) }()
		}
	}()
	t.Cleanup(func() { _ = u.ln.Close(); u.wg.Wait() })
	return u
}

func answer(status int, body string) string {
	return fmt.Sprintf("HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", status, http.StatusText(status), len(body), body)
}

func (u *strayUpstream) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, req.Body)
		tok := strings.TrimPrefix(req.Header.Get("Authorization"), "Bearer ")
		body := `{"token":"` + tok + `"}`
		var out string
		switch u.mode {
		case "late second answer":
			_, _ = io.WriteString(c, answer(200, body))
			out = answer(200, body) // nobody asked for this one (a write of its own)
		case "body on 204":
			if req.URL.Query().Get("n") == "1" { // every other request is answered 204, with a body
				out = "HTTP/1.1 204 No Content\r\n\r\n" + answer(200, body)
			} else {
				out = answer(200, body)
			}
		case "more than Content-Length":
			out = answer(200, body) + answer(200, body)
		case "more than Content-Length, large body":
			big := `{"token":"` + tok + `","pad":"` + strings.Repeat("x", 80<<10) + `"}`
			out = answer(200, big) + answer(200, big)
		case "408 on idle":
			_, _ = io.WriteString(c, answer(200, body))
			out = "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
		}
		if _, err := io.WriteString(c, out); err != nil {
			return
		}
		if u.mode == "408 on idle" {
			return
		}
	}
}

// The stray bytes come right after an answer. net/http drops a connection
// on which bytes arrive while it is idle; bytes still in flight when the
// connection serves the next request (the large bodies, a busy machine) are
// read as that request's answer, which is why boxproxy keeps HTTP/1.x
// connections apart per user (proxy/pools.go): they can then only reach the
// same user.
func TestStrayUpstreamBytesNeverGiveOneUserAnothersAnswer(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	users := []string{userAlice, userBob, userCarol}
	// Which user each token is for, asked of the stand-in once per token.
	var mu sync.Mutex
	owner := map[string]string{}
	ownerOf := func(tok string) string {
		mu.Lock()
		defer mu.Unlock()
		if o, ok := owner[tok]; ok {
			return o
		}
		req, _ := http.NewRequest(http.MethodGet, box.APIURL()+"/2.0/users/me", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := box.Client().Do(req)
		if err != nil {
			return "?"
		}
		defer resp.Body.Close()
		var me struct {
			ID string `json:"id"`
		}
		if err := jsonDecode(resp.Body, &me); err != nil {
			return "?"
		}
		owner[tok] = me.ID
		return me.ID
	}
	modes := []string{"late second answer", "body on 204", "more than Content-Length", "more than Content-Length, large body", "408 on idle"}
	for _, useTLS := range []bool{false, true} {
		for _, mode := range modes {
			name := mode
			if useTLS {
				name += " over TLS"
			}
			t.Run(name, func(t *testing.T) {
				up := startStrayUpstream(t, mode, useTLS)
				p := startProxy(t, box, append(ccgEnv(box), "BOXPROXY_API_URL="+up.URL)...)
				var wg sync.WaitGroup
				var crossed, ok, clean502 int
				var cmu sync.Mutex
				for _, user := range users {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := 0; i < 15; i++ {
							resp, body := p.Get(t, fmt.Sprintf("/2.0/users/me?n=%d", i%2), "As-User", user)
							cmu.Lock()
							switch {
							case resp.StatusCode == http.StatusNoContent && len(body) == 0:
								ok++
							case resp.StatusCode == http.StatusRequestTimeout && mode == "408 on idle":
								clean502++ // the upstream's own refusal, raced with a request: no one's data
							case resp.StatusCode == http.StatusBadGateway && strings.Contains(string(body), `"type":"error"`):
								clean502++
							case resp.StatusCode == http.StatusOK:
								var got struct {
									Token string `json:"token"`
								}
								if err := jsonDecode(strings.NewReader(string(body)), &got); err != nil {
									t.Errorf("%s: answer %q is not one whole answer: %v", user, body, err)
								} else if o := ownerOf(got.Token); o != user {
									crossed++
									t.Errorf("As-User %s received an answer made for user %s", user, o)
								} else {
									ok++
								}
							default:
								t.Errorf("%s: %d %s", user, resp.StatusCode, body)
							}
							cmu.Unlock()
						}
					}()
				}
				wg.Wait()
				if crossed > 0 || ok == 0 {
					t.Fatalf("%d answers crossed users, %d right, %d clean 502s", crossed, ok, clean502)
				}
				t.Logf("%d right answers, %d clean 502s, none crossed", ok, clean502)
			})
		}
	}
}

func jsonDecode(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }

package proxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/boxproxy/boxproxy/auth"
)

type rotTokens struct {
	mu  sync.Mutex
	gen int
}

func (r *rotTokens) Token(context.Context, auth.Subject) (auth.Token, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return auth.NewToken(fmt.Sprintf("T%d", r.gen), time.Now().Add(time.Hour)), nil
}
func (r *rotTokens) Invalidate(auth.Subject, string) bool {
	r.mu.Lock()
	r.gen++
	r.mu.Unlock()
	return true
}
func (r *rotTokens) Refreshable() bool { return true }

// An upstream that refuses the token before the body, but (unlike Go's
// server) keeps the connection: net/http's Transport then sends the body
// anyway, racing the replay.
func TestEarly401FromAKeepAliveUpstreamIsReplayed(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					if req.Header.Get("Authorization") == "Bearer T0" {
						io.WriteString(c, "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
						_, _ = io.Copy(io.Discard, req.Body) // the client must send it: keep-alive
						continue
					}
					if strings.EqualFold(req.Header.Get("Expect"), "100-continue") {
						io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n")
					}
					n, _ := io.Copy(io.Discard, req.Body)
					fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%d", len(fmt.Sprint(n)), n)
				}
			}(c)
		}
	}()
	ok, fail := 0, 0
	for i := 0; i < 10; i++ {
		p := newTestProxy(t, "http://"+ln.Addr().String(), nil)
		p.o.Tokens = &rotTokens{}
		front := httptest.NewServer(p)
		body := bytes.Repeat([]byte("x"), 4<<20)
		resp, err := http.Post(front.URL+"/api/2.0/files/content", "application/octet-stream", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		front.Close()
		if resp.StatusCode == 200 && string(b) == fmt.Sprint(len(body)) {
			ok++
		} else {
			fail++
			t.Logf("try %d: %d %q", i, resp.StatusCode, b)
		}
	}
	if fail > 0 {
		t.Fatalf("replayed %d, failed %d: a 401 before the body must be replayed", ok, fail)
	}
}

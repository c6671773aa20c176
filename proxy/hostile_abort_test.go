package proxy

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// A client that hangs up mid-upload: is it logged as Box's failure?
func TestClientHangingUpMidUploadIsA499NotBoxsFault(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	defer up.Close()
	p := newTestProxy(t, up.URL, nil)
	var logs syncBuf
	p.o.Logger = zerolog.New(&logs)
	status := make(chan int, 1)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		_ = rec
		sw := &statusW{ResponseWriter: w}
		p.ServeHTTP(sw, r)
		status <- sw.code
	}))
	defer front.Close()
	c, _ := net.Dial("tcp", front.Listener.Addr().String())
	fmt.Fprintf(c, "POST /api/2.0/files/content HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", 20<<20)
	c.Write(make([]byte, 2<<20))
	time.Sleep(200 * time.Millisecond)
	c.Close()
	select {
	case s := <-status:
		if s != 499 || strings.Contains(logs.String(), "upstream request failed") {
			t.Fatalf("a client that hung up mid-upload: status %d, logs %s; want 499 and no blame on Box", s, logs.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no end")
	}
}

type statusW struct {
	http.ResponseWriter
	code int
}

func (s *statusW) WriteHeader(c int) {
	if s.code == 0 && c >= 200 {
		s.code = c
	}
	s.ResponseWriter.WriteHeader(c)
}
func (s *statusW) Unwrap() http.ResponseWriter { return s.ResponseWriter }

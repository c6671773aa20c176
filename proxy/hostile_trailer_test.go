package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
)

// Request trailers are not filtered by dropFields: Cookie, Authorization,
// As_User, As-User reach Box as trailers.
func TestTrailersNeverCarryWhatHeadersMayNot(t *testing.T) {
	got := make(chan http.Header, 4)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		got <- r.Trailer
		w.Header().Set("Trailer", "Set-Cookie")
		w.WriteHeader(200)
		w.Header().Set("Set-Cookie", "box=1")
	}))
	defer up.Close()
	p := newTestProxy(t, up.URL, nil)
	front := httptest.NewServer(p)
	defer front.Close()
	for _, size := range []int{10, 2 << 20} { // kept, streamed
		c, err := net.Dial("tcp", front.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "POST /2.0/files HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: Cookie, Authorization, As-User, As_User\r\n\r\n%x\r\n", size)
		buf := make([]byte, size)
		c.Write(buf)
		fmt.Fprintf(c, "\r\n0\r\nCookie: session=CLIENT\r\nAuthorization: Bearer CLIENT\r\nAs-User: 999\r\nAs_User: 999\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		c.Close()
		tr := <-got
		t.Logf("size %d: upstream saw trailers %v; client got response trailers %v", size, tr, resp.Trailer)
		if len(tr) > 0 || len(resp.Trailer) > 0 {
			t.Errorf("size %d: trailers crossed the proxy", size)
		}
	}
}

package proxy

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"
)

// keepBody allocates the declared Content-Length before a byte arrives.
func TestDeclaredBodyLengthsDoNotReserveMemory(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer up.Close()
	p := newTestProxy(t, up.URL, nil)
	p.o.RetryBodyLimit = 10 << 20
	front := httptest.NewServer(p)
	defer front.Close()
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	var conns []net.Conn
	for i := 0; i < 20; i++ {
		c, _ := net.Dial("tcp", front.Listener.Addr().String())
		fmt.Fprintf(c, "POST /2.0/files HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\nx", 10<<20)
		conns = append(conns, c)
	}
	time.Sleep(300 * time.Millisecond)
	runtime.ReadMemStats(&m1)
	if grew := (int64(m1.HeapInuse) - int64(m0.HeapInuse)) >> 20; grew > 64 {
		t.Fatalf("20 clients that declared 10 MiB and sent 1 byte each: the heap grew by %d MiB", grew)
	}
	for _, c := range conns {
		c.Close()
	}
}

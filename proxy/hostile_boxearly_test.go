package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
)

// Box answers a streamed upload early (404: the file ID in the path is gone)
// without reading its body. Does the client (still writing 20 MiB) read the
// 404, or get a reset, as with boxproxy's own refusals before Refuse?
func TestBoxsEarlyAnswerToAStreamedUploadReachesTheClient(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(404)
		io.WriteString(w, `{"type":"error","status":404,"code":"not_found"}`)
	}))
	defer up.Close()
	front := httptest.NewServer(newTestProxy(t, up.URL, nil))
	defer front.Close()
	resets, ok := 0, 0
	for i := 0; i < 10; i++ {
		body := bytes.Repeat([]byte("x"), 20<<20)
		resp, err := http.Post(front.URL+"/api/2.0/files/123/content", "application/octet-stream", bytes.NewReader(body))
		if err != nil {
			resets++
			t.Logf("try %d: %v", i, err)
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 404 {
			ok++
		}
	}
	t.Logf("404 read %d, errors %d", ok, resets)
	if resets > 0 {
		t.Errorf("%d of 10 clients got a transport error instead of Box's 404", resets)
	}
}

func TestAClientStillWritingReadsBoxsEarlyAnswer(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(404)
		io.WriteString(w, `{"type":"error","status":404,"code":"not_found"}`)
	}))
	defer up.Close()
	front := httptest.NewServer(newTestProxy(t, up.URL, nil))
	defer front.Close()
	bad := 0
	for i := 0; i < 5; i++ {
		c, err := net.Dial("tcp", front.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "POST /api/2.0/files/123/content HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", 20<<20)
		chunk := make([]byte, 64<<10)
		var werr error
		for n := 0; n < 20<<20; n += len(chunk) {
			if _, werr = c.Write(chunk); werr != nil {
				break
			}
		}
		resp, rerr := http.ReadResponse(bufio.NewReader(c), nil)
		st := 0
		if rerr == nil {
			st = resp.StatusCode
		}
		t.Logf("try %d: write err %v, read err %v, status %d", i, werr, rerr, st)
		if st != 404 || werr != nil {
			bad++
		}
		c.Close()
	}
	if bad > 0 {
		t.Errorf("%d of 5 writing clients did not read Box's 404", bad)
	}
}

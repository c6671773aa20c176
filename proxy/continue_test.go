package proxy

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// Box's 100 Continue (answer to the streamed body's Expect) is relayed by
// ReverseProxy, which then clears the ResponseWriter's header map: what the
// server had set (X-Request-Id, Connection: close for chunked requests) is
// gone from the final answer.
func TestBoxs100ContinueKeepsTheAnswersFields(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // Go's server sends 100 Continue here
		w.WriteHeader(201)
	}))
	defer up.Close()
	p := newTestProxy(t, up.URL, nil)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["X-Request-Id"] = []string{"rid-1"}
		if len(r.TransferEncoding) > 0 {
			w.Header()["Connection"] = []string{"close"}
		}
		p.ServeHTTP(w, r)
	}))
	defer front.Close()
	for _, chunked := range []bool{false, true} {
		body := bytes.Repeat([]byte("x"), 2<<20) // > RetryBodyLimit (1 MiB)
		var rd io.Reader = bytes.NewReader(body)
		if chunked {
			rd = io.MultiReader(rd) // unknown length: chunked
		}
		req, _ := http.NewRequest("POST", front.URL+"/api/2.0/files/content", rd)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		t.Logf("chunked=%v status=%d X-Request-Id=%q Close=%v", chunked, resp.StatusCode, resp.Header.Get("X-Request-Id"), resp.Close)
		if resp.Header.Get("X-Request-Id") == "" {
			t.Errorf("chunked=%v: X-Request-Id lost from the final answer", chunked)
		}
		if chunked && !resp.Close {
			t.Errorf("chunked request: Connection: close lost")
		}
	}
}

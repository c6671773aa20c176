package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestKeptChunkedBodyGoesWithItsLengthAndNoStrayExpect(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		t.Logf("upstream: ContentLength=%d TE=%v Expect=%q", r.ContentLength, r.TransferEncoding, r.Header.Get("Expect"))
	}))
	defer up.Close()
	front := httptest.NewServer(newTestProxy(t, up.URL, nil))
	defer front.Close()
	req, _ := http.NewRequest("POST", front.URL+"/2.0/files", io.MultiReader(strings.NewReader("hello")))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// empty body with the client's own Expect
	req, _ = http.NewRequest("DELETE", front.URL+"/2.0/files/1", nil)
	req.Header.Set("Expect", "100-continue")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

// Command upstream is the stand-in for api.box.com used by bench/run.sh and
// bench/transfer.sh. It is deliberately cheap so that the benchmark measures
// the proxies, not the upstream:
//
//   - any request gets the same ~100-byte JSON body (Content-Length set, no
//     chunking, no logging, no checks);
//   - a request body of any size is read and discarded, and the answer says how
//     many bytes arrived ({"type":"sink","received":N});
//   - GET …/bytes?n=N streams N bytes (for download checks);
//   - GET …/__bench/auth echoes the Authorization header it received, so the
//     bench scripts can verify that a proxy injected the token.
//
// Usage: upstream [-addr 127.0.0.1:9000] [-procs N]   (GOMAXPROCS also works)
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// body is ~100 bytes, the size of a small Box API answer.
var body = []byte(`{"type":"user","id":"11446498","name":"Bench User","login":"bench@example.com","status":"active"}` + "\n")

var (
	bodyLen  = []string{strconv.Itoa(len(body))}
	jsonType = []string{"application/json"}
	octet    = []string{"application/octet-stream"}
	chunk    = make([]byte, 256<<10)
)

func init() {
	for i := range chunk {
		chunk[i] = byte('a' + i%26)
	}
}

func handler(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	p := r.URL.Path

	switch {
	case strings.HasSuffix(p, "/bytes"):
		n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		if err != nil || n < 0 {
			http.Error(w, `{"type":"error","status":400,"message":"n must be a byte count"}`, http.StatusBadRequest)
			return
		}
		io.Copy(io.Discard, r.Body)
		h["Content-Type"] = octet
		h["Content-Length"] = []string{strconv.FormatInt(n, 10)}
		for n > 0 {
			k := int64(len(chunk))
			if n < k {
				k = n
			}
			if _, err := w.Write(chunk[:k]); err != nil {
				return
			}
			n -= k
		}
		return
	case strings.HasSuffix(p, "/__bench/auth"):
		h["Content-Type"] = jsonType
		fmt.Fprintf(w, "{\"authorization\":%q}\n", r.Header.Get("Authorization"))
		return
	}

	if r.ContentLength != 0 { // >0 or -1 (chunked): read and discard everything
		n, _ := io.Copy(io.Discard, r.Body)
		h["Content-Type"] = jsonType
		fmt.Fprintf(w, "{\"type\":\"sink\",\"received\":%d}\n", n)
		return
	}
	h["Content-Type"] = jsonType
	h["Content-Length"] = bodyLen
	w.Write(body)
}

func main() {
	addr := flag.String("addr", "127.0.0.1:9000", "listen address")
	procs := flag.Int("procs", 0, "GOMAXPROCS (0: leave as is; the GOMAXPROCS env variable works too)")
	flag.Parse()
	if *procs > 0 {
		runtime.GOMAXPROCS(*procs)
	}

	srv := &http.Server{
		Addr:              *addr,
		Handler:           http.HandlerFunc(handler),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	srv.SetKeepAlivesEnabled(true)
	fmt.Fprintf(os.Stderr, "upstream listening on %s (GOMAXPROCS=%d)\n", *addr, runtime.GOMAXPROCS(0))
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, "upstream:", err)
		os.Exit(1)
	}
}

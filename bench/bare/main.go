// Command bare is the baseline of bench/run.sh: the least a Go reverse proxy
// in front of Box can do. One httputil.ReverseProxy whose Rewrite points the
// request at the upstream (SetURL) and sets a fixed Authorization header,
// served by net/http and sending through proxy.NewTransport, the very
// http.Transport boxproxy uses (idle pool, HTTP/2 attempt, buffer sizes; the
// system roots, so SSL_CERT_FILE names the trusted certificate, as for
// boxproxy). It lends ReverseProxy 32 KiB copy buffers from a pool, as
// boxproxy does. What boxproxy costs on top of it — admission, routing,
// As-User, the token cache, the field rules, the 401 retry, request IDs, the
// access log and metrics — is boxproxy's own work.
//
// Usage: bare -addr 127.0.0.1:8081 -upstream http://127.0.0.1:9000 [-token T]
package main

import (
	"flag"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/boxproxy/boxproxy/proxy"
)

// buffers lends the 32 KiB buffers ReverseProxy copies bodies with.
type buffers struct{ sync.Pool }

func (b *buffers) Get() []byte  { return *(b.Pool.Get().(*[]byte)) }
func (b *buffers) Put(p []byte) { b.Pool.Put(&p) }

func main() {
	addr := flag.String("addr", "127.0.0.1:8081", "listen address")
	upstream := flag.String("upstream", "", "upstream base URL (http:// or https://)")
	token := flag.String("token", "benchtoken", "bearer token set on every request")
	flag.Parse()
	target, err := url.Parse(*upstream)
	if err != nil || target.Host == "" {
		fmt.Fprintln(os.Stderr, "bare: -upstream must be an absolute URL")
		os.Exit(2)
	}
	rt, err := proxy.NewTransport(proxy.TransportOptions{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "bare:", err)
		os.Exit(1)
	}
	auth := []string{"Bearer " + *token}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Header["Authorization"] = auth
		},
		Transport:  rt,
		BufferPool: &buffers{sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}},
	}
	srv := &http.Server{
		Addr:              *addr,
		Handler:           rp,
		ReadHeaderTimeout: 10 * time.Second, // as boxproxy's server
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	fmt.Fprintf(os.Stderr, "bare proxy on %s -> %s\n", *addr, target)
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, "bare:", err)
		os.Exit(1)
	}
}

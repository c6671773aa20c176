// Command bare is the baseline of bench/run.sh: package baseline's bare
// httputil.ReverseProxy, served by net/http and sending through
// proxy.NewTransport, the very http.Transport boxproxy uses (idle pool,
// HTTP/2 attempt, buffer sizes; the system roots, so SSL_CERT_FILE names the
// trusted certificate, as for boxproxy).
//
// Usage: bare -addr 127.0.0.1:8081 -upstream http://127.0.0.1:9000 [-token T]
package main

import (
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/boxproxy/boxproxy/bench/baseline"
	"github.com/boxproxy/boxproxy/proxy"
)

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
	rp := baseline.New(target, *token, rt)
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

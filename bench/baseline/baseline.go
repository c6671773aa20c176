// Package baseline is the bare proxy that boxproxy is measured against
// (bench/bare, BenchmarkStack): the least a Go reverse proxy in front of Box
// can do. One httputil.ReverseProxy whose Rewrite points the request at the
// upstream (SetURL) and sets a fixed Authorization header, with pooled 32 KiB
// copy buffers, as boxproxy's. What boxproxy costs on top of it — admission,
// routing, As-User, the token cache, the field rules, the 401 retry, request
// IDs, the access log and metrics — is boxproxy's own work.
package baseline

import (
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
)

// New is the bare proxy to target, sending through rt with token.
func New(target *url.URL, token string, rt http.RoundTripper) *httputil.ReverseProxy {
	auth := []string{"Bearer " + token}
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Header["Authorization"] = auth
		},
		Transport:  rt,
		BufferPool: buffers{},
	}
}

// buffers lends 32 KiB buffers; it pools array pointers, so that neither Get
// nor Put allocates.
type buffers struct{}

var pool = sync.Pool{New: func() any { return new([32 << 10]byte) }}

func (buffers) Get() []byte { return pool.Get().(*[32 << 10]byte)[:] }
func (buffers) Put(b []byte) {
	if cap(b) >= 32<<10 {
		pool.Put((*[32 << 10]byte)(b[:32<<10]))
	}
}

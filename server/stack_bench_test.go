package server_test

import (
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"

	"github.com/boxproxy/boxproxy/bench/baseline"
	"github.com/boxproxy/boxproxy/config"
	"github.com/boxproxy/boxproxy/proxy"
	"github.com/boxproxy/boxproxy/server"
)

// BenchmarkStack is one GET through a whole proxy over loopback (client →
// proxy's http.Server → upstream's http.Server, keep-alive), for bench/bare's
// bare httputil.ReverseProxy and for boxproxy's server with a developer
// token: allocs/op of boxproxy minus bare's is what boxproxy's own work
// allocates per request (the client and the upstream are the same for both).
func BenchmarkStack(b *testing.B) {
	b.Run("plain", func(b *testing.B) { benchStack(b, false) })
	b.Run("https", func(b *testing.B) { benchStack(b, true) }) // HTTP/2, as Box offers
}

func benchStack(b *testing.B, https bool) {
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"type":"user","id":"1","name":"bench"}`)
	}))
	ca := ""
	if https {
		up.EnableHTTP2 = true
		up.StartTLS()
		ca = filepath.Join(b.TempDir(), "ca.pem")
		pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: up.Certificate().Raw})
		if err := os.WriteFile(ca, pemBytes, 0o600); err != nil {
			b.Fatal(err)
		}
	} else {
		up.Start()
	}
	defer up.Close()
	target, _ := url.Parse(up.URL)

	b.Run("bare", func(b *testing.B) {
		rt, err := proxy.NewTransport(proxy.TransportOptions{CAFile: ca})
		if err != nil {
			b.Fatal(err)
		}
		runStack(b, baseline.New(target, "benchtoken", rt))
	})
	b.Run("boxproxy", func(b *testing.B) {
		env := []string{
			"BOXPROXY_DEVELOPER_TOKEN=benchtoken",
			"BOXPROXY_API_URL=" + up.URL, "BOXPROXY_UPLOAD_URL=" + up.URL,
			"BOXPROXY_LOG_LEVEL=warn",
		}
		if ca != "" {
			env = append(env, "BOXPROXY_UPSTREAM_CA_FILE="+ca)
		}
		cfg, err := config.Load(env)
		if err != nil {
			b.Fatal(err)
		}
		s, err := server.New(cfg, zerolog.Nop())
		if err != nil {
			b.Fatal(err)
		}
		runStack(b, s)
	})
}

func runStack(b *testing.B, h http.Handler) {
	front := httptest.NewServer(h)
	defer front.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer client.CloseIdleConnections()
	req, _ := http.NewRequest("GET", front.URL+"/2.0/users/me", nil)
	get := func() {
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
	get()
	b.ReportAllocs()
	for b.Loop() {
		get()
	}
}

package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// A host that answered HTTP/2 once, then negotiates HTTP/1.1 on later
// connections (mixed load balancer, TLS-intercepting egress): the shared
// transport pools HTTP/1.1 connections across users.
// switchingUpstream is a TLS upstream that offers HTTP/2 on its first
// handshake and only HTTP/1.1 on later ones (a load balancer with mixed back
// ends, an egress proxy that re-signs TLS). Over HTTP/1.1 it answers, then
// sends a late duplicate of that answer once the next request on the
// connection has arrived. who names the caller of a request.
func switchingUpstream(t *testing.T, who func(*http.Request) string) (addr string, roots *x509.CertPool) {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	srv.EnableHTTP2 = true
	srv.StartTLS() // only to get a certificate
	cert := srv.TLS.Certificates[0]
	roots = srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	srv.Close()

	var handshakes atomic.Int32
	cfg := &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		protos := []string{"http/1.1"}
		if handshakes.Add(1) == 1 {
			protos = []string{"h2", "http/1.1"}
		}
		return &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: protos}, nil
	}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user := who(r)
		if r.ProtoMajor == 2 {
			fmt.Fprintf(w, "h2 answer for %s", user)
			return
		}
		conn, brw, _ := http.NewResponseController(w).Hijack()
		defer conn.Close()
		body := "answer for " + user
		fmt.Fprintf(brw, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		brw.Flush()
		if _, err := http.ReadRequest(brw.Reader); err != nil {
			return
		}
		fmt.Fprintf(brw, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		brw.Flush()
	})}
	go func() { _ = hs.Serve(tls.NewListener(ln, cfg)) }()
	t.Cleanup(func() { _ = hs.Close() })
	return ln.Addr().String(), roots
}

func TestAHostThatSwitchesFromHTTP2ToHTTP1NeverMixesUsers(t *testing.T) {
	addr, roots := switchingUpstream(t, func(r *http.Request) string { return r.Header.Get("As-User") })
	rt, _ := NewTransport(TransportOptions{})
	rt.TLSClientConfig = &tls.Config{RootCAs: roots}
	p := poolsProxy(t, "https://"+addr, rt)
	get := func(user string) string {
		r := httptest.NewRequest(http.MethodGet, "/2.0/users/me", nil)
		r.Header.Set("As-User", user)
		w := httptest.NewRecorder()
		p.ServeHTTP(w, r)
		b, _ := io.ReadAll(w.Body)
		return fmt.Sprintf("%d %s", w.Code, b)
	}
	t.Logf("user 33: %s", get("33")) // marks the host as HTTP/2
	a := get("11")
	b := get("22")
	t.Logf("user 11: %s", a)
	t.Logf("user 22: %s", b)
	if !strings.Contains(a, "answer for 11") || !strings.Contains(b, "answer for 22") {
		t.Errorf("user 22 received user 11's answer: %q", b)
	}
}

func TestTokenAnswersNeverCrossSubjectsWhenTheProtocolChanges(t *testing.T) {
	addr, roots := switchingUpstream(t, func(r *http.Request) string { return r.URL.Query().Get("subject") })
	rt, _ := NewTransport(TransportOptions{})
	rt.TLSClientConfig = &tls.Config{RootCAs: roots}
	c := &http.Client{Transport: OneRequestPerConnection(rt)}
	post := func(subj string) string {
		resp, err := c.Post("https://"+addr+"/oauth2/token?subject="+subj, "application/x-www-form-urlencoded", nil)
		if err != nil {
			return err.Error()
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return string(b)
	}
	t.Logf("33: %s", post("33"))
	t.Logf("11: %s", post("11"))
	b := post("22")
	t.Logf("22: %s", b)
	if strings.Contains(b, "for 11") {
		t.Errorf("subject 22 got subject 11's token answer")
	}
}

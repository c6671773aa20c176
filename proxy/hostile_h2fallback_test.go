package proxy

import (
	"crypto/tls"
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
func TestAHostThatSwitchesFromHTTP2ToHTTP1NeverMixesUsers(t *testing.T) {
	srv := httptest.NewUnstartedServer(nil)
	srv.EnableHTTP2 = true
	srv.StartTLS() // only to get a cert
	cert := srv.TLS.Certificates[0]
	roots := srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	srv.Close()

	var handshakes atomic.Int32
	cfg := &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		protos := []string{"http/1.1"}
		if handshakes.Add(1) == 1 {
			protos = []string{"h2", "http/1.1"}
		}
		return &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: protos}, nil
	}}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	tln := tls.NewListener(ln, cfg)
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user := r.Header.Get("As-User")
		if r.ProtoMajor == 2 {
			fmt.Fprintf(w, "h2 answer for %s", user)
			return
		}
		// HTTP/1.1: answer, then a late duplicate of this answer once the
		// next request on the connection has arrived.
		conn, brw, _ := http.NewResponseController(w).Hijack()
		defer conn.Close()
		body := "answer for " + user
		fmt.Fprintf(brw, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		brw.Flush()
		next, err := http.ReadRequest(brw.Reader)
		if err != nil {
			return
		}
		_ = next
		fmt.Fprintf(brw, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		brw.Flush()
	})}
	go hs.Serve(tln)
	defer hs.Close()

	rt, _ := NewTransport(TransportOptions{})
	rt.TLSClientConfig = &tls.Config{RootCAs: roots}
	p := poolsProxy(t, "https://"+ln.Addr().String(), rt)
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
	srv := httptest.NewUnstartedServer(nil)
	srv.EnableHTTP2 = true
	srv.StartTLS() // only to get a cert
	cert := srv.TLS.Certificates[0]
	roots := srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	srv.Close()

	var handshakes atomic.Int32
	cfg := &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		protos := []string{"http/1.1"}
		if handshakes.Add(1) == 1 {
			protos = []string{"h2", "http/1.1"}
		}
		return &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: protos}, nil
	}}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	tln := tls.NewListener(ln, cfg)
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user := r.URL.Query().Get("subject")
		if r.ProtoMajor == 2 {
			fmt.Fprintf(w, "h2 answer for %s", user)
			return
		}
		// HTTP/1.1: answer, then a late duplicate of this answer once the
		// next request on the connection has arrived.
		conn, brw, _ := http.NewResponseController(w).Hijack()
		defer conn.Close()
		body := "answer for " + user
		fmt.Fprintf(brw, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		brw.Flush()
		next, err := http.ReadRequest(brw.Reader)
		if err != nil {
			return
		}
		_ = next
		fmt.Fprintf(brw, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		brw.Flush()
	})}
	go hs.Serve(tln)
	defer hs.Close()

	rt, _ := NewTransport(TransportOptions{})
	rt.TLSClientConfig = &tls.Config{RootCAs: roots}
	c := &http.Client{Transport: OneRequestPerConnection(rt)}
	post := func(subj string) string {
		resp, err := c.Post("https://"+ln.Addr().String()+"/oauth2/token?subject="+subj, "application/x-www-form-urlencoded", nil)
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

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
// With -tls DIR it serves HTTPS (HTTP/2 offered, as Box does) with a
// self-signed certificate for 127.0.0.1 and localhost that it writes to
// DIR/cert.pem, for the clients to trust.
//
// Usage: upstream [-addr 127.0.0.1:9000] [-procs N] [-tls DIR]   (GOMAXPROCS also works)
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
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
	tlsDir := flag.String("tls", "", "serve HTTPS with a new self-signed certificate written to DIR/cert.pem")
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
	fmt.Fprintf(os.Stderr, "upstream listening on %s (GOMAXPROCS=%d, TLS=%v)\n", *addr, runtime.GOMAXPROCS(0), *tlsDir != "")
	var err error
	if *tlsDir != "" {
		var cert, key string
		if cert, key, err = selfSigned(*tlsDir); err == nil {
			err = srv.ListenAndServeTLS(cert, key)
		}
	} else {
		err = srv.ListenAndServe()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "upstream:", err)
		os.Exit(1)
	}
}

// selfSigned writes a new ECDSA certificate for 127.0.0.1, ::1 and localhost,
// and its key, to dir; the certificate is its own root.
func selfSigned(dir string) (certFile, keyFile string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "boxproxy bench upstream"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:              []string{"localhost"},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

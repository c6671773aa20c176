package fakebox

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// tlsIdentity is a throwaway CA and a certificate it signed for 127.0.0.1
// and localhost, made with crypto/x509 when the stand-in starts.
type tlsIdentity struct {
	cert   tls.Certificate
	caPEM  []byte
	pool   *x509.CertPool
	caFile string // caPEM in a temporary file, for BOXPROXY_UPSTREAM_CA_FILE
}

var (
	identityOnce sync.Once
	identity     *tlsIdentity
	identityErr  error
)

// processIdentity is one CA and certificate for every stand-in of the
// process, so that a test's clients can trust them all (CertPool).
func processIdentity() (*tlsIdentity, error) {
	identityOnce.Do(func() { identity, identityErr = newTLSIdentity() })
	return identity, identityErr
}

// CertPool holds the CA of every TLS stand-in of this process, for clients
// that talk to one directly.
func CertPool() (*x509.CertPool, error) {
	id, err := processIdentity()
	if err != nil {
		return nil, err
	}
	return id.pool, nil
}

func newTLSIdentity() (*tlsIdentity, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fakebox test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, DNSNames: []string{"localhost"},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	id := &tlsIdentity{
		cert:  tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: key},
		caPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		pool:  x509.NewCertPool(),
	}
	id.pool.AddCert(caCert)
	dir, err := os.MkdirTemp("", "fakebox-ca-")
	if err != nil {
		return nil, err
	}
	id.caFile = filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(id.caFile, id.caPEM, 0o600); err != nil {
		return nil, err
	}
	return id, nil
}

// serverConfig offers HTTP/2 and HTTP/1.1, as Box's HTTPS front ends do.
func (id *tlsIdentity) serverConfig() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{id.cert}, NextProtos: []string{"h2", "http/1.1"}, MinVersion: tls.VersionTLS12}
}

// CAFile is the path of a PEM file holding the CA that signed the
// stand-in's certificate (Config.TLS), for BOXPROXY_UPSTREAM_CA_FILE; "" for
// a plain-HTTP stand-in. It is one file for the whole process, in the
// temporary directory, and stays there.
func (b *Box) CAFile() string {
	if b.tls == nil {
		return ""
	}
	return b.tls.caFile
}

// CAPEM is the CA certificate of CAFile, PEM-encoded.
func (b *Box) CAPEM() []byte {
	if b.tls == nil {
		return nil
	}
	return b.tls.caPEM
}

// Client returns an HTTP client that trusts the stand-in (HTTP/2 where it
// is offered) and does not follow redirects.
func (b *Box) Client() *http.Client {
	t := &http.Transport{ForceAttemptHTTP2: true}
	if b.tls != nil {
		t.TLSClientConfig = &tls.Config{RootCAs: b.tls.pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: t, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// TLSCertificate is the certificate a TLS stand-in serves, for test
// servers of its own that clients trusting CAFile should trust too.
func (b *Box) TLSCertificate() tls.Certificate {
	if b.tls == nil {
		return tls.Certificate{}
	}
	return b.tls.cert
}

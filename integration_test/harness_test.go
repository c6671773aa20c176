// Package integration_test runs boxproxy end to end: HTTP in, HTTP out, against
// the real server (in-process, on 127.0.0.1:0) or the real binary, in front of
// the fakebox stand-in for Box.
//
// # Shared harness (this file)
//
// Everything here is meant to be reused by every *_test.go file of the package.
//
// Box stand-in:
//   - startBox(t, mods...) starts a fakebox.Box (closed at cleanup) for the
//     standard test app: client ID testClientID, secret testClientSecret,
//     enterprise testEnterpriseID (Service Account testServiceAccountID),
//     users userAlice (managed), userBob (admin), userCarol (managed), and the
//     shared RSA key registered under testKeyID. mods edit the fakebox.Config.
//   - boxEnv(box) is the BOXPROXY_*_URL variables that point a proxy at box,
//     plus BOXPROXY_LOG_LEVEL=debug; ccgEnv(box) adds the CCG credentials.
//
// Keys and JWT apps:
//   - testRSAKey() is the one 2048-bit RSA key of the test run (the stand-in
//     knows its public half as testKeyID).
//   - newJWTApp(t, box) writes, into t.TempDir(), the Developer Console JSON
//     file (encrypted PKCS#8 key, PBES2 AES-256-CBC + PBKDF2-SHA256, with its
//     passphrase) and plain PKCS#1 / PKCS#8 PEM files of the same key.
//     jwtApp.ConfigEnv() / PKCS1Env() / PKCS8Env() are the matching variables;
//     jwtApp.Secrets() is the key material that must never be printed.
//
// Proxies:
//   - startProxy(t, box, env...) runs the real server in-process
//     (config.Load + server.New + Serve) on 127.0.0.1:0, with
//     BOXPROXY_PUBLIC_URL set to its real http://127.0.0.1:port unless env
//     sets it, and logs captured in memory (testProxy.Logs, LogLines,
//     AccessLines). Later env entries override earlier ones. At cleanup it
//     shuts the server down and fails the test if any issued token, client
//     secret, passphrase, key or other registered secret (AddSecret) appears
//     in the logs or in any non-2xx response body read through
//     testProxy.Do/Get (2xx bodies are Box's own, e.g. the stand-in's echo).
//     tryStartProxy is startProxy that returns a configuration/start error.
//   - startBinary(t, box, env...) runs the built boxproxy binary the same way
//     (stderr captured; BOXPROXY_LISTEN=127.0.0.1:0 unless env sets it), waits
//     for its "boxproxy serving" line, and at cleanup sends SIGTERM, expects
//     exit 0 and checks its output for secrets (binaryProxy.AddSecret adds
//     more). runBinary(t, env, args...) runs it to completion (exact env,
//     nothing inherited). binaryPath(t) is the binary, built once in TestMain.
//
// HTTP helpers:
//   - testProxy.Get(t, path, "Header", "value", ...) / testProxy.Do(t, req)
//     send a request without following redirects and return the response
//     with its body read.
//   - rawHTTP(t, addr, request) writes request bytes as they are over TCP and
//     reads one response (for requests Go's client cannot make).
//   - decodeBoxError(t, resp, body) checks that body is an error in Box's
//     shape whose status matches the response, and returns it.
//   - waitUntil(t, timeout, cond, what) polls cond until true or fails.
//   - logLines(text) parses JSON log lines.
//   - assertNoSecrets(t, where, text, secrets) fails if any secret occurs.
//   - testProxy.Request builds a request; noRedirectClient never follows
//     redirects; requestsTo(box, host) filters box.Requests(); isIssued(box,
//     tok); jsonBody(t, body); envValue(env, name); writeJWTConfigFile;
//     writeFile; vmHWM(t, pid) is a process's peak RSS from /proc.
//
// Scheduling (the package must stay fast with -race on 2 cores):
//   - cpuHeavy(t), after t.Parallel(), marks a test that loads the CPU for
//     seconds (hundreds of concurrent requests, 200 MiB uploads); cpuQuiet(t),
//     after t.Parallel(), makes a timing-sensitive test (short token
//     lifetimes) wait for the binary's build and run while no cpuHeavy test
//     does. Both hold until the test's cleanup.
package integration_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/youmark/pkcs8"

	"github.com/boxproxy/boxproxy/cli"
	"github.com/boxproxy/boxproxy/config"
	"github.com/boxproxy/boxproxy/fakebox"
	"github.com/boxproxy/boxproxy/server"
)

// The standard test app and enterprise.
const (
	testClientID         = "boxproxy-it-client-7Hq2"
	testClientSecret     = "it-client-secret-Vb93kQzT1x"
	testEnterpriseID     = "500100"
	testServiceAccountID = fakebox.DefaultServiceAccountID
	testKeyID            = "it-key-1"
	userAlice            = "2001" // managed user
	userBob              = "2002" // admin
	userCarol            = "2003" // managed user
)

// ---------------------------------------------------------------- TestMain

var (
	binPath  string
	binErr   error
	binBuilt = make(chan struct{})
)

// testTLS trusts the stand-in's certificates.
var testTLS *tls.Config

// TestMain builds the real binary once, in the background, while the
// in-process tests run; binaryPath waits for it.
func TestMain(m *testing.M) {
	// Test clients that talk to the (TLS) stand-in directly, as a browser or
	// an SDK following a download link would, trust its CA.
	pool, err := fakebox.CertPool()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testTLS = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	http.DefaultTransport.(*http.Transport).TLSClientConfig = testTLS.Clone()
	dir, err := os.MkdirTemp("", "boxproxy-it-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	go func() {
		defer close(binBuilt)
		p := filepath.Join(dir, "boxproxy")
		cmd := exec.Command("go", "build", "-o", p, "github.com/boxproxy/boxproxy")
		out, err := cmd.CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build github.com/boxproxy/boxproxy: %v\n%s", err, out)
			return
		}
		binPath = p
	}()
	code := m.Run()
	<-binBuilt
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// binaryPath returns the built boxproxy binary, waiting for the build.
func binaryPath(t testing.TB) string {
	t.Helper()
	select {
	case <-binBuilt:
	case <-time.After(3 * time.Minute):
		t.Fatal("the boxproxy binary was not built within 3 minutes")
	}
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// heavyMu keeps timing-sensitive tests apart from CPU-heavy ones.
var heavyMu sync.RWMutex

// cpuHeavy marks the calling test as CPU-heavy until its cleanup (see the package comment).
func cpuHeavy(t testing.TB) {
	t.Helper()
	heavyMu.RLock()
	t.Cleanup(heavyMu.RUnlock)
}

// cpuQuiet waits for the binary's build and for every CPU-heavy test to end,
// and keeps new ones from starting until the calling test's cleanup.
func cpuQuiet(t testing.TB) {
	t.Helper()
	select {
	case <-binBuilt:
	case <-time.After(3 * time.Minute):
	}
	heavyMu.Lock()
	t.Cleanup(heavyMu.Unlock)
}

// ---------------------------------------------------------------- keys

var (
	rsaKeyOnce sync.Once
	rsaKey     *rsa.PrivateKey
)

// testRSAKey is the run's one 2048-bit RSA key; every startBox knows it as testKeyID.
func testRSAKey() *rsa.PrivateKey {
	rsaKeyOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		rsaKey = k
	})
	return rsaKey
}

// jwtApp is a JWT app's key material, written to files.
type jwtApp struct {
	ConfigPath string // Developer Console JSON, encrypted PKCS#8 key + passphrase
	Passphrase string
	KeyID      string
	PKCS1Path  string // plain "RSA PRIVATE KEY"
	PKCS8Path  string // plain "PRIVATE KEY"
	pems       [][]byte
}

// newJWTApp writes the app configuration of box's app (see jwtApp) into t.TempDir().
func newJWTApp(t testing.TB, box *fakebox.Box) *jwtApp {
	t.Helper()
	key := testRSAKey()
	dir := t.TempDir()
	a := &jwtApp{Passphrase: "it-passphrase-" + randomHex(t, 8), KeyID: testKeyID}

	enc, err := pkcs8.MarshalPrivateKey(key, []byte(a.Passphrase), &pkcs8.Opts{
		Cipher:  pkcs8.AES256CBC,
		KDFOpts: pkcs8.PBKDF2Opts{SaltSize: 16, IterationCount: 10000, HMACHash: crypto.SHA256},
	})
	if err != nil {
		t.Fatal(err)
	}
	encPEM := pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: enc})
	if !bytes.HasPrefix(encPEM, []byte("-----BEGIN ENCRYPTED PRIVATE KEY-----\n")) {
		t.Fatalf("unexpected PEM %q", encPEM[:40])
	}
	p1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	der8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	p8 := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der8})
	a.pems = [][]byte{encPEM, p1, p8}

	cfg := box.Config()
	a.ConfigPath = writeJWTConfigFile(t, dir, cfg.ClientID, cfg.ClientSecret, a.KeyID, string(encPEM), a.Passphrase, cfg.EnterpriseID)
	a.PKCS1Path = filepath.Join(dir, "key-pkcs1.pem")
	a.PKCS8Path = filepath.Join(dir, "key-pkcs8.pem")
	for path, data := range map[string][]byte{a.PKCS1Path: p1, a.PKCS8Path: p8} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return a
}

// writeJWTConfigFile writes a Developer Console JSON app configuration and returns its path.
func writeJWTConfigFile(t testing.TB, dir, clientID, secret, kid, privateKeyPEM, passphrase, enterpriseID string) string {
	t.Helper()
	doc := map[string]any{
		"boxAppSettings": map[string]any{
			"clientID":     clientID,
			"clientSecret": secret,
			"appAuth": map[string]any{
				"publicKeyID": kid,
				"privateKey":  privateKeyPEM,
				"passphrase":  passphrase,
			},
		},
		"enterpriseID": enterpriseID,
		"webhooks":     map[string]any{},
	}
	data, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.CreateTemp(dir, "box-config-*.json")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

// ConfigEnv selects the JSON app configuration.
func (a *jwtApp) ConfigEnv() []string {
	return []string{"BOXPROXY_JWT_CONFIG=" + a.ConfigPath}
}

// PKCS1Env selects the plain PKCS#1 key given one variable at a time.
func (a *jwtApp) PKCS1Env() []string { return a.keyEnv(a.PKCS1Path) }

// PKCS8Env selects the plain PKCS#8 key given one variable at a time.
func (a *jwtApp) PKCS8Env() []string { return a.keyEnv(a.PKCS8Path) }

func (a *jwtApp) keyEnv(path string) []string {
	return []string{
		"BOXPROXY_JWT_PRIVATE_KEY=" + path, "BOXPROXY_JWT_KEY_ID=" + a.KeyID,
		"BOXPROXY_CLIENT_ID=" + testClientID, "BOXPROXY_CLIENT_SECRET=" + testClientSecret,
		"BOXPROXY_ENTERPRISE_ID=" + testEnterpriseID,
	}
}

// Secrets is the passphrase and key material (PEM lines, the private exponent).
func (a *jwtApp) Secrets() []string {
	out := []string{a.Passphrase}
	out = append(out, keyMaterial(a.pems...)...)
	return out
}

// keyMaterial returns recognisable pieces of private keys: every full base64
// line of the PEMs and the test key's private exponent and primes.
func keyMaterial(pems ...[]byte) []string {
	var out []string
	for _, p := range pems {
		for _, line := range strings.Split(string(p), "\n") {
			if len(line) == 64 && !strings.HasPrefix(line, "-----") {
				out = append(out, line)
			}
		}
	}
	k := testRSAKey()
	nums := []string{k.D.String(), k.D.Text(16)}
	for _, p := range k.Primes {
		nums = append(nums, p.String(), p.Text(16))
	}
	for _, n := range nums {
		out = append(out, n[:40])
	}
	return out
}

// ---------------------------------------------------------------- Box stand-in

// startBox starts the stand-in for the standard test app; mods edit its Config.
func startBox(t testing.TB, mods ...func(*fakebox.Config)) *fakebox.Box {
	t.Helper()
	key := testRSAKey()
	cfg := fakebox.Config{
		ClientID: testClientID, ClientSecret: testClientSecret, EnterpriseID: testEnterpriseID,
		Users: []fakebox.User{
			{ID: userAlice, Name: "Alice", Login: "alice@example.com"},
			{ID: userBob, Name: "Bob", Login: "bob@example.com", Admin: true},
			{ID: userCarol, Name: "Carol", Login: "carol@example.com"},
		},
		PublicKeys: map[string]*rsa.PublicKey{testKeyID: &key.PublicKey},
		// HTTPS offering HTTP/2, as Box's front ends: the proxy's client is
		// the one production uses (a mod may turn it off for a plain subset).
		TLS: true,
	}
	for _, m := range mods {
		m(&cfg)
	}
	b, err := fakebox.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

// boxEnv points a proxy at box (API, upload, token and authorize URLs, and
// the CA that signed its certificate) and logs at debug.
func boxEnv(box *fakebox.Box) []string {
	env := []string{
		"BOXPROXY_API_URL=" + box.APIURL(),
		"BOXPROXY_UPLOAD_URL=" + box.UploadURL(),
		"BOXPROXY_TOKEN_URL=" + box.TokenURL(),
		"BOXPROXY_AUTHORIZE_URL=" + box.AuthorizeURL(),
		"BOXPROXY_LOG_LEVEL=debug",
	}
	if f := box.CAFile(); f != "" {
		env = append(env, "BOXPROXY_UPSTREAM_CA_FILE="+f)
	}
	return env
}

// ccgEnv is boxEnv plus the standard app's Client Credentials with the
// enterprise (Service Account) as default subject.
func ccgEnv(box *fakebox.Box) []string {
	return append(boxEnv(box),
		"BOXPROXY_CLIENT_ID="+testClientID,
		"BOXPROXY_CLIENT_SECRET="+testClientSecret,
		"BOXPROXY_ENTERPRISE_ID="+testEnterpriseID,
	)
}

// envValue returns the last value of name in env.
func envValue(env []string, name string) (string, bool) {
	v, ok := "", false
	for _, kv := range env {
		if k, val, found := strings.Cut(kv, "="); found && k == name {
			v, ok = val, true
		}
	}
	return v, ok
}

// secretsInEnv returns the values of the secret variables set in env.
func secretsInEnv(env []string) []string {
	var out []string
	for _, name := range []string{"CLIENT_SECRET", "JWT_PASSPHRASE", "DEVELOPER_TOKEN", "INBOUND_KEY"} {
		if v, ok := envValue(env, "BOXPROXY_"+name); ok && v != "" {
			out = append(out, v)
		}
	}
	return out
}

// ---------------------------------------------------------------- in-process proxy

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testProxy is boxproxy's real server running in-process.
type testProxy struct {
	URL    string // http://127.0.0.1:port
	Addr   string // 127.0.0.1:port
	Box    *fakebox.Box
	Config *config.Config
	Server *server.Server
	Client *http.Client // does not follow redirects

	logs    *syncBuffer
	mu      sync.Mutex
	secrets []string
	bodies  []string
}

// noRedirectClient never follows redirects, so that a 302 reaches the test.
var noRedirectClient = &http.Client{
	Timeout:       60 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// startProxy runs boxproxy's server in-process in front of box; see the package comment.
func startProxy(t testing.TB, box *fakebox.Box, env ...string) *testProxy {
	t.Helper()
	p, err := tryStartProxy(t, box, env...)
	if err != nil {
		t.Fatalf("starting the proxy: %v", err)
	}
	return p
}

// tryStartProxy is startProxy that returns the configuration or start-up error.
func tryStartProxy(t testing.TB, box *fakebox.Box, env ...string) (*testProxy, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	full := []string{"BOXPROXY_LISTEN=" + addr, "BOXPROXY_PUBLIC_URL=http://" + addr}
	full = append(full, env...)
	cfg, err := config.Load(full)
	if err != nil {
		_ = ln.Close()
		return nil, err
	}
	logs := &syncBuffer{}
	s, err := server.New(cfg, cli.NewLogger(cfg, logs))
	if err != nil {
		_ = ln.Close()
		return nil, err
	}
	p := &testProxy{
		URL: "http://" + addr, Addr: addr, Box: box, Config: cfg, Server: s,
		Client: noRedirectClient, logs: logs,
	}
	p.AddSecret(secretsInEnv(full)...)
	if box != nil {
		p.AddSecret(box.Config().ClientSecret)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("proxy shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("proxy Serve: %v", err)
		}
		p.checkSecrets(t)
	})
	return p, nil
}

// AddSecret registers values that must never appear in logs or bodies.
func (p *testProxy) AddSecret(s ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, v := range s {
		if len(v) >= 6 {
			p.secrets = append(p.secrets, v)
		}
	}
}

func (p *testProxy) checkSecrets(t testing.TB) {
	t.Helper()
	p.mu.Lock()
	secrets := append([]string(nil), p.secrets...)
	bodies := strings.Join(p.bodies, "\n")
	p.mu.Unlock()
	if p.Box != nil {
		secrets = append(secrets, p.Box.IssuedTokens()...)
	}
	assertNoSecrets(t, "proxy logs", p.Logs(), secrets)
	assertNoSecrets(t, "bodies the proxy answered", bodies, secrets)
}

// Logs returns everything logged so far.
func (p *testProxy) Logs() string { return p.logs.String() }

// LogLines returns the JSON log lines logged so far.
func (p *testProxy) LogLines(t testing.TB) []map[string]any {
	t.Helper()
	return logLines(t, p.Logs())
}

// AccessLines returns the access-log lines (message "request").
func (p *testProxy) AccessLines(t testing.TB) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range p.LogLines(t) {
		if l["message"] == "request" {
			out = append(out, l)
		}
	}
	return out
}

// Do sends req (without following redirects) and returns the response with its body read.
func (p *testProxy) Do(t testing.TB, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	return p.DoWith(t, p.Client, req)
}

// DoWith is Do with another client.
func (p *testProxy) DoWith(t testing.TB, c *http.Client, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", req.Method, req.URL, err)
	}
	if resp.StatusCode >= 300 && len(body) <= 64<<10 { // error bodies (2xx may echo what Box saw)
		p.mu.Lock()
		p.bodies = append(p.bodies, string(body))
		p.mu.Unlock()
	}
	return resp, body
}

// Request builds a request to the proxy; hdr is name, value, name, value...
func (p *testProxy) Request(t testing.TB, method, path string, body io.Reader, hdr ...string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, p.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	return req
}

// Get sends GET path with the given headers (name, value, ...).
func (p *testProxy) Get(t testing.TB, path string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	return p.Do(t, p.Request(t, http.MethodGet, path, nil, hdr...))
}

// ---------------------------------------------------------------- the binary

// binaryProxy is the real boxproxy binary, serving.
type binaryProxy struct {
	URL, Addr string
	Cmd       *exec.Cmd
	Stdout    *syncBuffer
	Stderr    *syncBuffer
	Startup   map[string]any // the "boxproxy serving" log line
	exited    chan struct{}
	waitErr   error
	secrets   []string
	box       *fakebox.Box
}

// startBinary runs the boxproxy binary in front of box; see the package comment.
func startBinary(t testing.TB, box *fakebox.Box, env ...string) *binaryProxy {
	t.Helper()
	full := append([]string{"BOXPROXY_LISTEN=127.0.0.1:0"}, env...)
	cmd := exec.Command(binaryPath(t))
	cmd.Env = full
	b := &binaryProxy{Cmd: cmd, Stdout: &syncBuffer{}, Stderr: &syncBuffer{}, exited: make(chan struct{}), box: box}
	cmd.Stdout, cmd.Stderr = b.Stdout, b.Stderr
	b.secrets = secretsInEnv(full)
	if box != nil {
		b.secrets = append(b.secrets, box.Config().ClientSecret)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { b.waitErr = cmd.Wait(); close(b.exited) }()
	t.Cleanup(func() {
		select {
		case <-b.exited:
		default:
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-b.exited:
				if b.waitErr != nil {
					t.Errorf("boxproxy did not exit 0 after SIGTERM: %v\nstderr:\n%s", b.waitErr, b.Stderr)
				}
			case <-time.After(15 * time.Second):
				_ = cmd.Process.Kill()
				<-b.exited
				t.Errorf("boxproxy did not stop within 15s of SIGTERM")
			}
		}
		b.CheckSecrets(t)
	})

	deadline := time.Now().Add(30 * time.Second)
	for b.Startup == nil {
		for _, l := range logLines(t, b.Stderr.String()) {
			if l["message"] == "boxproxy serving" {
				b.Startup = l
			}
		}
		if b.Startup != nil {
			break
		}
		select {
		case <-b.exited:
			t.Fatalf("boxproxy exited before serving: %v\nstderr:\n%s", b.waitErr, b.Stderr)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("boxproxy did not log \"boxproxy serving\" within 30s; stderr:\n%s", b.Stderr)
		}
	}
	b.Addr, _ = b.Startup["listen"].(string)
	if b.Addr == "" {
		t.Fatalf("the start-up line has no listen address: %v", b.Startup)
	}
	b.URL = "http://" + b.Addr
	return b
}

// AddSecret registers values that must never appear in the binary's output.
func (b *binaryProxy) AddSecret(s ...string) {
	for _, v := range s {
		if len(v) >= 6 {
			b.secrets = append(b.secrets, v)
		}
	}
}

// CheckSecrets fails the test if a secret or issued token is in the binary's output.
func (b *binaryProxy) CheckSecrets(t testing.TB) {
	t.Helper()
	secrets := append([]string(nil), b.secrets...)
	if b.box != nil {
		secrets = append(secrets, b.box.IssuedTokens()...)
	}
	assertNoSecrets(t, "binary stderr", b.Stderr.String(), secrets)
	assertNoSecrets(t, "binary stdout", b.Stdout.String(), secrets)
}

// AccessLines returns the binary's access-log lines.
func (b *binaryProxy) AccessLines(t testing.TB) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range logLines(t, b.Stderr.String()) {
		if l["message"] == "request" {
			out = append(out, l)
		}
	}
	return out
}

// runBinary runs `boxproxy args...` with exactly env and returns its output
// and exit code (-1 if it had to be killed after 30 s).
func runBinary(t testing.TB, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binaryPath(t), args...)
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		code = 0
	case ctx.Err() != nil:
		code = -1
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// ---------------------------------------------------------------- HTTP helpers

// rawHTTP sends request over a new TCP connection exactly as given and reads
// one response. It returns the status (0 if the connection closed without
// one) and the body.
func rawHTTP(t testing.TB, addr, request string) (int, string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(conn, request); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// boxError is the JSON error body of Box (and of boxproxy's own errors).
type boxError struct {
	Type    string `json:"type"`
	Status  int    `json:"status"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// decodeBoxError checks that body is a JSON error in Box's shape matching resp's status.
func decodeBoxError(t testing.TB, resp *http.Response, body []byte) boxError {
	t.Helper()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("error answer has Content-Type %q, want application/json; body %q", ct, body)
	}
	var e boxError
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error answer is not JSON: %v: %q", err, body)
	}
	if e.Type != "error" || e.Status != resp.StatusCode || e.Code == "" || e.Message == "" {
		t.Errorf("error answer %q is not in Box's shape {type:error,status:%d,code,message}", body, resp.StatusCode)
	}
	return e
}

// waitUntil polls cond every 20ms until it is true, or fails the test after timeout.
func waitUntil(t testing.TB, timeout time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting until %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logLines parses the JSON lines of text (other lines are ignored).
func logLines(t testing.TB, text string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Errorf("log line is not JSON: %v: %q", err, line)
			continue
		}
		out = append(out, m)
	}
	return out
}

// assertNoSecrets fails if any secret occurs in text.
func assertNoSecrets(t testing.TB, where, text string, secrets []string) {
	t.Helper()
	for _, s := range secrets {
		if s == "" {
			continue
		}
		if i := strings.Index(text, s); i >= 0 {
			lo, hi := max(0, i-80), min(len(text), i+len(s)+20)
			t.Errorf("%s contain a secret (%d bytes starting %q…) in %q", where, len(s), s[:min(4, len(s))], redact(text[lo:hi], s))
		}
	}
}

func redact(s, secret string) string { return strings.ReplaceAll(s, secret, "<SECRET>") }

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", b)
}

// requestsTo returns the stand-in's recorded requests on one host ("api", "upload", "download").
func requestsTo(box *fakebox.Box, host string) []fakebox.Request {
	var out []fakebox.Request
	for _, r := range box.Requests() {
		if r.Host == host {
			out = append(out, r)
		}
	}
	return out
}

// isIssued reports whether tok is a token the stand-in issued.
func isIssued(box *fakebox.Box, tok string) bool {
	for _, t := range box.IssuedTokens() {
		if t == tok {
			return true
		}
	}
	return false
}

// jsonBody decodes a JSON object body.
func jsonBody(t testing.TB, body []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("body is not a JSON object: %v: %q", err, body)
	}
	return m
}

// vmHWM returns a process's peak resident set size in bytes, from /proc.
func vmHWM(t testing.TB, pid int) int64 {
	t.Helper()
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(rest)
			kb, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil || len(f) != 2 || f[1] != "kB" {
				t.Fatalf("cannot parse %q", line)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

// writeFile writes data to path with mode 0600.
func writeFile(path string, data []byte) error { return os.WriteFile(path, data, 0o600) }

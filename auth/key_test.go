package auth

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/youmark/pkcs8"
)

var (
	testKeyOnce sync.Once
	testKey     *rsa.PrivateKey
)

func key(t testing.TB) *rsa.PrivateKey {
	testKeyOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		testKey = k
	})
	return testKey
}

func encryptedPKCS8(t testing.TB, k *rsa.PrivateKey, pass string) []byte {
	der, err := pkcs8.MarshalPrivateKey(k, []byte(pass), &pkcs8.Opts{
		Cipher: pkcs8.AES256CBC, KDFOpts: pkcs8.PBKDF2Opts{SaltSize: 16, IterationCount: 2048, HMACHash: 5 /* crypto.SHA256 */},
	})
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: der})
}

func TestPrivateKeyFormatsBoxUsersHave(t *testing.T) {
	k := key(t)
	pk8, _ := x509.MarshalPKCS8PrivateKey(k)
	//lint:ignore SA1019 testing the legacy format on purpose
	dek, err := x509.EncryptPEMBlock(rand.Reader, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(k), []byte("pw"), x509.PEMCipherAES256) //nolint:staticcheck
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, pass string
		pem        []byte
	}{
		{"encrypted PKCS#8 from the Developer Console", "correct horse", encryptedPKCS8(t, k, "correct horse")},
		{"legacy DEK-Info PKCS#1", "pw", pem.EncodeToMemory(dek)},
		{"plain PKCS#1", "", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})},
		{"plain PKCS#8", "", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk8})},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParsePrivateKey(c.pem, c.pass)
			if err != nil {
				t.Fatal(err)
			}
			if !got.Equal(k) {
				t.Fatal("parsed a different key")
			}
		})
	}
}

func TestWrongPassphraseIsAClearErrorWithoutThePassphrase(t *testing.T) {
	pemKey := encryptedPKCS8(t, key(t), "right-passphrase")
	_, err := ParsePrivateKey(pemKey, "wrong-passphrase")
	if err == nil || !strings.Contains(err.Error(), "passphrase") {
		t.Fatalf("err = %v, want a passphrase error", err)
	}
	if strings.Contains(err.Error(), "wrong-passphrase") || strings.Contains(err.Error(), "right-passphrase") {
		t.Fatalf("error quotes a passphrase: %v", err)
	}
	if _, err := ParsePrivateKey(pemKey, ""); err == nil || !strings.Contains(err.Error(), "no passphrase") {
		t.Fatalf("missing passphrase: err = %v", err)
	}
	if _, err := ParsePrivateKey([]byte("not a key"), ""); err == nil || !strings.Contains(err.Error(), "not PEM") {
		t.Fatalf("garbage: err = %v", err)
	}
}

// TestAssertionFollowsBoxRules checks every claim Box verifies.
func TestAssertionFollowsBoxRules(t *testing.T) {
	k := key(t)
	j := &JWT{Endpoint: &Endpoint{ClientID: "cid"}, KeyID: "kid1", Key: k}
	now := time.Now()
	seen := map[string]bool{}
	for range 3 {
		a, err := j.Assertion(Subject{Enterprise, "123"}, now)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := jwt.Parse(a, func(*jwt.Token) (any, error) { return &k.PublicKey, nil }, jwt.WithValidMethods([]string{"RS256"}))
		if err != nil {
			t.Fatal(err)
		}
		if tok.Header["kid"] != "kid1" {
			t.Fatalf("kid = %v", tok.Header["kid"])
		}
		c := tok.Claims.(jwt.MapClaims)
		if c["iss"] != "cid" || c["sub"] != "123" || c["box_sub_type"] != "enterprise" || c["aud"] != Audience {
			t.Fatalf("claims = %v", c)
		}
		if _, has := c["iat"]; has {
			t.Fatal("iat is sent; Box allows no skew on it")
		}
		exp := int64(c["exp"].(float64))
		if d := exp - now.Unix(); d <= 0 || d > 60 {
			t.Fatalf("exp is %ds after now, want within 60s", d)
		}
		jti := c["jti"].(string)
		if len(jti) < 16 || len(jti) > 128 || seen[jti] {
			t.Fatalf("jti %q is not fresh or not 16-128 chars", jti)
		}
		seen[jti] = true
	}
}

func TestClockSkewRetriesOnceWithBoxsDate(t *testing.T) {
	boxNow := time.Now().Add(-10 * time.Minute) // Box's clock is behind: our exp looks too far ahead
	var calls int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		_ = r.ParseForm()
		tok, _ := jwt.Parse(r.Form.Get("assertion"), func(*jwt.Token) (any, error) { return &key(t).PublicKey, nil }, jwt.WithoutClaimsValidation())
		exp, _ := tok.Claims.GetExpirationTime()
		w.Header().Set("Date", boxNow.UTC().Format(http.TimeFormat))
		w.Header().Set("Content-Type", "application/json")
		if exp.Time.Sub(boxNow) > 60*time.Second {
			w.WriteHeader(400)
			_, _ = w.Write([]byte(`{"error":"invalid_grant","error_description":"Please check the 'exp' claim."}`))
			return
		}
		_, _ = w.Write([]byte(`{"access_token":"T","expires_in":3600}`))
	}))
	defer srv.Close()
	j := &JWT{Endpoint: &Endpoint{URL: srv.URL, ClientID: "c", ClientSecret: "s"}, KeyID: "k", Key: key(t)}
	tok, err := j.Token(t.Context(), Subject{Enterprise, "1"})
	if err != nil || tok.Access() != "T" {
		t.Fatalf("token = %v, err = %v", tok.Access(), err)
	}
	if calls != 2 {
		t.Fatalf("calls = %d, want 2", calls)
	}
	// The skew is remembered: the next token costs one request, not two.
	if _, err := j.Token(t.Context(), Subject{Enterprise, "2"}); err != nil || calls != 3 {
		t.Fatalf("after learning the skew: calls = %d, err = %v; want 3 and no error", calls, err)
	}
}

func TestTokenEndpointErrorsAreClassified(t *testing.T) {
	cases := []struct {
		status int
		body   string
		want   error
	}{
		{400, `{"error":"invalid_client","error_description":"The client credentials are invalid"}`, ErrConfig},
		{400, `{"error":"unauthorized_client","error_description":"This app is not authorized by the enterprise admin"}`, ErrConfig},
		{400, `{"error":"invalid_grant","error_description":"Grant credentials are invalid"}`, ErrConfig},
		{400, `{"error":"invalid_grant","error_description":"Invalid refresh token"}`, ErrGrant},
		{503, `<html>down</html>`, ErrUnavailable},
		{429, `{}`, ErrUnavailable},
		{200, `<html>`, ErrBadResponse},
		{200, `{"access_to`, ErrBadResponse},
		{200, `{"expires_in":3600}`, ErrBadResponse},
	}
	for _, c := range cases {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(c.status)
			_, _ = w.Write([]byte(c.body))
		}))
		ep := &Endpoint{URL: srv.URL, ClientID: "id", ClientSecret: "SECRET-VALUE"}
		_, err := ep.Exchange(t.Context(), "ccg", url.Values{})
		srv.Close()
		if !errors.Is(err, c.want) {
			t.Errorf("%d %s: err = %v, want %v", c.status, c.body, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "SECRET-VALUE") {
			t.Errorf("error quotes the secret: %v", err)
		}
	}
}

func FuzzParsePrivateKey(f *testing.F) {
	k := key(f)
	f.Add(encryptedPKCS8(f, k, "pw"), "pw")
	// A key asking for 2^31-1 PBKDF2 iterations: refused before any is run.
	f.Add(withKDFParams(f, encryptedPKCS8(f, k, "pw"), func(p []any) { p[1] = big.NewInt(0x7FFFFFFF) }), "pw")
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}), "")
	f.Add([]byte("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"), "x")
	f.Add([]byte("-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n"), "x")
	// The bound stays far above the seeds' 2048 but low enough that no
	// input within it stalls the fuzzer (10 million iterations take seconds
	// uninstrumented, much longer instrumented).
	old := maxPBKDF2Iterations
	maxPBKDF2Iterations = 100_000
	f.Cleanup(func() { maxPBKDF2Iterations = old })
	f.Fuzz(func(t *testing.T, data []byte, pass string) {
		start := time.Now()
		k, err := ParsePrivateKey(data, pass)
		if d := time.Since(start); d > 10*time.Second {
			t.Fatalf("ParsePrivateKey took %v: an input must not stall the start", d)
		}
		if err == nil && k == nil {
			t.Fatal("nil key without error")
		}
		if err != nil && pass != "" && len(pass) > 3 && strings.Contains(err.Error(), pass) {
			t.Fatalf("error quotes the passphrase: %v", err)
		}
	})
}

func FuzzParseTokenResponse(f *testing.F) {
	f.Add([]byte(`{"access_token":"abc","expires_in":3600,"token_type":"bearer"}`))
	f.Add([]byte(`{"access_token":"","expires_in":3600}`))
	f.Add([]byte(`{"access_token":"a b","expires_in":-1}`))
	f.Add([]byte(`<html>`))
	f.Fuzz(func(t *testing.T, data []byte) {
		tr, err := parseTokenResponse(data)
		if err == nil && (tr.AccessToken == "" || strings.ContainsAny(tr.AccessToken, " \r\n")) {
			t.Fatalf("accepted an unusable token %q", tr.AccessToken)
		}
		if err != nil && strings.Contains(err.Error(), string(data)) && len(data) > 8 {
			t.Fatalf("error quotes the body: %v", err)
		}
	})
}

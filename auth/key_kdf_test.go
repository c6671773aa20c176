package auth

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/youmark/pkcs8"
)

// withKDFParams rewrites the key derivation parameters of an encrypted
// PKCS#8 PEM key: edit gets them as a list of ASN.1 values (salt first, then
// the counts) and changes what it likes. The key itself stays as it was, so
// only the derivation decides whether it opens.
func withKDFParams(t testing.TB, pemKey []byte, edit func(p []any)) []byte {
	t.Helper()
	block, _ := pem.Decode(pemKey)
	var info struct {
		Algorithm pkix.AlgorithmIdentifier
		Data      []byte
	}
	var pbes2 struct{ KDF, Cipher pkix.AlgorithmIdentifier }
	if _, err := asn1.Unmarshal(block.Bytes, &info); err != nil {
		t.Fatal(err)
	}
	if _, err := asn1.Unmarshal(info.Algorithm.Parameters.FullBytes, &pbes2); err != nil {
		t.Fatal(err)
	}
	var raw []asn1.RawValue
	if _, err := asn1.Unmarshal(pbes2.KDF.Parameters.FullBytes, &raw); err != nil {
		t.Fatal(err)
	}
	p := make([]any, len(raw))
	for i, r := range raw {
		p[i] = r
		if r.Tag == asn1.TagInteger {
			n := new(big.Int)
			if _, err := asn1.Unmarshal(r.FullBytes, &n); err != nil {
				t.Fatal(err)
			}
			p[i] = n
		}
	}
	edit(p)
	must := func(b []byte, e error) []byte {
		if e != nil {
			t.Fatal(e)
		}
		return b
	}
	pbes2.KDF.Parameters.FullBytes = must(asn1.Marshal(p))
	info.Algorithm.Parameters.FullBytes = must(asn1.Marshal(pbes2))
	der := must(asn1.Marshal(info))
	return pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: der})
}

// parseWithin runs ParsePrivateKey and fails the test if it takes longer than d.
func parseWithin(t *testing.T, d time.Duration, pemKey []byte, pass string) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { _, err := ParsePrivateKey(pemKey, pass); done <- err }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		t.Fatalf("ParsePrivateKey did not return within %v", d)
		return nil
	}
}

// A key file decides how much work opening it takes; one that asks for 2^31
// PBKDF2 iterations (or gigabytes of scrypt memory) is refused at once with
// an error that says why and quotes nothing of the key, instead of hanging
// the start.
func TestEncryptedKeyWithAHugeDerivationCostIsRefusedAtOnce(t *testing.T) {
	const pass = "correct horse"
	good := encryptedPKCS8(t, key(t), pass)
	scrypt, err := pkcs8.MarshalPrivateKey(key(t), []byte(pass), &pkcs8.Opts{
		Cipher: pkcs8.AES256CBC, KDFOpts: pkcs8.ScryptOpts{SaltSize: 16, CostParameter: 1 << 10, BlockSize: 8, ParallelizationParameter: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	scryptPEM := pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: scrypt})
	if k, err := ParsePrivateKey(scryptPEM, pass); err != nil || k == nil {
		t.Fatalf("a modest scrypt key: %v", err)
	}
	iterations := func(n int64) []byte {
		return withKDFParams(t, good, func(p []any) { p[1] = big.NewInt(n) })
	}
	for _, c := range []struct {
		name string
		pem  []byte
		want string
	}{
		{"2^31-1 PBKDF2 iterations", iterations(0x7FFFFFFF), "PBKDF2 iterations"},
		{"just over the bound", iterations(maxPBKDF2Iterations + 1), "PBKDF2 iterations"},
		{"2^80 PBKDF2 iterations", withKDFParams(t, good, func(p []any) { p[1] = new(big.Int).Lsh(big.NewInt(1), 80) }), "PBKDF2 iterations"},
		{"zero PBKDF2 iterations", iterations(0), "malformed"},
		{"negative PBKDF2 iterations", iterations(-5), "malformed"},
		{"scrypt with 2^30 cost", withKDFParams(t, scryptPEM, func(p []any) { p[1] = big.NewInt(1 << 30) }), "scrypt"},
		{"scrypt with 1000 passes", withKDFParams(t, scryptPEM, func(p []any) { p[3] = big.NewInt(1000) }), "scrypt"},
	} {
		err := parseWithin(t, 2*time.Second, c.pem, pass)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want one saying %q", c.name, err, c.want)
			continue
		}
		if strings.Contains(err.Error(), pass) || strings.Contains(err.Error(), "MII") {
			t.Errorf("%s: %q quotes the key or passphrase", c.name, err)
		}
	}
	// A count within the bound is only a matter of the passphrase: the
	// rewritten key's own count (2048) still opens it.
	if err := parseWithin(t, 10*time.Second, iterations(2048), pass); err != nil {
		t.Errorf("2048 iterations: %v", err)
	}
}

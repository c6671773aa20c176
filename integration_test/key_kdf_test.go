package integration_test

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"strings"
	"testing"
	"time"
)

// pbkdf2Iterations rewrites the PBKDF2 iteration count of an encrypted
// PKCS#8 PEM key (PBES2), leaving everything else as it was.
func pbkdf2Iterations(t testing.TB, pemKey []byte, n int) []byte {
	t.Helper()
	block, _ := pem.Decode(pemKey)
	var info struct {
		Algorithm pkix.AlgorithmIdentifier
		Data      []byte
	}
	var pbes2 struct{ KDF, Cipher pkix.AlgorithmIdentifier }
	var kdf struct {
		Salt       []byte
		Iterations int
		PRF        pkix.AlgorithmIdentifier `asn1:"optional"`
	}
	if _, err := asn1.Unmarshal(block.Bytes, &info); err != nil {
		t.Fatal(err)
	}
	if _, err := asn1.Unmarshal(info.Algorithm.Parameters.FullBytes, &pbes2); err != nil {
		t.Fatal(err)
	}
	if _, err := asn1.Unmarshal(pbes2.KDF.Parameters.FullBytes, &kdf); err != nil {
		t.Fatal(err)
	}
	kdf.Iterations = n
	var err error
	if pbes2.KDF.Parameters.FullBytes, err = asn1.Marshal(kdf); err != nil {
		t.Fatal(err)
	}
	if info.Algorithm.Parameters.FullBytes, err = asn1.Marshal(pbes2); err != nil {
		t.Fatal(err)
	}
	der, err := asn1.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: der})
}

// A Developer Console file whose key asks for 2^31-1 PBKDF2 iterations (20
// minutes of work) is a prompt configuration error, not a silent hang.
func TestCheckRefusesAKeyWithAHugePBKDF2IterationCountAtOnce(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	app := newJWTApp(t, box)
	hostile := pbkdf2Iterations(t, app.pems[0], 0x7FFFFFFF)
	file := writeJWTConfigFile(t, t.TempDir(), testClientID, testClientSecret, testKeyID, string(hostile), app.Passphrase, testEnterpriseID)
	start := time.Now()
	stdout, stderr, code := runBinary(t, with(boxEnv(box), "BOXPROXY_JWT_CONFIG="+file), "check")
	lines := opsHumanLines(stderr)
	if code != 1 || len(lines) != 1 || !strings.Contains(lines[0], "BOXPROXY_JWT_CONFIG: ") || !strings.Contains(lines[0], "PBKDF2 iterations") {
		t.Errorf("check: exit %d after %v, stdout %q, stderr %q; want exit 1 and one line naming BOXPROXY_JWT_CONFIG and the iterations",
			code, time.Since(start).Round(time.Millisecond), stdout, stderr)
	}
	assertNoSecretPieces(t, "output", stdout+stderr, app.Secrets()...)
}

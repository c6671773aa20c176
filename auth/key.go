package auth

import (
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"

	"github.com/youmark/pkcs8"
)

// ParsePrivateKey reads an RSA private key in any form Box users have: the
// encrypted PKCS#8 PEM of the Developer Console's JSON file (PBES2), a legacy
// DEK-Info encrypted PKCS#1 PEM, or a plain PKCS#1 or PKCS#8 PEM. Its errors
// never quote the key or the passphrase.
func ParsePrivateKey(pemBytes []byte, passphrase string) (*rsa.PrivateKey, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, errors.New("the private key is not PEM (expected -----BEGIN ... PRIVATE KEY-----)")
	}
	var (
		key any
		err error
	)
	switch {
	case block.Type == "ENCRYPTED PRIVATE KEY":
		if passphrase == "" {
			return nil, errors.New("the private key is encrypted but no passphrase was given")
		}
		if err := checkKDF(block.Bytes); err != nil {
			return nil, err
		}
		key, err = pkcs8.ParsePKCS8PrivateKey(block.Bytes, []byte(passphrase))
		if err != nil {
			return nil, errors.New("cannot decrypt the private key: wrong passphrase or unsupported encryption")
		}
	case block.Type == "RSA PRIVATE KEY" && block.Headers["DEK-Info"] != "":
		if passphrase == "" {
			return nil, errors.New("the private key is encrypted but no passphrase was given")
		}
		//lint:ignore SA1019 legacy DEK-Info keys are still made by `openssl genrsa -des3`; there is no replacement.
		der, derr := x509.DecryptPEMBlock(block, []byte(passphrase)) //nolint:staticcheck
		if derr != nil {
			return nil, errors.New("cannot decrypt the private key: wrong passphrase")
		}
		key, err = x509.ParsePKCS1PrivateKey(der)
	case block.Type == "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case block.Type == "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("unsupported PEM block %q: expected an RSA private key", sanitize(block.Type, 40))
	}
	if err != nil {
		return nil, errors.New("the private key is malformed")
	}
	rk, ok := key.(*rsa.PrivateKey)
	if !ok {
		return nil, errors.New("the private key is not an RSA key (Box needs RSA)")
	}
	if rk.N.BitLen() < 2048 {
		return nil, fmt.Errorf("the RSA key has %d bits; Box needs at least 2048", rk.N.BitLen())
	}
	return rk, nil
}

// Bounds on the work that deriving an encrypted key's decryption key may
// take. The key file says how much; unchecked, a count of 2^31 PBKDF2
// iterations (about 20 minutes) or an scrypt cost of gigabytes would hang the
// start or exhaust memory. OpenSSL's default is 2048 PBKDF2 iterations (Box's
// Developer Console does not document its own; Java's and OpenSSL's tools use
// a few thousand), OWASP recommends 600 000 (SHA-256) to 1 300 000 (SHA-1); 10
// million takes 2.5 s (SHA-256) to 5 s (SHA-1) here. OpenSSL refuses scrypt
// parameters needing more than 32 MiB by default.
const (
	maxScryptMemory   = 64 << 20 // 128 * N * r bytes
	maxScryptParallel = 16
)

// maxPBKDF2Iterations is a variable only so that the fuzz test can lower it:
// under the fuzzer's instrumentation every permitted count would cost tens of
// seconds.
var maxPBKDF2Iterations int64 = 10_000_000

var (
	oidPBES2  = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 13}
	oidPBKDF2 = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 12}
	oidScrypt = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 11591, 4, 11}
)

// checkKDF reads the key derivation parameters of an encrypted PKCS#8 key
// (PBES2 with PBKDF2 or scrypt, the shapes youmark/pkcs8 reads) and refuses
// those that would take too long or too much memory, before anything is
// derived. What it cannot read, youmark/pkcs8 cannot either: it is left to
// that to refuse, without deriving anything. Its errors quote nothing of the
// key.
func checkKDF(der []byte) error {
	var info struct {
		Algorithm pkix.AlgorithmIdentifier
		Data      []byte
	}
	if _, err := asn1.Unmarshal(der, &info); err != nil || !info.Algorithm.Algorithm.Equal(oidPBES2) {
		return nil
	}
	var pbes2 struct{ KDF, Cipher pkix.AlgorithmIdentifier }
	if _, err := asn1.Unmarshal(info.Algorithm.Parameters.FullBytes, &pbes2); err != nil {
		return nil
	}
	params := pbes2.KDF.Parameters.FullBytes
	switch {
	case pbes2.KDF.Algorithm.Equal(oidPBKDF2):
		var p struct {
			Salt       []byte
			Iterations *big.Int
			PRF        pkix.AlgorithmIdentifier `asn1:"optional"`
		}
		if _, err := asn1.Unmarshal(params, &p); err != nil {
			return nil
		}
		if p.Iterations.Sign() <= 0 {
			return errors.New("the private key's encryption is malformed (a PBKDF2 iteration count below 1)")
		}
		if !p.Iterations.IsInt64() || p.Iterations.Int64() > maxPBKDF2Iterations {
			return fmt.Errorf("the private key is encrypted with more PBKDF2 iterations than the %d boxproxy accepts (it would take too long to open): "+
				"re-encrypt it with fewer (openssl pkcs8 -topk8 -v2 aes-256-cbc -iter 100000)", maxPBKDF2Iterations)
		}
	case pbes2.KDF.Algorithm.Equal(oidScrypt):
		var p struct {
			Salt        []byte
			N, R, Paral *big.Int
		}
		if _, err := asn1.Unmarshal(params, &p); err != nil {
			return nil
		}
		limit := big.NewInt(maxScryptMemory / 128)
		nr := new(big.Int).Mul(p.N, p.R)
		if p.N.Sign() <= 0 || p.R.Sign() <= 0 || p.Paral.Sign() <= 0 {
			return errors.New("the private key's encryption is malformed (scrypt parameters below 1)")
		}
		if nr.Cmp(limit) > 0 || p.Paral.Cmp(big.NewInt(maxScryptParallel)) > 0 {
			return fmt.Errorf("the private key is encrypted with scrypt parameters that need more than %d MiB or %d passes to open: "+
				"re-encrypt it with PBKDF2 (openssl pkcs8 -topk8 -v2 aes-256-cbc)", maxScryptMemory>>20, maxScryptParallel)
		}
	}
	return nil
}

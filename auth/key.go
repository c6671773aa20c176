package auth

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"

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

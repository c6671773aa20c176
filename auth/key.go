package auth

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

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

// AppConfig is the JSON app configuration the Box Developer Console downloads.
type AppConfig struct {
	BoxAppSettings struct {
		ClientID     string `json:"clientID"`
		ClientSecret string `json:"clientSecret"`
		AppAuth      struct {
			PublicKeyID string `json:"publicKeyID"`
			PrivateKey  string `json:"privateKey"`
			Passphrase  string `json:"passphrase"`
		} `json:"appAuth"`
	} `json:"boxAppSettings"`
	EnterpriseID string `json:"enterpriseID"`
	UserID       string `json:"userID"`
}

// ParseAppConfig reads and checks a Developer Console JSON file. Errors name
// the missing field, never a value.
func ParseAppConfig(data []byte) (*AppConfig, error) {
	var c AppConfig
	if err := json.Unmarshal(data, &c); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, fmt.Errorf("not valid JSON (at byte %d)", se.Offset)
		}
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, fmt.Errorf("field %q has the wrong type (want %s)", te.Field, te.Type)
		}
		return nil, errors.New("not valid JSON")
	}
	a := &c.BoxAppSettings
	for _, f := range []struct{ name, v string }{
		{"boxAppSettings.clientID", a.ClientID},
		{"boxAppSettings.clientSecret", a.ClientSecret},
		{"boxAppSettings.appAuth.publicKeyID", a.AppAuth.PublicKeyID},
		{"boxAppSettings.appAuth.privateKey", a.AppAuth.PrivateKey},
	} {
		if strings.TrimSpace(f.v) == "" {
			return nil, fmt.Errorf("%s is missing", f.name)
		}
	}
	return &c, nil
}

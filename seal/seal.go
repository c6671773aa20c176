// Package seal encrypts what boxproxy stores (tokens in Redis and in the token
// store file) with an authenticated cipher, AES-256-GCM from the standard
// library, under keys derived by HKDF-SHA256 from one secret
// (BOXPROXY_STORE_KEY or, by default, the app's client secret).
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
)

// ErrOpen is returned when sealed data was sealed under another key, or was
// changed since.
var ErrOpen = errors.New("cannot decrypt: sealed with another key, or damaged")

// version is the first byte of every sealed value: the format (AES-256-GCM,
// 12-byte random nonce, then ciphertext and tag).
const version = 1

// salt fixes HKDF's extraction to boxproxy: the same secret used elsewhere
// yields unrelated keys.
var salt = []byte("boxproxy seal v1")

// Box seals and opens values under keys derived from one secret. It is safe for
// concurrent use. Its String never shows key material.
type Box struct {
	aead  cipher.AEAD
	mac   []byte // key of Fingerprint
	keyID string
}

// New derives a Box from secret. Every purpose gets keys of its own, so a value
// sealed for one purpose never opens for another.
func New(secret, purpose string) (*Box, error) {
	if secret == "" {
		return nil, errors.New("seal: empty secret")
	}
	prk, err := hkdf.Extract(sha256.New, []byte(secret), salt)
	if err != nil {
		return nil, err
	}
	enc, err := hkdf.Expand(sha256.New, prk, purpose+"/aes-256-gcm", 32)
	if err != nil {
		return nil, err
	}
	mac, err := hkdf.Expand(sha256.New, prk, purpose+"/fingerprint", 32)
	if err != nil {
		return nil, err
	}
	id, err := hkdf.Expand(sha256.New, prk, purpose+"/key-id", 8)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(enc)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Box{aead: aead, mac: mac, keyID: hex.EncodeToString(id)}, nil
}

// Seal encrypts plain; aad (which is not secret, e.g. the Redis key) is bound to
// the result, so a value moved to another place does not open there.
func (b *Box) Seal(plain, aad []byte) []byte {
	ns := b.aead.NonceSize()
	out := make([]byte, 1+ns, 1+ns+len(plain)+b.aead.Overhead())
	out[0] = version
	if _, err := rand.Read(out[1:]); err != nil {
		panic("seal: no randomness: " + err.Error()) // crypto/rand never fails on supported systems
	}
	return b.aead.Seal(out, out[1:1+ns], plain, aad)
}

// Open decrypts what Seal made with the same key and aad, or returns ErrOpen.
func (b *Box) Open(sealed, aad []byte) ([]byte, error) {
	ns := b.aead.NonceSize()
	if len(sealed) < 1+ns+b.aead.Overhead() || sealed[0] != version {
		return nil, ErrOpen
	}
	plain, err := b.aead.Open(nil, sealed[1:1+ns], sealed[1+ns:], aad)
	if err != nil {
		return nil, ErrOpen
	}
	return plain, nil
}

// Fingerprint is a keyed hash (HMAC-SHA256) of data, in hex: equal data gives
// equal fingerprints under one key, and nobody without the key can compute or
// invert one. It lets Redis compare tokens it only holds encrypted.
func (b *Box) Fingerprint(data string) string {
	h := hmac.New(sha256.New, b.mac)
	h.Write([]byte(data))
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// KeyID names the key without revealing it (16 hex digits), so that a value
// sealed under another key is told apart from a damaged one.
func (b *Box) KeyID() string { return b.keyID }

// String keeps key material out of logs.
func (b *Box) String() string { return "seal.Box(" + b.keyID + ")" }

// GoString keeps key material out of %#v.
func (b *Box) GoString() string { return b.String() }

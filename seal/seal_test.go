package seal

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestSealedValueOpensOnlyWithSameKeyPurposeAndPlace(t *testing.T) {
	a, err := New("0123456789abcdef0123456789abcdef", "tokens")
	if err != nil {
		t.Fatal(err)
	}
	plain := []byte("AccessTokenSecret123")
	s := a.Seal(plain, []byte("key1"))
	if bytes.Contains(s, plain) {
		t.Fatal("sealed value contains the plaintext")
	}
	if got, err := a.Open(s, []byte("key1")); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("Open = %q, %v", got, err)
	}
	if bytes.Equal(s, a.Seal(plain, []byte("key1"))) {
		t.Error("two seals of one value are equal: the nonce is not random")
	}
	other, _ := New("another key of at least 32 characters!!", "tokens")
	otherPurpose, _ := New("0123456789abcdef0123456789abcdef", "login")
	damaged := append([]byte{}, s...)
	damaged[len(damaged)-1] ^= 1
	for name, try := range map[string]func() ([]byte, error){
		"other key":     func() ([]byte, error) { return other.Open(s, []byte("key1")) },
		"other purpose": func() ([]byte, error) { return otherPurpose.Open(s, []byte("key1")) },
		"other place":   func() ([]byte, error) { return a.Open(s, []byte("key2")) },
		"damaged":       func() ([]byte, error) { return a.Open(damaged, []byte("key1")) },
		"short":         func() ([]byte, error) { return a.Open(s[:5], []byte("key1")) },
	} {
		if _, err := try(); !errors.Is(err, ErrOpen) {
			t.Errorf("%s: err %v, want ErrOpen", name, err)
		}
	}
	if a.KeyID() == other.KeyID() || a.KeyID() == otherPurpose.KeyID() {
		t.Error("key IDs of different keys are equal")
	}
	again, _ := New("0123456789abcdef0123456789abcdef", "tokens")
	if a.Fingerprint("x") != again.Fingerprint("x") || a.Fingerprint("x") == other.Fingerprint("x") || a.Fingerprint("x") == a.Fingerprint("y") {
		t.Error("fingerprints are not keyed and stable")
	}
	if out := fmt.Sprintf("%v %+v %#v", a, a, a); strings.Contains(out, "0123456789abcdef") {
		t.Errorf("formatting shows the key: %s", out)
	}
}

func TestEmptySecretIsAnError(t *testing.T) {
	if _, err := New("", "x"); err == nil {
		t.Fatal("no error for an empty secret")
	}
}

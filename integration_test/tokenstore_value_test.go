package integration_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// BOXPROXY_TOKEN_STORE is never quoted, in a log line, an error or the
// commands' output: a refresh token pasted into it by mistake must not be
// printed (README, "No value in any error"). Errors name the variable and say
// what is wrong.
func TestTokenStoreValueIsNeverPrinted(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	dir := t.TempDir()
	pasted := "rt" + randomHex(t, 20) // what a pasted refresh token looks like: a valid file name
	corrupt := filepath.Join(dir, "c-"+pasted)
	if err := writeFile(corrupt, []byte(`{"version":1,`)); err != nil {
		t.Fatal(err)
	}
	readOnly := filepath.Join(dir, "ro")
	if err := os.Mkdir(readOnly, 0o500); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, store, want string }{
		{"a missing directory", filepath.Join(dir, "none", pasted), "BOXPROXY_TOKEN_STORE: "},
		{"a corrupt file", corrupt, "BOXPROXY_TOKEN_STORE: "},
		{"a directory", filepath.Join(dir, pasted) + "/", "BOXPROXY_TOKEN_STORE: "},
		{"an unwritable directory", filepath.Join(readOnly, pasted), "BOXPROXY_TOKEN_STORE: "},
	} {
		if c.name == "a directory" {
			_ = os.Mkdir(c.store, 0o700)
		}
		if c.name == "an unwritable directory" && os.Geteuid() == 0 {
			continue // root writes anywhere
		}
		for _, args := range [][]string{nil, {"check"}, {"logout"}} {
			stdout, stderr, code := runBinary(t, with(oauthEnv(box, c.store), "BOXPROXY_LISTEN=127.0.0.1:0"), args...)
			if code != 1 || !strings.Contains(stderr, c.want) {
				t.Errorf("%s, boxproxy %v: exit %d, stderr %q; want exit 1 naming BOXPROXY_TOKEN_STORE", c.name, args, code, stderr)
			}
			assertNoSecretPieces(t, c.name+" output", stdout+stderr, pasted)
		}
	}

	// A start that works, and logout without a login, do not print it either.
	store := filepath.Join(dir, pasted)
	_ = os.Remove(store)
	stdout, stderr, code := runBinary(t, with(oauthEnv(box, store), "BOXPROXY_LISTEN=127.0.0.1:0"), "logout")
	if code != 0 {
		t.Errorf("logout: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	assertNoSecretPieces(t, "logout output", stdout+stderr, pasted)
	bp := startBinary(t, box, oauthEnv(box, store)...)
	bp.AddSecret(pasted)
}

package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/boxproxy/boxproxy/seal"
)

var testSeal = func() *seal.Box {
	b, err := seal.New("test store key of at least 32 characters", "test")
	if err != nil {
		panic(err)
	}
	return b
}()

func sampleStore() storeData {
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	return storeData{
		Version:     storeVersion,
		AccessToken: "AccessTokenSecret123", AccessExpiry: t0.Add(time.Hour), AccessObtained: t0,
		RefreshToken: "RefreshTokenSecret456", RefreshObtained: t0,
		User: &StoredUser{ID: "42", Login: "ada@example.com", Name: "Ada Lovelace"},
	}
}

func TestStoreWriteIsAtomicWithMode0600AndNoLeftovers(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tokens.json")
	// An older store that others could read is replaced by a private one.
	if err := os.WriteFile(path, []byte(`{"version":1}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		st := sampleStore()
		st.RefreshToken += string(rune('a' + i))
		if err := writeStore(path, testSeal, st); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Fatalf("mode %04o, want 0600", fi.Mode().Perm())
		}
		got, _, err := loadStore(path, testSeal, func(m string) { t.Errorf("unexpected warning: %s", m) })
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, st) {
			t.Fatalf("read back %+v, want %+v", got, st) // storeData redacts itself in %v
		}
		if got.RefreshToken != st.RefreshToken {
			t.Fatal("refresh token not read back")
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "tokens.json" {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("directory holds %v, want only tokens.json", names)
	}
}

func TestStoreWriteFailsCleanlyWhenDirectoryIsGone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gone", "tokens.json")
	err := writeStore(path, testSeal, sampleStore())
	if err == nil {
		t.Fatal("write into a missing directory succeeded")
	}
	if strings.Contains(err.Error(), "Secret") {
		t.Fatalf("error quotes a token: %v", err)
	}
}

func TestMissingOrEmptyStoreIsNotLoggedIn(t *testing.T) {
	dir := t.TempDir()
	st, _, err := loadStore(filepath.Join(dir, "none.json"), testSeal, func(string) {})
	if err != nil || st.RefreshToken != "" {
		t.Fatalf("missing store: %v, logged in %v", err, st.RefreshToken != "")
	}
	empty := filepath.Join(dir, "empty.json")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	st, _, err = loadStore(empty, testSeal, func(string) {})
	if err != nil || st.RefreshToken != "" {
		t.Fatalf("empty store: %v, logged in %v", err, st.RefreshToken != "")
	}
}

func TestBrokenStoreStopsTheStartWithAClearError(t *testing.T) {
	good, _ := sampleStore().encode()
	cases := []struct {
		name    string
		setup   func(path string) error
		wantMsg string
	}{
		{"bad json", func(p string) error {
			return os.WriteFile(p, []byte(`{"version":1,"refresh_token":"RefreshTokenSecret456"`), 0o600)
		}, "not valid JSON"},
		{"truncated", func(p string) error { return os.WriteFile(p, good[:len(good)/2], 0o600) }, "not valid JSON"},
		{"not an object", func(p string) error { return os.WriteFile(p, []byte(`["RefreshTokenSecret456"]`), 0o600) }, "wrong type"},
		{"wrong type", func(p string) error { return os.WriteFile(p, []byte(`{"version":1,"refresh_token":17}`), 0o600) }, "wrong type"},
		{"future version", func(p string) error { return os.WriteFile(p, []byte(`{"version":7}`), 0o600) }, "version 7"},
		{"no version", func(p string) error {
			return os.WriteFile(p, []byte(`{"refresh_token":"RefreshTokenSecret456"}`), 0o600)
		}, "version 0"},
		{"bad token", func(p string) error {
			return os.WriteFile(p, []byte(`{"version":1,"refresh_token":"Refresh TokenSecret456"}`), 0o600)
		}, "refresh_token holds characters"},
		{"access without expiry", func(p string) error {
			return os.WriteFile(p, []byte(`{"version":1,"access_token":"AccessTokenSecret123","refresh_token":"RefreshTokenSecret456"}`), 0o600)
		}, "no access_token_expiry"},
		{"trailing garbage", func(p string) error { return os.WriteFile(p, append(good, []byte("RefreshTokenSecret456")...), 0o600) }, "not valid JSON"},
		{"directory", func(p string) error { return os.Mkdir(p, 0o700) }, "is a directory"},
	}
	if os.Geteuid() != 0 { // root reads anything
		cases = append(cases, struct {
			name    string
			setup   func(path string) error
			wantMsg string
		}{"unreadable", func(p string) error { return os.WriteFile(p, good, 0o000) }, "permission denied"})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tokens.json")
			if err := tc.setup(path); err != nil {
				t.Fatal(err)
			}
			before, _ := os.ReadFile(path)
			o, err := NewOAuth(&Endpoint{ClientID: "cid", ClientSecret: "csecret"}, OAuthOptions{Path: path, Seal: testSeal}, zerolog.Nop())
			if err == nil {
				t.Fatalf("NewOAuth accepted a broken store (logged in: %v)", o.LoggedIn())
			}
			msg := err.Error()
			for _, want := range []string{"BOXPROXY_TOKEN_STORE: ", tc.wantMsg} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not mention %q", msg, want)
				}
			}
			if strings.Contains(msg, "tokens.json") {
				t.Errorf("error %q quotes BOXPROXY_TOKEN_STORE's value", msg)
			}
			if strings.Contains(msg, "Secret") {
				t.Errorf("error quotes a token: %q", msg)
			}
			after, _ := os.ReadFile(path)
			if !bytes.Equal(before, after) {
				t.Error("the broken store was changed")
			}
		})
	}
}

func TestNewOAuthNeedsAWritableStoreDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing-dir", "tokens.json")
	_, err := NewOAuth(&Endpoint{}, OAuthOptions{Path: path, Seal: testSeal}, zerolog.Nop())
	if err == nil || !strings.Contains(err.Error(), "BOXPROXY_TOKEN_STORE") {
		t.Fatalf("NewOAuth with a store in a missing directory: %v", err)
	}
}

func TestGroupReadableStoreIsWarnedAboutAndMadePrivate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.json")
	data, _ := sampleStore().encode()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	o, err := NewOAuth(&Endpoint{}, OAuthOptions{Path: path, Seal: testSeal}, zerolog.New(&logs))
	if err != nil {
		t.Fatal(err)
	}
	if !o.LoggedIn() {
		t.Fatal("not logged in from a valid store")
	}
	if !strings.Contains(logs.String(), `"level":"warn"`) || !strings.Contains(logs.String(), "0644") {
		t.Fatalf("no warning about mode 0644 in %s", logs.String())
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %04o after start, want 0600", fi.Mode().Perm())
	}
	if strings.Contains(logs.String(), "Secret") {
		t.Fatal("a token was logged")
	}
}

func TestNewOAuthRemovesTempFilesACrashLeftBehind(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tokens.json")
	leftover := filepath.Join(dir, tempPrefix(path)+"123456")
	other := filepath.Join(dir, "unrelated.tmp-1")
	for _, p := range []string{leftover, other} {
		if err := os.WriteFile(p, []byte("{"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := NewOAuth(&Endpoint{}, OAuthOptions{Path: path, Seal: testSeal}, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(leftover); !errors.Is(err, os.ErrNotExist) {
		t.Error("leftover temporary file was not removed")
	}
	if _, err := os.Stat(other); err != nil {
		t.Error("an unrelated file was removed")
	}
}

func TestNewOAuthFollowsASymlinkedStore(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "real", "tokens.json")
	if err := os.Mkdir(filepath.Dir(real), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := writeStore(real, testSeal, sampleStore()); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.json")
	if err := os.Symlink(real, link); err != nil {
		t.Skip("no symlinks:", err)
	}
	o, err := NewOAuth(&Endpoint{}, OAuthOptions{Path: link, Seal: testSeal}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if o.Path() != real {
		t.Fatalf("store path %s, want the link's target %s", o.Path(), real)
	}
}

func TestStoredUserIsCleanedForDisplay(t *testing.T) {
	st, err := parseStore([]byte(`{"version":1,"user":{"id":"4\n2","name":"Zoë\u0007 <b>","login":"a@b.c"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if st.User.ID != "42" || st.User.Name != "Zoë <b>" || st.User.String() != "Zoë <b> (a@b.c)" {
		t.Fatalf("user %+v", *st.User)
	}
}

func FuzzLoadStore(f *testing.F) {
	good, _ := sampleStore().encode()
	f.Add(good)
	f.Add([]byte(``))
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`{"version":1,"refresh_token":"r","refresh_rejected":{"at":"2025-01-01T00:00:00Z","error":"invalid_grant"}}`))
	f.Add([]byte(`{"version":1,"access_token":"a","refresh_token":"r","access_token_expiry":"not a time"}`))
	f.Add([]byte(`{"version":1,"user":{"name":"\u0000\ud800"}}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"version":1e400}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := parseStore(data)
		if err != nil {
			if bytes.Contains(data, []byte("Secret")) && strings.Contains(err.Error(), "Secret") {
				t.Fatalf("error quotes the file: %v", err)
			}
			return
		}
		// Whatever loads must survive a write and load the same.
		out, err := st.encode()
		if err != nil {
			t.Fatal(err)
		}
		again, err := parseStore(out)
		if err != nil {
			t.Fatalf("re-reading a written store: %v", err)
		}
		a, _ := json.Marshal(st)
		b, _ := json.Marshal(again)
		if !bytes.Equal(a, b) {
			t.Fatalf("round trip changed the store:\n%s\n%s", a, b)
		}
	})
}

func TestStoreFileIsEncryptedAndAnotherKeyIsRefusedNamingBOXPROXY_STORE_KEY(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tokens.json")
	st := sampleStore()
	if err := writeStore(path, testSeal, st); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	for _, secret := range []string{st.AccessToken, st.RefreshToken, "ada@example.com"} {
		if bytes.Contains(data, []byte(secret)) {
			t.Fatalf("the store file holds %q in plaintext", secret)
		}
	}
	other, _ := seal.New("another store key, also 32+ characters", "test")
	_, err := NewOAuth(&Endpoint{}, OAuthOptions{Path: path, Seal: other}, zerolog.Nop())
	if err == nil || !strings.Contains(err.Error(), "BOXPROXY_STORE_KEY") || strings.Contains(err.Error(), "Secret") {
		t.Fatalf("a store sealed under another key: %v; want an error naming BOXPROXY_STORE_KEY", err)
	}
	// A damaged file is not mistaken for another key.
	var sf sealedFile
	_ = json.Unmarshal(data, &sf)
	sf.Sealed[len(sf.Sealed)-1] ^= 1
	bad, _ := json.Marshal(sf)
	_ = os.WriteFile(path, bad, 0o600)
	if _, err := NewOAuth(&Endpoint{}, OAuthOptions{Path: path, Seal: testSeal}, zerolog.Nop()); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("a damaged store: %v", err)
	}
}

func TestPlaintextStoreOfAnOlderVersionIsReadOnceAndRewrittenEncrypted(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tokens.json")
	st := sampleStore()
	st.AccessExpiry = time.Now().Add(time.Hour)
	plain, _ := st.encode()
	if err := os.WriteFile(path, plain, 0o600); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	o, err := NewOAuth(&Endpoint{}, OAuthOptions{Path: path, Seal: testSeal}, zerolog.New(&logs))
	if err != nil {
		t.Fatal(err)
	}
	if !o.LoggedIn() {
		t.Fatal("the plaintext store's login was not read")
	}
	data, _ := os.ReadFile(path)
	if bytes.Contains(data, []byte(st.RefreshToken)) {
		t.Fatal("the plaintext store was not rewritten encrypted")
	}
	got, plainAgain, err := loadStore(path, testSeal, func(string) {})
	if err != nil || plainAgain || got.RefreshToken != st.RefreshToken {
		t.Fatalf("rewritten store: %v, still plaintext %v", err, plainAgain)
	}
	if !strings.Contains(logs.String(), "rewritten encrypted") || strings.Contains(logs.String(), "Secret") {
		t.Errorf("logs: %s", logs.String())
	}
}

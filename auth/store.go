package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/boxproxy/boxproxy/internal/safefile"
	"github.com/boxproxy/boxproxy/seal"
)

// storeVersion is the format of the token store's content (inside the
// encryption since version 2 of the file).
const storeVersion = 1

// sealedVersion is the format of an encrypted token store file:
// {"version":2,"key_id":…,"sealed":…}, sealed being storeData's JSON encrypted
// by seal (AES-256-GCM under a key derived from BOXPROXY_STORE_KEY).
const sealedVersion = 2

// storeAAD binds a sealed store to its use: a value sealed for Redis does not
// open as a store file.
var storeAAD = []byte("boxproxy token store file")

// sealedFile is the token store file's encrypted form.
type sealedFile struct {
	Version int    `json:"version"`
	KeyID   string `json:"key_id"`
	Sealed  []byte `json:"sealed"`
}

// ErrStoreKey is returned when stored tokens were encrypted under another key
// than this process's BOXPROXY_STORE_KEY (or, without it, its client secret).
var ErrStoreKey = errors.New("the stored tokens were encrypted with another BOXPROXY_STORE_KEY (or, without one, another client secret): set the same BOXPROXY_STORE_KEY as the process that wrote them, or log in again")

// decodeFile reads a token store file: the encrypted form, or the plaintext
// form of older versions (plain is then true: the caller rewrites it
// encrypted).
func decodeFile(data []byte, sl *seal.Box) (st storeData, plain bool, err error) {
	var head struct {
		Version int `json:"version"`
	}
	if json.Unmarshal(data, &head) != nil || head.Version != sealedVersion {
		st, err := parseStore(data)
		return st, err == nil && (st.AccessToken != "" || st.RefreshToken != ""), err
	}
	var sf sealedFile
	if err := json.Unmarshal(data, &sf); err != nil {
		return storeData{}, false, errors.New("not a valid encrypted token store")
	}
	if sl == nil {
		return storeData{}, false, errors.New("is encrypted, and no key is set")
	}
	inner, err := sl.Open(sf.Sealed, storeAAD)
	if err != nil {
		if sf.KeyID != sl.KeyID() {
			return storeData{}, false, ErrStoreKey
		}
		return storeData{}, false, errors.New("is damaged: its encrypted content does not verify")
	}
	st, err = parseStore(inner)
	return st, false, err
}

// encodeFile renders the encrypted store file.
func encodeFile(st storeData, sl *seal.Box) ([]byte, error) {
	if sl == nil {
		return nil, errors.New("no key to encrypt the token store with")
	}
	inner, err := st.encode()
	if err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(sealedFile{Version: sealedVersion, KeyID: sl.KeyID(), Sealed: sl.Seal(inner, storeAAD)}, "", "  ")
	if err != nil {
		return nil, errors.New("cannot encode the token store")
	}
	return append(b, '\n'), nil
}

// maxStoreSize bounds how much of a token store file is read.
const maxStoreSize = safefile.MaxSize

// StoredUser is who logged in, as far as boxproxy learned it from Box's
// /2.0/users/me after the login.
type StoredUser struct {
	ID    string `json:"id,omitempty"`
	Login string `json:"login,omitempty"`
	Name  string `json:"name,omitempty"`
}

// String names the user for people: "Name (login)", or what is known of it.
func (u StoredUser) String() string {
	switch {
	case u.Name != "" && u.Login != "":
		return u.Name + " (" + u.Login + ")"
	case u.Login != "":
		return u.Login
	case u.Name != "":
		return u.Name
	case u.ID != "":
		return "user " + u.ID
	}
	return "an unknown user"
}

// clean keeps the fields printable and short: they are shown on pages and
// in logs.
func (u StoredUser) clean() StoredUser {
	return StoredUser{ID: sanitize(u.ID, 32), Login: cleanText(u.Login, 256), Name: cleanText(u.Name, 256)}
}

// cleanText keeps valid UTF-8 without control characters, up to n bytes.
func cleanText(s string, n int) string {
	var b strings.Builder
	for _, r := range strings.ToValidUTF8(s, "") {
		if unicode.IsControl(r) || r == utf8.RuneError {
			continue
		}
		if b.Len()+utf8.RuneLen(r) > n {
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}

// storeRejection records that Box refused the stored refresh token, so that a
// restart keeps saying "log in again" instead of "not logged in".
type storeRejection struct {
	At          time.Time `json:"at"`
	Code        string    `json:"error,omitempty"`
	Description string    `json:"error_description,omitempty"`
}

// storeData is the token store file: the oauth method's whole persistent state.
// It holds secrets: it never goes into a log line or an error message.
type storeData struct {
	Version         int             `json:"version"`
	AccessToken     string          `json:"access_token,omitempty"`
	AccessExpiry    time.Time       `json:"access_token_expiry,omitzero"`
	AccessObtained  time.Time       `json:"access_token_obtained,omitzero"`
	RefreshToken    string          `json:"refresh_token,omitempty"`
	RefreshObtained time.Time       `json:"refresh_token_obtained,omitzero"`
	User            *StoredUser     `json:"user,omitempty"`
	Rejected        *storeRejection `json:"refresh_rejected,omitempty"`
	// LoginSeq and Rotation order the states of a fleet's login without
	// clocks: every login (code exchange) takes a LoginSeq above the one it
	// replaces, every refresh of it adds one to Rotation. Both are set under
	// the fleet's refresh lock. Logins stored by an older boxproxy have
	// neither (see newerThan).
	LoginSeq int64 `json:"login_seq,omitempty"`
	Rotation int64 `json:"rotation,omitempty"`
}

// ordered reports whether s carries LoginSeq or Rotation.
func (s storeData) ordered() bool { return s.LoginSeq > 0 || s.Rotation > 0 }

// newerThan reports whether s is a later state of the fleet's login than b:
// a later login, or a later rotation of the same login. Between states that
// do not both carry the order (written by an older boxproxy) it falls back to
// the refresh tokens' stamps, which come from different replicas' clocks.
func (s storeData) newerThan(b storeData) bool {
	if s.ordered() && b.ordered() {
		if s.LoginSeq != b.LoginSeq {
			return s.LoginSeq > b.LoginSeq
		}
		return s.Rotation > b.Rotation
	}
	return s.RefreshObtained.After(b.RefreshObtained)
}

// otherLogin reports whether s is another login than b (another code
// exchange, or a logout), as far as can be told: logins stored by an older
// boxproxy cannot be told apart from their own rotations.
func (s storeData) otherLogin(b storeData) bool {
	switch {
	case s.RefreshToken != "" && b.RefreshToken == "":
		return true // a login where there was none (or a rejected one)
	case s.RefreshToken == "" && s.Rejected == nil:
		return b.RefreshToken != "" // logged out
	case s.RefreshToken == "":
		return false // b's refresh token rejected: the same login
	}
	return s.LoginSeq != b.LoginSeq
}

// String keeps the tokens out of %v.
func (s storeData) String() string { return "storeData(redacted)" }

// GoString keeps the tokens out of %#v.
func (s storeData) GoString() string { return s.String() }

// parseStore reads a token store file. An empty file (only white space) is an
// empty store. Its errors say what is wrong without quoting the file (which
// holds tokens).
func parseStore(data []byte) (storeData, error) {
	var st storeData
	if len(bytes.TrimSpace(data)) == 0 {
		return storeData{Version: storeVersion}, nil
	}
	if err := json.Unmarshal(data, &st); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			return storeData{}, fmt.Errorf("not valid JSON (syntax error at byte %d)", se.Offset)
		case errors.As(err, &te):
			return storeData{}, fmt.Errorf("field %q has the wrong type", sanitize(te.Field, 64))
		}
		return storeData{}, errors.New("not valid JSON")
	}
	if st.Version != storeVersion {
		return storeData{}, fmt.Errorf("unknown format version %d (this boxproxy reads version %d)", st.Version, storeVersion)
	}
	if err := checkStoredToken("access_token", st.AccessToken); err != nil {
		return storeData{}, err
	}
	if err := checkStoredToken("refresh_token", st.RefreshToken); err != nil {
		return storeData{}, err
	}
	if st.AccessToken != "" && st.AccessExpiry.IsZero() {
		return storeData{}, errors.New("access_token has no access_token_expiry")
	}
	if st.AccessToken != "" && st.RefreshToken == "" {
		return storeData{}, errors.New("access_token without refresh_token")
	}
	if st.User != nil {
		// Shown on pages and in logs: keep it printable and short.
		*st.User = st.User.clean()
	}
	if st.Rejected != nil {
		st.Rejected.Code, st.Rejected.Description = sanitize(st.Rejected.Code, 64), sanitize(st.Rejected.Description, 300)
	}
	return st, nil
}

// checkStoredToken accepts what Box issues: printable ASCII without spaces or
// quotes, up to 4 KiB.
func checkStoredToken(field, v string) error {
	if len(v) > 4096 {
		return fmt.Errorf("%s is too long", field)
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c <= 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return fmt.Errorf("%s holds characters that no Box token has", field)
		}
	}
	return nil
}

// encode renders the store file.
func (s storeData) encode() ([]byte, error) {
	s.Version = storeVersion
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return nil, errors.New("cannot encode the token store")
	}
	return append(b, '\n'), nil
}

// tempPrefix is the name prefix of the temporary files that writeStore renames
// over path; leftovers of a crash are removed by cleanTemps.
func tempPrefix(path string) string { return "." + filepath.Base(path) + ".tmp-" }

// journalPath is where a refresh's answer is written first, quickly and
// without waiting for the disk (see writeJournal).
func journalPath(path string) string { return path + ".new" }

// loadStore reads the store at path. A missing file is an empty store (not
// logged in); anything else that cannot be read or parsed is an error, so that
// a broken store stops the start instead of silently throwing the login away.
// warn reports a store that others may read.
// plain reports a store written unencrypted by an older boxproxy.
func loadStore(path string, sl *seal.Box, warn func(msg string)) (storeData, bool, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return storeData{Version: storeVersion}, false, nil
	}
	if err != nil {
		return storeData{}, false, fmt.Errorf("cannot stat: %v", pathErr(err))
	}
	data, err := safefile.Read(path, maxStoreSize)
	if err != nil {
		return storeData{}, false, fmt.Errorf("cannot read the file: %v", err)
	}
	st, plain, err := decodeFile(data, sl)
	if err != nil {
		return storeData{}, false, err
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		msg := fmt.Sprintf("token store has mode %04o: other users may read the tokens; it should be 0600", perm)
		if cerr := os.Chmod(path, 0o600); cerr == nil {
			msg += " (changed to 0600)"
		} else {
			msg += " and cannot be changed: " + pathErr(cerr).Error()
		}
		warn(msg)
	}
	return st, plain, nil
}

// Errors here never name the path (the caller names BOXPROXY_TOKEN_STORE):
// a refresh token pasted into the variable would be a valid file name.

// checkStoreDir makes sure that new versions of the store can be written next
// to path: a refresh token that Box has rotated but that cannot be saved is a
// lost login, so an unwritable directory is an error at start, not later.
func checkStoreDir(path string) error {
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("the file's directory: %v", pathErr(err))
	}
	if !fi.IsDir() {
		return errors.New("the file's directory is not a directory")
	}
	f, err := os.CreateTemp(dir, tempPrefix(path))
	if err != nil {
		return fmt.Errorf("cannot create files in the file's directory (the store is replaced atomically, so its directory must be writable): %v", pathErr(err))
	}
	name := f.Name()
	_ = f.Close()
	return os.Remove(name)
}

// cleanTemps removes temporary files that a crash left beside path.
func cleanTemps(path string) {
	matches, _ := filepath.Glob(filepath.Join(filepath.Dir(path), globEscape(tempPrefix(path))+"*"))
	for _, m := range matches {
		_ = os.Remove(m)
	}
}

func globEscape(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `*`, `\*`, `?`, `\?`, `[`, `\[`)
	return r.Replace(s)
}

// writeStore replaces the store at path atomically: the new content goes to a
// temporary file in the same directory (mode 0600), which is synced to disk and
// renamed over path; then the directory is synced, so that the rename itself
// survives a power loss. Whatever moment the process dies, path holds either
// the old or the new store, whole.
func writeStore(path string, sl *seal.Box, st storeData) error {
	data, err := encodeFile(st, sl)
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, tempPrefix(path)) // created with mode 0600
	if err != nil {
		return fmt.Errorf("cannot create a temporary file in the store's directory: %v", pathErr(err))
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return fmt.Errorf("cannot set mode 0600: %v", pathErr(err))
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("cannot write: %v", pathErr(err))
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("cannot sync: %v", pathErr(err))
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("cannot close: %v", pathErr(err))
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("cannot rename the new store into place: %v", pathErr(err))
	}
	ok = true
	syncDir(dir)
	// The store is now at least as new as any journal: drop it, so that a
	// journal never outlives the state it was written for.
	_ = os.Remove(journalPath(path))
	return nil
}

// writeJournal writes st beside the store at once, before writeStore, which
// must wait for the disk: a refresh token that Box has just rotated then
// survives a kill in the milliseconds that fsync takes. The journal too is
// written to a temporary file and renamed, so it is whole or absent; it is
// not synced (writeStore does that for the store right after), and the next
// start takes it over when it holds a newer login than the store.
func writeJournal(path string, sl *seal.Box, st storeData) error {
	data, err := encodeFile(st, sl)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), tempPrefix(path))
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, werr := f.Write(data)
	cerr := f.Close()
	if werr == nil && cerr == nil {
		werr = os.Rename(tmp, journalPath(path))
	}
	if werr == nil {
		werr = cerr
	}
	if werr != nil {
		_ = os.Remove(tmp)
	}
	return werr
}

// recoverJournal returns the journal's state when a crash interrupted a save
// after writeJournal (it holds a refresh token that the store lacks), and
// removes a journal that is not needed.
func recoverJournal(path string, sl *seal.Box, st storeData) (storeData, bool) {
	data, err := safefile.Read(journalPath(path), maxStoreSize)
	if err != nil {
		return st, false
	}
	js, _, err := decodeFile(data, sl)
	if err != nil || js.RefreshToken == "" || js.RefreshToken == st.RefreshToken {
		_ = os.Remove(journalPath(path))
		return st, false
	}
	return js, true
}

// removeStore deletes the store and its journal (logout).
func removeStore(path string) error {
	for _, p := range []string{journalPath(path), path} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("cannot remove: %v", pathErr(err))
		}
	}
	syncDir(filepath.Dir(path))
	return nil
}

// syncDir makes a rename or removal in dir durable. Some systems cannot sync a
// directory; the rename has happened either way, so a failure is ignored.
func syncDir(dir string) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	_ = d.Sync()
	_ = d.Close()
}

// pathErr drops the path from an *os.PathError (the caller names the store).
func pathErr(err error) error { return safefile.Unwrap(err) }

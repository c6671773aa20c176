package auth

import (
	"net/url"
	"strings"
)

// Redaction of what the token endpoint says back. Box's error_description is
// worth showing (it says what is wrong with the app), but a token endpoint
// that echoes the request (a gateway in front of it, a misconfigured stand-in)
// would put the client secret, the refresh token, the authorization code or
// the JWT assertion into every place that shows the error: logs, the JSON
// errors clients get, /readyz, `boxproxy check`, the login page and the token
// store. So every secret of the request is cut out of Box's code and
// description before they are kept, in every spelling the echo may use (as
// sent, URL-encoded, without its unprintable bytes), and so is every piece of
// one that is at least minSecretPiece bytes long (an echo cut short, or one
// that quotes part of a value).

const (
	// redactedMark replaces what was cut out.
	redactedMark = "[redacted]"
	// minSecretPiece is the shortest piece of a secret that is cut out. Box's
	// own messages are English words; a random secret shares no run of 8
	// characters with them.
	minSecretPiece = 8
	// minWholeSecret is the shortest secret whose whole occurrences are cut
	// out when it is shorter than minSecretPiece; cutting out every "ab"
	// would leave nothing readable.
	minWholeSecret = 4
)

// publicFormFields are the token request's fields that hold nothing secret;
// every other field's value is redacted from the answer.
var publicFormFields = map[string]bool{
	"grant_type": true, "client_id": true, "box_subject_type": true, "box_subject_id": true, "redirect_uri": true,
}

// requestSecrets returns the secret values of form, and extra.
func requestSecrets(form url.Values, extra []string) []string {
	out := append([]string(nil), extra...)
	for k, vs := range form {
		if publicFormFields[k] {
			continue
		}
		out = append(out, vs...)
	}
	return out
}

// redactSecrets returns s with every secret, and every piece of one of at
// least minSecretPiece bytes, replaced by redactedMark. Matching ignores
// ASCII case (an echo may change the case of percent-encoding).
func redactSecrets(s string, secrets []string) string {
	if s == "" {
		return s
	}
	cut := make([]bool, len(s))
	found := false
	for _, sec := range secrets {
		for _, v := range spellings(sec) {
			if markSecret(s, v, cut) {
				found = true
			}
		}
	}
	if !found {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if !cut[i] {
			b.WriteByte(s[i])
			continue
		}
		b.WriteString(redactedMark)
		for i+1 < len(s) && cut[i+1] {
			i++
		}
	}
	return b.String()
}

// spellings are the forms in which sec may come back: as sent, URL-encoded
// (query and path style), and with only its printable ASCII (what sanitize
// keeps of it).
func spellings(sec string) []string {
	if len(sec) < minWholeSecret {
		return nil
	}
	out := []string{sec}
	for _, v := range []string{url.QueryEscape(sec), url.PathEscape(sec), sanitize(sec, len(sec))} {
		dup := false
		for _, o := range out {
			dup = dup || o == v
		}
		if !dup && len(v) >= minWholeSecret {
			out = append(out, v)
		}
	}
	return out
}

// markSecret marks in cut the bytes of s that belong to an occurrence of v
// (when v is shorter than minSecretPiece) or to a common run of at least
// minSecretPiece bytes with v. It reports whether it marked any.
func markSecret(s, v string, cut []bool) bool {
	if len(v) < minSecretPiece {
		marked := false
		ls, lv := strings.ToLower(s), strings.ToLower(v)
		for off := 0; ; {
			i := strings.Index(ls[off:], lv)
			if i < 0 {
				return marked
			}
			for j := off + i; j < off+i+len(v); j++ {
				cut[j] = true
			}
			marked, off = true, off+i+1
		}
	}
	// run[j] is the length of the common run of s and v ending at s[i-1]
	// and v[j-1] (longest common substring, one row at a time).
	prev, run := make([]int, len(v)+1), make([]int, len(v)+1)
	marked := false
	for i := 1; i <= len(s); i++ {
		best := 0
		for j := 1; j <= len(v); j++ {
			if lower(s[i-1]) == lower(v[j-1]) {
				run[j] = prev[j-1] + 1
				best = max(best, run[j])
			} else {
				run[j] = 0
			}
		}
		if best >= minSecretPiece {
			for k := i - best; k < i; k++ {
				cut[k] = true
			}
			marked = true
		}
		prev, run = run, prev
	}
	return marked
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

package auth

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// A token endpoint that echoes what it was sent, in whatever spelling, cut
// where it likes: no secret of the request (nor the configuration's others)
// survives in the TokenError, and Box's own words do.
func TestTokenEndpointEchoOfTheRequestIsRedacted(t *testing.T) {
	const (
		secret     = "CLIENT+SECRET/abcdefgh1234"
		refresh    = "REFRESHtokenQ8w7e6r5t4y3u2i1o0pZ"
		code       = "AUTHcodeZ9x8c7v6b5n4m3"
		assertion  = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJjaWQifQ.c2lnbmF0dXJlLW9mLXRoZS1hc3NlcnRpb24"
		storeKey   = "STOREKEY-0123456789abcdef0123456789abcdef"
		inboundKey = "INBOUNDKEY-fedcba9876543210"
	)
	echo := map[string]func(body string, form url.Values) string{
		"the form as sent":      func(body string, _ url.Values) string { return "bad request: " + body },
		"the values decoded":    func(_ string, f url.Values) string { return "got " + strings.Join(values(f), " and ") },
		"upper-cased encoding":  func(body string, _ url.Values) string { return strings.ReplaceAll(body, "%2f", "%2F") },
		"a piece of each value": func(_ string, f url.Values) string { return "starts " + strings.Join(pieces(f, 9), ", ") },
		"the end cut off":       func(body string, _ url.Values) string { return strings.Repeat("x ", 131) + body },
		"the other secrets": func(string, url.Values) string {
			return "your store key " + storeKey + " and inbound key " + inboundKey[:12]
		},
		"with unprintable bytes": func(_ string, f url.Values) string {
			return "secret " + f.Get("client_secret")[:10] + "\x01" + f.Get("client_secret")[10:]
		},
		"as the error code":       func(_ string, f url.Values) string { return "" },
		"Box's own words, intact": func(string, url.Values) string { return "The refresh token is invalid or expired" },
	}
	for name, describe := range echo {
		for _, form := range []url.Values{
			{"grant_type": {"refresh_token"}, "refresh_token": {refresh}},
			{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {"http://localhost:8080/auth/callback"}},
			{"grant_type": {"urn:ietf:params:oauth:grant-type:jwt-bearer"}, "assertion": {assertion}},
		} {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				f, _ := url.ParseQuery(string(body))
				errCode := "invalid_grant"
				if name == "as the error code" {
					errCode = f.Get("client_secret")
				}
				w.WriteHeader(http.StatusBadRequest)
				_ = json.NewEncoder(w).Encode(map[string]string{"error": errCode, "error_description": describe(string(body), f)})
			}))
			ep := &Endpoint{URL: srv.URL, ClientID: "cid", ClientSecret: secret, Client: srv.Client(), Secrets: []string{storeKey, inboundKey}}
			_, err := ep.Exchange(t.Context(), "oauth", form)
			srv.Close()
			var te *TokenError
			if !errors.As(err, &te) {
				t.Fatalf("%s: %v is not a TokenError", name, err)
			}
			msg := err.Error()
			for _, s := range []string{secret, url.QueryEscape(secret), refresh, code, assertion, storeKey, inboundKey} {
				for i := 0; i+minSecretPiece <= len(s); i++ {
					if p := s[i : i+minSecretPiece]; strings.Contains(strings.ToLower(msg), strings.ToLower(p)) {
						t.Errorf("%s, %s: %q holds %q of a secret", name, form.Get("grant_type"), msg, p)
						break
					}
				}
			}
			if name == "Box's own words, intact" && te.Description != "The refresh token is invalid or expired" {
				t.Errorf("Box's description became %q", te.Description)
			}
			if name != "as the error code" && te.Code != "invalid_grant" {
				t.Errorf("%s: Box's code became %q", name, te.Code)
			}
			if name == "the form as sent" && !strings.Contains(te.Description, "grant_type=") {
				t.Errorf("%s: the public part of the echo is gone too: %q", name, te.Description)
			}
		}
	}
}

func values(f url.Values) []string {
	var out []string
	for _, vs := range f {
		out = append(out, vs...)
	}
	return out
}

func pieces(f url.Values, n int) []string {
	var out []string
	for k, vs := range f {
		for _, v := range vs {
			if !publicFormFields[k] && len(v) > n+3 {
				out = append(out, v[3:3+n])
			}
		}
	}
	return out
}

func TestRedactSecretsKeepsWhatIsNotSecret(t *testing.T) {
	for _, c := range []struct {
		in      string
		secrets []string
		want    string
	}{
		{"nothing to cut", []string{"abcdefghij"}, "nothing to cut"},
		{"key abcdefghij here", []string{"abcdefghij"}, "key [redacted] here"},
		{"cut short: abcdefgh", []string{"abcdefghij"}, "cut short: [redacted]"},
		{"too short to tell: abcdefg", []string{"abcdefghij"}, "too short to tell: abcdefg"},
		{"short pin 12ab, twice 12AB", []string{"12ab"}, "short pin [redacted], twice [redacted]"},
		{"tiny a", []string{"a", ""}, "tiny a"},
		{"a%2Bb%2Fcdefgh!", []string{"a+b/cdefgh"}, "[redacted]!"},
		{"", []string{"abcdefghij"}, ""},
	} {
		if got := redactSecrets(c.in, c.secrets); got != c.want {
			t.Errorf("redactSecrets(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// An echo that the 300-character limit cuts inside a secret leaves none of
// that secret: redaction comes before the cut.
func TestTokenEndpointEchoCutInsideASecretLeavesNoneOfIt(t *testing.T) {
	const refresh = "REFRESHtokenQ8w7e6r5t4y3u2i1o0pZ"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": "invalid_grant", "error_description": strings.Repeat("y", 295) + refresh})
	}))
	defer srv.Close()
	ep := &Endpoint{URL: srv.URL, ClientID: "cid", ClientSecret: "client-secret-value", Client: srv.Client()}
	_, err := ep.Exchange(t.Context(), "oauth", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refresh}})
	var te *TokenError
	if !errors.As(err, &te) {
		t.Fatalf("%v is not a TokenError", err)
	}
	if strings.Contains(te.Description, refresh[:4]) || len(te.Description) > 300 {
		t.Errorf("description %q (%d bytes): want no start of the refresh token, at most 300 bytes", te.Description[280:], len(te.Description))
	}
	for i := 1; i < len(redactedMark); i++ {
		if strings.HasSuffix(te.Description, redactedMark[:i]) {
			t.Errorf("description ends in a cut marker %q", redactedMark[:i])
		}
	}
}

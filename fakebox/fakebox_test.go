package fakebox

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	testClientID = "clientid123"
	testSecret   = "s3cret"
	testEnt      = "500"
	testKid      = "kid1"
	alice        = "2001" // plain managed user
	bob          = "2002" // admin
)

var (
	keyOnce  sync.Once
	testKey  *rsa.PrivateKey
	otherKey *rsa.PrivateKey
)

func keys(t *testing.T) {
	t.Helper()
	keyOnce.Do(func() {
		var err error
		if testKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if otherKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
	})
}

func start(t *testing.T, mod ...func(*Config)) *Box {
	t.Helper()
	keys(t)
	cfg := Config{
		ClientID: testClientID, ClientSecret: testSecret, EnterpriseID: testEnt,
		Users: []User{
			{ID: alice, Name: "Alice", Login: "alice@example.com"},
			{ID: bob, Name: "Bob", Login: "bob@example.com", Admin: true},
		},
		PublicKeys: map[string]*rsa.PublicKey{testKid: &testKey.PublicKey},
		Logf:       t.Logf,
	}
	for _, m := range mod {
		m(&cfg)
	}
	b, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

type tokenReply struct {
	status int
	header http.Header
	body   map[string]any
}

func (r tokenReply) str(k string) string { s, _ := r.body[k].(string); return s }

func postToken(t *testing.T, b *Box, form url.Values) tokenReply {
	t.Helper()
	resp, err := http.PostForm(b.TokenURL(), form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := tokenReply{status: resp.StatusCode, header: resp.Header, body: map[string]any{}}
	if err := json.Unmarshal(raw, &out.body); err != nil {
		t.Fatalf("token endpoint answered non-JSON %q", raw)
	}
	return out
}

func claims(mod func(jwt.MapClaims)) jwt.MapClaims {
	c := jwt.MapClaims{
		"iss":          testClientID,
		"sub":          testEnt,
		"box_sub_type": "enterprise",
		"aud":          TokenAudience,
		"jti":          randAlnum(32),
		"exp":          time.Now().Add(30 * time.Second).Unix(),
	}
	if mod != nil {
		mod(c)
	}
	return c
}

func sign(t *testing.T, c jwt.MapClaims, method jwt.SigningMethod, kid string, key any) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func jwtForm(assertion string) url.Values {
	return url.Values{"grant_type": {GrantJWT}, "assertion": {assertion}, "client_id": {testClientID}, "client_secret": {testSecret}}
}

func get(t *testing.T, rawURL, token string, hdr ...string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, rawURL, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func decode(t *testing.T, resp *http.Response) map[string]any {
	t.Helper()
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatalf("decode: %v", err)
	}
	return m
}

func TestJWTValidAssertionGetsServiceAccountToken(t *testing.T) {
	b := start(t)
	r := postToken(t, b, jwtForm(sign(t, claims(nil), jwt.SigningMethodRS256, testKid, testKey)))
	if r.status != 200 {
		t.Fatalf("status %d %v", r.status, r.body)
	}
	tok := r.str("access_token")
	if len(tok) != 32 || r.body["expires_in"] != 3600.0 || r.str("token_type") != "bearer" || r.body["refresh_token"] != nil {
		t.Fatalf("unexpected token response %v", r.body)
	}
	me := decode(t, get(t, b.APIURL()+"/2.0/users/me", tok))
	if me["id"] != "1000" || me["login"] != "AutomationUser_1000@boxdevedition.com" {
		t.Fatalf("users/me = %v", me)
	}
	// A user subject, signed with RS512 and with a past iat, works too.
	r = postToken(t, b, jwtForm(sign(t, claims(func(c jwt.MapClaims) {
		c["sub"], c["box_sub_type"], c["iat"] = alice, "user", time.Now().Add(-time.Second).Unix()
	}), jwt.SigningMethodRS512, testKid, testKey)))
	if r.status != 200 {
		t.Fatalf("user assertion: %d %v", r.status, r.body)
	}
	if me := decode(t, get(t, b.APIURL()+"/2.0/users/me", r.str("access_token"))); me["id"] != alice {
		t.Fatalf("users/me = %v", me)
	}
	if n := b.CountTokenRequestsFor("user", alice); n != 1 {
		t.Fatalf("CountTokenRequestsFor = %d", n)
	}
}

func TestJWTRejectsWhatBoxRejects(t *testing.T) {
	b := start(t)
	reused := claims(nil)
	if r := postToken(t, b, jwtForm(sign(t, reused, jwt.SigningMethodRS256, testKid, testKey))); r.status != 200 {
		t.Fatalf("first use of jti failed: %v", r.body)
	}
	cases := []struct {
		name      string
		assertion string
		form      func(url.Values)
		code      string
		desc      string
	}{
		{name: "reused jti", assertion: sign(t, claims(func(c jwt.MapClaims) { c["jti"] = reused["jti"] }), jwt.SigningMethodRS256, testKid, testKey),
			code: "invalid_grant", desc: descJti},
		{name: "short jti", assertion: sign(t, claims(func(c jwt.MapClaims) { c["jti"] = "short" }), jwt.SigningMethodRS256, testKid, testKey),
			code: "invalid_grant", desc: descJti},
		{name: "wrong aud", assertion: sign(t, claims(func(c jwt.MapClaims) { c["aud"] = "https://api.box.com/oauth2/token/" }), jwt.SigningMethodRS256, testKid, testKey),
			code: "invalid_grant", desc: descAud},
		{name: "aud array", assertion: sign(t, claims(func(c jwt.MapClaims) { c["aud"] = []string{TokenAudience} }), jwt.SigningMethodRS256, testKid, testKey),
			code: "invalid_grant", desc: descAud},
		{name: "exp more than 60s ahead", assertion: sign(t, claims(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(90 * time.Second).Unix() }), jwt.SigningMethodRS256, testKid, testKey),
			code: "invalid_grant", desc: descExpTooFar},
		{name: "exp passed", assertion: sign(t, claims(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Second).Unix() }), jwt.SigningMethodRS256, testKid, testKey),
			code: "invalid_grant", desc: descExpPassed},
		{name: "exp missing", assertion: sign(t, claims(func(c jwt.MapClaims) { delete(c, "exp") }), jwt.SigningMethodRS256, testKid, testKey),
			code: "invalid_grant", desc: descExpTooFar},
		{name: "iat in the future", assertion: sign(t, claims(func(c jwt.MapClaims) { c["iat"] = time.Now().Add(10 * time.Second).Unix() }), jwt.SigningMethodRS256, testKid, testKey),
			code: "invalid_grant", desc: descNotYet},
		{name: "wrong kid", assertion: sign(t, claims(nil), jwt.SigningMethodRS256, "nope", testKey),
			code: "invalid_grant", desc: descKid},
		{name: "no kid", assertion: sign(t, claims(nil), jwt.SigningMethodRS256, "", testKey),
			code: "invalid_grant", desc: descKid},
		{name: "signed by another key", assertion: sign(t, claims(nil), jwt.SigningMethodRS256, testKid, otherKey),
			code: "invalid_grant", desc: descSignature},
		{name: "PS256", assertion: sign(t, claims(nil), jwt.SigningMethodPS256, testKid, testKey),
			code: "invalid_grant", desc: descSignature},
		{name: "HS256", assertion: sign(t, claims(nil), jwt.SigningMethodHS256, testKid, []byte(testSecret)),
			code: "invalid_grant", desc: descSignature},
		{name: "garbage", assertion: "not.a.jwt", code: "invalid_grant", desc: descSignature},
		{name: "wrong iss", assertion: sign(t, claims(func(c jwt.MapClaims) { c["iss"] = "other" }), jwt.SigningMethodRS256, testKid, testKey),
			code: "invalid_grant", desc: descIss},
		{name: "numeric sub", assertion: sign(t, claims(func(c jwt.MapClaims) { c["sub"] = 500 }), jwt.SigningMethodRS256, testKid, testKey),
			code: "invalid_grant", desc: descSub},
		{name: "wrong enterprise", assertion: sign(t, claims(func(c jwt.MapClaims) { c["sub"] = "501" }), jwt.SigningMethodRS256, testKid, testKey),
			code: "invalid_grant", desc: descSub},
		{name: "unknown user", assertion: sign(t, claims(func(c jwt.MapClaims) { c["sub"], c["box_sub_type"] = "9999", "user" }), jwt.SigningMethodRS256, testKid, testKey),
			code: "invalid_grant", desc: descSub},
		{name: "no box_sub_type", assertion: sign(t, claims(func(c jwt.MapClaims) { delete(c, "box_sub_type") }), jwt.SigningMethodRS256, testKid, testKey),
			code: "invalid_grant", desc: descSub},
		{name: "wrong secret", assertion: sign(t, claims(nil), jwt.SigningMethodRS256, testKid, testKey),
			form: func(f url.Values) { f.Set("client_secret", "wrong") }, code: "invalid_client", desc: descInvalidClient},
		{name: "unknown client", assertion: sign(t, claims(nil), jwt.SigningMethodRS256, testKid, testKey),
			form: func(f url.Values) { f.Set("client_id", "other") }, code: "invalid_client", desc: descInvalidClient},
		{name: "missing assertion", form: func(f url.Values) { f.Del("assertion") }, code: "invalid_request", desc: descMissingAssertion},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := jwtForm(tc.assertion)
			if tc.form != nil {
				tc.form(f)
			}
			r := postToken(t, b, f)
			if r.status != 400 || r.str("error") != tc.code || r.str("error_description") != tc.desc {
				t.Fatalf("got %d %v, want 400 %s %q", r.status, r.body, tc.code, tc.desc)
			}
		})
	}
	if n := b.CountTokenRequests(true); n != 1 {
		t.Fatalf("successful token requests = %d, want 1", n)
	}
}

func TestJWTUsesBoxClock(t *testing.T) {
	b := start(t)
	b.SetClockSkew(5 * time.Minute)
	r := postToken(t, b, jwtForm(sign(t, claims(nil), jwt.SigningMethodRS256, testKid, testKey)))
	if r.str("error_description") != descExpPassed {
		t.Fatalf("ahead clock: %v", r.body)
	}
	date, err := http.ParseTime(r.header.Get("Date"))
	if err != nil || time.Until(date) < 4*time.Minute {
		t.Fatalf("Date header %q does not show Box's clock", r.header.Get("Date"))
	}
	// Retrying with exp = Date + 30 s, as legacy SDKs do, works.
	r = postToken(t, b, jwtForm(sign(t, claims(func(c jwt.MapClaims) { c["exp"] = date.Add(30 * time.Second).Unix() }), jwt.SigningMethodRS256, testKid, testKey)))
	if r.status != 200 {
		t.Fatalf("retry with server date: %v", r.body)
	}
	b.SetClockSkew(-5 * time.Minute)
	r = postToken(t, b, jwtForm(sign(t, claims(nil), jwt.SigningMethodRS256, testKid, testKey)))
	if r.str("error_description") != descExpTooFar {
		t.Fatalf("behind clock: %v", r.body)
	}
}

func ccgForm(st, sid string) url.Values {
	return url.Values{"grant_type": {"client_credentials"}, "client_id": {testClientID}, "client_secret": {testSecret},
		"box_subject_type": {st}, "box_subject_id": {sid}}
}

func TestClientCredentialsGrant(t *testing.T) {
	b := start(t)
	r := postToken(t, b, ccgForm("enterprise", testEnt))
	if r.status != 200 {
		t.Fatalf("enterprise: %v", r.body)
	}
	if me := decode(t, get(t, b.APIURL()+"/2.0/users/me", r.str("access_token"))); me["id"] != "1000" {
		t.Fatalf("users/me = %v", me)
	}
	r = postToken(t, b, ccgForm("user", alice))
	if r.status != 200 {
		t.Fatalf("user: %v", r.body)
	}
	if me := decode(t, get(t, b.APIURL()+"/2.0/users/me", r.str("access_token"))); me["id"] != alice || me["name"] != "Alice" {
		t.Fatalf("users/me = %v", me)
	}

	bad := []struct {
		name       string
		form       url.Values
		code, desc string
	}{
		{"wrong enterprise", ccgForm("enterprise", "501"), "invalid_grant", descGrantInvalid},
		{"unknown user", ccgForm("user", "9"), "invalid_grant", descGrantInvalid},
		{"bad subject type", ccgForm("group", "1"), "invalid_grant", descGrantInvalid},
		{"wrong secret", func() url.Values { f := ccgForm("enterprise", testEnt); f.Set("client_secret", "x"); return f }(), "invalid_grant", descGrantInvalid},
		{"unknown client", func() url.Values { f := ccgForm("enterprise", testEnt); f.Set("client_id", "x"); return f }(), "invalid_client", descInvalidClient},
		{"unknown grant", func() url.Values { f := ccgForm("enterprise", testEnt); f.Set("grant_type", "password"); return f }(), "invalid_request", descBadGrantType},
		{"no grant", url.Values{}, "invalid_request", descBadGrantType},
	}
	for _, tc := range bad {
		r := postToken(t, b, tc.form)
		if r.status != 400 || r.str("error") != tc.code || r.str("error_description") != tc.desc {
			t.Errorf("%s: got %d %v", tc.name, r.status, r.body)
		}
	}

	// Credentials in HTTP Basic auth are not read.
	req, _ := http.NewRequest(http.MethodPost, b.TokenURL(), strings.NewReader("grant_type=client_credentials&box_subject_type=enterprise&box_subject_id="+testEnt))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(testClientID, testSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if m := decode(t, resp); resp.StatusCode != 400 || m["error"] != "invalid_client" {
		t.Fatalf("basic auth: %d %v", resp.StatusCode, m)
	}
}

func TestUnauthorizedAppFailsEveryGrant(t *testing.T) {
	no := false
	b := start(t, func(c *Config) { c.AppAuthorized = &no })
	for _, f := range []url.Values{ccgForm("enterprise", testEnt), jwtForm(sign(t, claims(nil), jwt.SigningMethodRS256, testKid, testKey))} {
		r := postToken(t, b, f)
		if r.str("error") != "unauthorized_client" || r.str("error_description") != descUnauthorized {
			t.Fatalf("got %v", r.body)
		}
	}
}

// login runs the authorize page and returns the redirect's query.
func login(t *testing.T, b *Box, redirect, state string) url.Values {
	t.Helper()
	q := url.Values{"response_type": {"code"}, "client_id": {testClientID}, "redirect_uri": {redirect}, "state": {state}}
	resp := get(t, b.AuthorizeURL()+"?"+q.Encode(), "")
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("authorize: status %d", resp.StatusCode)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || !strings.HasPrefix(loc.String(), redirect+"?") {
		t.Fatalf("authorize redirected to %q", resp.Header.Get("Location"))
	}
	return loc.Query()
}

func TestAuthorizeRedirectCarriesState(t *testing.T) {
	cb := "http://localhost:8080/auth/callback"
	b := start(t, func(c *Config) { c.RedirectURIs = []string{cb} })
	q := login(t, b, cb, "xyz 123")
	if q.Get("state") != "xyz 123" || len(q.Get("code")) == 0 {
		t.Fatalf("callback query %v", q)
	}
	b.SetDenyLogin(true)
	q = login(t, b, cb, "s2")
	if q.Get("error") != "access_denied" || q.Get("state") != "s2" || q.Has("code") {
		t.Fatalf("denied callback query %v", q)
	}
	for name, query := range map[string]url.Values{
		"unknown client":    {"response_type": {"code"}, "client_id": {"other"}, "redirect_uri": {cb}},
		"redirect mismatch": {"response_type": {"code"}, "client_id": {testClientID}, "redirect_uri": {"http://evil.example/cb"}},
	} {
		resp := get(t, b.AuthorizeURL()+"?"+query.Encode(), "")
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Errorf("%s: status %d", name, resp.StatusCode)
		}
	}
}

func TestRefreshTokensRotate(t *testing.T) {
	cb := "http://localhost:8080/auth/callback"
	b := start(t)
	code := login(t, b, cb, "s").Get("code")
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "client_id": {testClientID}, "client_secret": {testSecret}, "redirect_uri": {cb}}
	r := postToken(t, b, form)
	if r.status != 200 || r.str("refresh_token") == "" {
		t.Fatalf("code exchange: %v", r.body)
	}
	if r2 := postToken(t, b, form); r2.str("error") != "invalid_grant" {
		t.Fatalf("code reuse: %v", r2.body)
	}
	if me := decode(t, get(t, b.APIURL()+"/2.0/users/me", r.str("access_token"))); me["id"] != alice {
		t.Fatalf("oauth user = %v", me)
	}
	rt1 := r.str("refresh_token")
	refresh := func(rt string) tokenReply {
		return postToken(t, b, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {testClientID}, "client_secret": {testSecret}})
	}
	r = refresh(rt1)
	rt2 := r.str("refresh_token")
	if r.status != 200 || rt2 == "" || rt2 == rt1 {
		t.Fatalf("refresh: %v", r.body)
	}
	if r = refresh(rt1); r.str("error") != "invalid_grant" || r.str("error_description") != descRefreshInvalid {
		t.Fatalf("reused refresh token: %v", r.body)
	}
	if r = refresh(rt2); r.status != 200 {
		t.Fatalf("rotated refresh token: %v", r.body)
	}
	// Revoking the newest refresh token kills it and its access token.
	rt3, at3 := r.str("refresh_token"), r.str("access_token")
	resp, err := http.PostForm(b.RevokeURL(), url.Values{"client_id": {testClientID}, "client_secret": {testSecret}, "token": {rt3}})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("revoke: %v %v", err, resp)
	}
	resp.Body.Close()
	if r = refresh(rt3); r.str("error") != "invalid_grant" {
		t.Fatalf("revoked refresh token: %v", r.body)
	}
	if resp := get(t, b.APIURL()+"/2.0/users/me", at3); resp.StatusCode != 401 {
		t.Fatalf("access token of revoked refresh token: %d", resp.StatusCode)
	}
	if len(b.IssuedTokens()) != 6 {
		t.Fatalf("issued %d tokens, want 6", len(b.IssuedTokens()))
	}
}

func assert401(t *testing.T, resp *http.Response) {
	t.Helper()
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 401 || len(body) != 0 || resp.Header.Get("Content-Length") != "0" ||
		resp.Header.Get("WWW-Authenticate") != `Bearer realm="Service", error="invalid_token", error_description="The access token provided is invalid."` {
		t.Fatalf("got %d %v %q", resp.StatusCode, resp.Header, body)
	}
}

func TestInvalidTokenGets401WithEmptyBody(t *testing.T) {
	b := start(t)
	assert401(t, get(t, b.APIURL()+"/2.0/users/me", ""))
	assert401(t, get(t, b.APIURL()+"/2.0/users/me", "bogus"))
	assert401(t, get(t, b.UploadURL()+"/api/2.0/test/echo", "bogus"))

	tok := postToken(t, b, ccgForm("enterprise", testEnt)).str("access_token")
	first := tok
	if resp := get(t, b.APIURL()+"/2.0/users/me?access_token="+tok, ""); resp.StatusCode != 200 {
		t.Fatalf("access_token query parameter: %d", resp.StatusCode)
	}
	b.ExpireAll()
	assert401(t, get(t, b.APIURL()+"/2.0/users/me", tok))
	tok = postToken(t, b, ccgForm("enterprise", testEnt)).str("access_token")
	b.RevokeAll()
	assert401(t, get(t, b.APIURL()+"/2.0/users/me", tok))

	b.SetTokenTTL(100 * time.Millisecond)
	r := postToken(t, b, ccgForm("enterprise", testEnt))
	if r.body["expires_in"] != 1.0 {
		t.Fatalf("expires_in = %v", r.body["expires_in"])
	}
	time.Sleep(150 * time.Millisecond)
	assert401(t, get(t, b.APIURL()+"/2.0/users/me", r.str("access_token")))

	reqs := b.Requests()
	if len(reqs) != 7 || reqs[0].Status != 401 || reqs[3].Status != 200 || reqs[3].Token != first || reqs[3].UserID != "1000" || reqs[0].UserID != "" {
		t.Fatalf("records: %+v", reqs)
	}
}

func TestAsUser(t *testing.T) {
	b := start(t)
	sa := postToken(t, b, ccgForm("enterprise", testEnt)).str("access_token")
	al := postToken(t, b, ccgForm("user", alice)).str("access_token")
	bo := postToken(t, b, ccgForm("user", bob)).str("access_token")
	if me := decode(t, get(t, b.APIURL()+"/2.0/users/me", sa, "As-User", alice)); me["id"] != alice {
		t.Fatalf("SA as alice: %v", me)
	}
	if me := decode(t, get(t, b.APIURL()+"/2.0/users/me", bo, "As-User", alice)); me["id"] != alice {
		t.Fatalf("admin as alice: %v", me)
	}
	resp := get(t, b.APIURL()+"/2.0/users/me", al, "As-User", bob)
	if m := decode(t, resp); resp.StatusCode != 403 || m["code"] != "access_denied_insufficient_permissions" || m["type"] != "error" || resp.Header.Get("BOX-REQUEST-ID") == "" {
		t.Fatalf("non-admin As-User: %d %v", resp.StatusCode, m)
	}
	resp = get(t, b.APIURL()+"/2.0/users/me", sa, "As-User", "9999")
	if m := decode(t, resp); resp.StatusCode != 404 || m["code"] != "not_found" {
		t.Fatalf("unknown As-User: %d %v", resp.StatusCode, m)
	}
}

func TestEchoAndRecords(t *testing.T) {
	b := start(t)
	tok := postToken(t, b, ccgForm("enterprise", testEnt)).str("access_token")
	body := []byte("hello, box")
	req, _ := http.NewRequest(http.MethodPatch, b.APIURL()+"/2.0/test/echo/a%2Fb/c?x=1&y=%20", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("X-Custom", "v")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	m := decode(t, resp)
	sum := sha1Hex(body)
	if m["method"] != "PATCH" || m["path"] != "/2.0/test/echo/a%2Fb/c" || m["raw_query"] != "x=1&y=%20" ||
		m["body_len"] != float64(len(body)) || m["body_sha1"] != sum || m["user_id"] != "1000" {
		t.Fatalf("echo = %v", m)
	}
	if h, _ := m["headers"].(map[string]any); fmt.Sprint(h["X-Custom"]) != "[v]" {
		t.Fatalf("echo headers = %v", m["headers"])
	}
	rec := b.Requests()
	if len(rec) != 1 || rec[0].Host != "api" || rec[0].BodySHA1 != sum || rec[0].BodyLen != int64(len(body)) || rec[0].Token != tok {
		t.Fatalf("records = %+v", rec)
	}
	b.ResetRecords()
	if len(b.Requests()) != 0 || len(b.TokenRequests()) != 0 {
		t.Fatal("ResetRecords kept records")
	}

	resp = get(t, b.APIURL()+"/2.0/test/bytes?n=100000", tok)
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want, _ := io.ReadAll(PatternReader(100000))
	if resp.ContentLength != 100000 || !bytes.Equal(data, want) {
		t.Fatalf("test/bytes: %d bytes", len(data))
	}
	resp = get(t, b.APIURL()+"/2.0/nope", tok)
	if m := decode(t, resp); resp.StatusCode != 404 || m["code"] != "not_found" {
		t.Fatalf("unknown path: %d %v", resp.StatusCode, m)
	}
	// Upload paths are not served by the API host.
	if resp := get(t, b.APIURL()+"/api/2.0/test/echo", tok); resp.StatusCode != 404 {
		t.Fatalf("/api/2.0 on the API host: %d", resp.StatusCode)
	}
}

func TestSlowRequestStopsWhenClientGoesAway(t *testing.T) {
	b := start(t)
	tok := postToken(t, b, ccgForm("enterprise", testEnt)).str("access_token")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, b.APIURL()+"/2.0/test/slow?ms=60000", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	if _, err := http.DefaultClient.Do(req); err == nil {
		t.Fatal("slow request did not time out")
	}
	waitIdle(t, b)
}

func waitIdle(t *testing.T, b *Box) {
	t.Helper()
	for i := 0; b.ActiveRequests() != 0; i++ {
		if i > 200 {
			t.Fatalf("%d handlers still running", b.ActiveRequests())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestTokenFaults(t *testing.T) {
	b := start(t)
	b.SetTokenFault(Fault503)
	resp, err := http.PostForm(b.TokenURL(), ccgForm("enterprise", testEnt))
	if err != nil || resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("503 fault: %v %v", err, resp)
	}
	resp.Body.Close()
	b.SetTokenFault(FaultDown)
	if _, err := http.PostForm(b.TokenURL(), ccgForm("enterprise", testEnt)); err == nil {
		t.Fatal("down fault answered")
	}
	b.SetTokenFault(FaultHang)
	c := &http.Client{Timeout: 100 * time.Millisecond}
	if _, err := c.PostForm(b.TokenURL(), ccgForm("enterprise", testEnt)); err == nil {
		t.Fatal("hang fault answered")
	}
	waitIdle(t, b)
	b.SetTokenFaultN(FaultTruncated, 1)
	resp, _ = http.PostForm(b.TokenURL(), ccgForm("enterprise", testEnt))
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if json.Valid(raw) {
		t.Fatalf("truncated fault sent valid JSON %q", raw)
	}
	if r := postToken(t, b, ccgForm("enterprise", testEnt)); r.status != 200 {
		t.Fatalf("after one-shot fault: %v", r.body)
	}
	if n, ok := b.CountTokenRequests(false), b.CountTokenRequests(true); n != 4 || ok != 1 {
		t.Fatalf("counts: failed %d ok %d", n, ok)
	}
	// Close unblocks a hanging handler.
	b.SetTokenFault(FaultHang)
	done := make(chan struct{})
	go func() {
		_, _ = http.PostForm(b.TokenURL(), ccgForm("enterprise", testEnt))
		close(done)
	}()
	for b.ActiveRequests() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	b.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock a hanging token request")
	}
}

func TestInject(t *testing.T) {
	b := start(t)
	tok := postToken(t, b, ccgForm("enterprise", testEnt)).str("access_token")
	b.Inject("/2.0/users", 1, Unauthorized())
	assert401(t, get(t, b.APIURL()+"/2.0/users/me", tok))
	if resp := get(t, b.APIURL()+"/2.0/users/me", tok); resp.StatusCode != 200 {
		t.Fatalf("after injection: %d", resp.StatusCode)
	}
	b.Inject("/2.0/", 1, Injected{Status: 429, Header: http.Header{"Retry-After": {"2"}}, Body: `{"type":"error","status":429,"code":"rate_limit_exceeded"}`})
	resp := get(t, b.APIURL()+"/2.0/users/me", tok)
	if m := decode(t, resp); resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "2" || m["code"] != "rate_limit_exceeded" {
		t.Fatalf("429 injection: %d %v", resp.StatusCode, m)
	}
	b.Inject("/2.0/", 1, Injected{Reset: true})
	req, _ := http.NewRequest(http.MethodGet, b.APIURL()+"/2.0/users/me", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Connection", "close")
	if _, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req); err == nil {
		t.Fatal("reset injection answered")
	}
}

func digest(p []byte) string {
	s := sha1.Sum(p)
	return "sha=" + base64.StdEncoding.EncodeToString(s[:])
}

func do(t *testing.T, method, rawURL, token string, body []byte, hdr ...string) (*http.Response, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, rawURL, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	m := map[string]any{}
	_ = json.Unmarshal(raw, &m)
	return resp, m
}

func downloadFile(t *testing.T, b *Box, tok, id string) []byte {
	t.Helper()
	resp := get(t, b.APIURL()+"/2.0/files/"+id+"/content", tok)
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != 302 || !strings.HasPrefix(loc, b.DownloadURL()+"/d/1/") || !strings.HasSuffix(loc, "/download") {
		t.Fatalf("content: %d %q", resp.StatusCode, loc)
	}
	resp = get(t, loc, "")
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("download: %d", resp.StatusCode)
	}
	return data
}

func TestUploadSessionEndpointsAreAbsoluteOnUploadHost(t *testing.T) {
	b := start(t, func(c *Config) { c.PartSize = 1000 })
	tok := postToken(t, b, ccgForm("enterprise", testEnt)).str("access_token")
	content := make([]byte, 2500)
	_, _ = rand.Read(content)

	resp, s := do(t, "POST", b.UploadURL()+"/api/2.0/files/upload_sessions", tok, []byte(`{"folder_id":"0","file_size":2500,"file_name":"big.bin"}`))
	if resp.StatusCode != 201 || s["type"] != "upload_session" || s["total_parts"] != 3.0 || s["part_size"] != 1000.0 {
		t.Fatalf("create session: %d %v", resp.StatusCode, s)
	}
	sid, _ := s["id"].(string)
	base := b.UploadURL() + "/api/2.0/files/upload_sessions/" + sid
	eps, _ := s["session_endpoints"].(map[string]any)
	for k, want := range map[string]string{"upload_part": base, "commit": base + "/commit", "abort": base, "list_parts": base + "/parts", "status": base, "log_event": base + "/log"} {
		if eps[k] != want {
			t.Errorf("%s = %v, want %s", k, eps[k], want)
		}
	}
	// The session belongs to its creator.
	other := postToken(t, b, ccgForm("user", alice)).str("access_token")
	if resp, _ := do(t, "GET", base, other, nil); resp.StatusCode != 404 {
		t.Fatalf("other user's session: %d", resp.StatusCode)
	}

	var parts []any
	for off := 0; off < 2500; off += 1000 {
		end := min(off+1000, 2500)
		p := content[off:end]
		cr := fmt.Sprintf("bytes %d-%d/2500", off, end-1)
		if off == 1000 {
			resp, m := do(t, "PUT", eps["upload_part"].(string), tok, p, "Content-Range", cr, "Digest", digest([]byte("x")))
			if resp.StatusCode != 412 || m["type"] != "error" {
				t.Fatalf("bad digest: %d %v", resp.StatusCode, m)
			}
		}
		resp, m := do(t, "PUT", eps["upload_part"].(string), tok, p, "Content-Range", cr, "Digest", digest(p), "Content-Type", "application/octet-stream")
		if resp.StatusCode != 200 {
			t.Fatalf("part %s: %d %v", cr, resp.StatusCode, m)
		}
		parts = append(parts, m["part"])
	}
	if resp, _ := do(t, "PUT", base, tok, content[:500], "Content-Range", "bytes 500-999/2500", "Digest", digest(content[:500])); resp.StatusCode != 416 {
		t.Fatalf("misaligned part: %d", resp.StatusCode)
	}
	_, list := do(t, "GET", eps["list_parts"].(string), tok, nil)
	if list["total_count"] != 3.0 {
		t.Fatalf("parts = %v", list)
	}
	commitBody, _ := json.Marshal(map[string]any{"parts": parts})
	if resp, _ := do(t, "POST", eps["commit"].(string), tok, commitBody, "Digest", digest(content[:10])); resp.StatusCode != 412 {
		t.Fatalf("commit with wrong digest: %d", resp.StatusCode)
	}
	resp, files := do(t, "POST", eps["commit"].(string), tok, commitBody, "Digest", digest(content))
	entries, _ := files["entries"].([]any)
	if resp.StatusCode != 201 || len(entries) != 1 {
		t.Fatalf("commit: %d %v", resp.StatusCode, files)
	}
	f := entries[0].(map[string]any)
	sum := sha1.Sum(content)
	if f["sha1"] != hex.EncodeToString(sum[:]) || f["size"] != 2500.0 || f["name"] != "big.bin" {
		t.Fatalf("committed file %v", f)
	}
	if got := downloadFile(t, b, tok, f["id"].(string)); !bytes.Equal(got, content) {
		t.Fatal("downloaded content differs")
	}
	if resp, _ := do(t, "GET", base, tok, nil); resp.StatusCode != 404 {
		t.Fatalf("session after commit: %d", resp.StatusCode)
	}

	// Abort.
	_, s = do(t, "POST", b.UploadURL()+"/api/2.0/files/upload_sessions", tok, []byte(`{"folder_id":"0","file_size":10,"file_name":"x"}`))
	abort := s["session_endpoints"].(map[string]any)["abort"].(string)
	if resp, _ := do(t, "DELETE", abort, tok, nil); resp.StatusCode != 204 {
		t.Fatalf("abort: %d", resp.StatusCode)
	}
	if resp, _ := do(t, "POST", b.UploadURL()+"/api/2.0/files/upload_sessions", tok, []byte(`{"folder_id":0}`)); resp.StatusCode != 400 {
		t.Fatalf("bad session request: %d", resp.StatusCode)
	}
}

func multipartBody(t *testing.T, attrs string, content io.Reader) (*bytes.Buffer, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	if attrs != "" {
		_ = mw.WriteField("attributes", attrs)
	}
	fw, _ := mw.CreateFormFile("file", "f.bin")
	if _, err := io.Copy(fw, content); err != nil {
		t.Fatal(err)
	}
	_ = mw.Close()
	return &buf, mw.FormDataContentType()
}

func TestDirectUpload(t *testing.T) {
	b := start(t)
	tok := postToken(t, b, ccgForm("user", alice)).str("access_token")
	content := []byte("small file content")
	body, ct := multipartBody(t, `{"name":"a.txt","parent":{"id":"0"}}`, bytes.NewReader(content))
	resp, m := do(t, "POST", b.UploadURL()+"/api/2.0/files/content", tok, body.Bytes(), "Content-Type", ct)
	entries, _ := m["entries"].([]any)
	if resp.StatusCode != 201 || len(entries) != 1 || m["total_count"] != 1.0 {
		t.Fatalf("upload: %d %v", resp.StatusCode, m)
	}
	f := entries[0].(map[string]any)
	if f["sha1"] != sha1Hex(content) || f["size"] != float64(len(content)) || f["name"] != "a.txt" {
		t.Fatalf("file = %v", f)
	}
	if got := downloadFile(t, b, tok, f["id"].(string)); !bytes.Equal(got, content) {
		t.Fatalf("download = %q", got)
	}
	// The file part must come after the attributes.
	body, ct = multipartBody(t, "", bytes.NewReader(content))
	if resp, _ := do(t, "POST", b.UploadURL()+"/api/2.0/files/content", tok, body.Bytes(), "Content-Type", ct); resp.StatusCode != 400 {
		t.Fatalf("upload without attributes: %d", resp.StatusCode)
	}
	// Uploads are not served by the API host.
	if resp, _ := do(t, "POST", b.APIURL()+"/2.0/files/content", tok, nil); resp.StatusCode != 404 {
		t.Fatalf("upload to API host: %d", resp.StatusCode)
	}

	// A large pattern upload is streamed, not kept, and still downloadable.
	size := int64(MaxRetained + 12345)
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		_ = mw.WriteField("attributes", `{"name":"big.bin","parent":{"id":"0"}}`)
		fw, _ := mw.CreateFormFile("file", "big.bin")
		_, _ = io.Copy(fw, PatternReader(size))
		_ = mw.Close()
		_ = pw.Close()
	}()
	req, _ := http.NewRequest("POST", b.UploadURL()+"/api/2.0/files/content", pr)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	m = decode(t, resp)
	f = m["entries"].([]any)[0].(map[string]any)
	h := sha1.New()
	_, _ = io.Copy(h, PatternReader(size))
	if f["size"] != float64(size) || f["sha1"] != hex.EncodeToString(h.Sum(nil)) {
		t.Fatalf("big file = %v", f)
	}
	if _, kept := b.FileContent(f["id"].(string)); kept {
		t.Fatal("a file over MaxRetained was kept in memory")
	}
	if got := downloadFile(t, b, tok, f["id"].(string)); int64(len(got)) != size || sha1Hex(got) != f["sha1"] {
		t.Fatalf("big download: %d bytes", len(got))
	}
}

func TestStartValidatesConfig(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no client":      {ClientSecret: "x"},
		"bad enterprise": {ClientID: "a", ClientSecret: "b", EnterpriseID: "e1"},
		"bad user":       {ClientID: "a", ClientSecret: "b", Users: []User{{ID: "x"}}},
	} {
		if b, err := Start(cfg); err == nil {
			b.Close()
			t.Errorf("%s: no error", name)
		}
	}
}

func TestRetainedContentIsCapped(t *testing.T) {
	b := start(t, func(c *Config) { c.MaxRetainedTotal = 100 })
	first := b.AddFile("a", bytes.Repeat([]byte("a"), 60))
	second := b.AddFile("b", bytes.Repeat([]byte("b"), 60))
	if _, kept := b.FileContent(first); kept {
		t.Fatal("oldest content was not dropped")
	}
	if got, kept := b.FileContent(second); !kept || len(got) != 60 {
		t.Fatal("newest content was dropped")
	}
	if fs := b.Files(); len(fs) != 2 || fs[0].Retained || !fs[1].Retained || fs[0].SHA1 != sha1Hex(bytes.Repeat([]byte("a"), 60)) {
		t.Fatalf("files = %+v", fs)
	}
	b.SetRecording(false)
	postToken(t, b, ccgForm("enterprise", testEnt))
	if len(b.TokenRequests()) != 0 {
		t.Fatal("recorded while recording was off")
	}
}

func TestTokenDelayIssuesNothingToAClientThatHangsUp(t *testing.T) {
	b, err := Start(Config{ClientID: "cid", ClientSecret: "csecret", EnterpriseID: "500100"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	b.SetTokenDelay(300 * time.Millisecond)
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {"cid"}, "client_secret": {"csecret"},
		"box_subject_type": {"enterprise"}, "box_subject_id": {"500100"}}
	c := &http.Client{Timeout: 50 * time.Millisecond}
	if _, err := c.PostForm(b.TokenURL(), form); err == nil {
		t.Fatal("answered before the delay")
	}
	time.Sleep(400 * time.Millisecond)
	if n := len(b.TokenRequests()); n != 0 {
		t.Fatalf("%d token requests recorded for a client that hung up", n)
	}
	start := time.Now()
	resp, err := http.PostForm(b.TokenURL(), form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || time.Since(start) < 300*time.Millisecond {
		t.Fatalf("status %d after %s", resp.StatusCode, time.Since(start))
	}
}

package fakebox

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"math"
	"net"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Token endpoint error codes and descriptions, as Box words them.
const (
	descInvalidClient    = "The client credentials are invalid"
	descUnauthorized     = "This app is not authorized by the enterprise admin"
	descGrantInvalid     = "Grant credentials are invalid"
	descBadGrantType     = "Invalid grant_type parameter or parameter missing"
	descRefreshInvalid   = "Invalid refresh token"
	descCodeExpired      = "The authorization code has expired"
	descCodeInvalid      = "Auth code doesn't exist or is invalid for the client"
	descRedirectMismatch = "The redirect_uri does not match the one used in the authorization request"
	descKid              = `"kid" invalid, unable to lookup correct key`
	descSignature        = "Signature verification error"
	descIss              = "Please check the 'iss' claim."
	descAud              = "Please check the 'aud' claim."
	descSub              = "Please check the 'sub' claim."
	descJti              = "Please check the 'jti' claim. A unique 'jti' value is required."
	descExpPassed        = "Current date/time MUST be before the expiration date/time listed in the 'exp' claim"
	descExpTooFar        = "Please check the 'exp' claim."
	descNotYet           = "Current date/time MUST be after or equal to the not-before date/time listed in the 'nbf' or 'iat' claim"
	descMissingAssertion = "Missing assertion parameter"
)

type tokenError struct{ code, desc string }

func (e *tokenError) Error() string { return e.code + ": " + e.desc }

func tokErr(code, desc string) *tokenError { return &tokenError{code, desc} }

type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	ExpiresIn    int64  `json:"expires_in"`
	RestrictedTo []any  `json:"restricted_to"`
	RefreshToken string `json:"refresh_token,omitempty"`
	TokenType    string `json:"token_type"`
}

func writeTokenError(w http.ResponseWriter, e *tokenError) {
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusBadRequest, map[string]string{"error": e.code, "error_description": e.desc})
}

func (b *Box) recordToken(tr TokenRequest) {
	b.mu.Lock()
	if b.canRecordLocked(len(b.tokenReqs)) {
		b.tokenReqs = append(b.tokenReqs, tr)
	}
	b.mu.Unlock()
}

func (b *Box) takeFault() Fault {
	b.mu.Lock()
	defer b.mu.Unlock()
	f := b.fault
	if f != FaultNone && b.faultLeft > 0 {
		b.faultLeft--
		if b.faultLeft == 0 {
			b.fault = FaultNone
		}
	}
	return f
}

func (b *Box) handleToken(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	tr := TokenRequest{Time: time.Now()}
	var form url.Values
	formErr := error(nil)
	if r.Method == http.MethodPost {
		formErr = r.ParseForm()
		form = r.PostForm // never the query string: Box reads the body only
	}
	if form == nil {
		form = url.Values{}
	}
	tr.GrantType = form.Get("grant_type")
	tr.ClientID = form.Get("client_id")
	if tr.GrantType == "client_credentials" {
		tr.SubjectType, tr.SubjectID = form.Get("box_subject_type"), form.Get("box_subject_id")
	}

	if d := time.Duration(b.tokenDelay.Load()); d > 0 {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			b.logf("token request %s: the client hung up during the delay; nothing issued", tr.GrantType)
			return
		}
	}
	if f := b.takeFault(); f != FaultNone {
		tr.Error, tr.Description = "fault", f.String()
		b.recordToken(tr)
		b.logf("token request: injected fault %s", f)
		b.serveFault(w, r, f)
		return
	}

	var resp *tokenResponse
	var terr *tokenError
	if formErr != nil {
		terr = tokErr("invalid_request", "Malformed request body")
	} else {
		resp, terr = b.grant(form, &tr)
	}
	if terr != nil {
		tr.Error, tr.Description = terr.code, terr.desc
		b.recordToken(tr)
		b.logf("token request %s: %s %q", tr.GrantType, terr.code, terr.desc)
		writeTokenError(w, terr)
		return
	}
	tr.OK = true
	b.recordToken(tr)
	b.logf("token request %s: issued token for %s %s", tr.GrantType, tr.SubjectType, tr.SubjectID)
	if d := time.Duration(b.answerDelay.Load()); d > 0 {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			b.logf("token request %s: the client hung up before the held answer; what was issued stays issued", tr.GrantType)
			return
		case <-b.closing:
		}
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, resp)
}

func (b *Box) serveFault(w http.ResponseWriter, r *http.Request, f Fault) {
	switch f {
	case FaultDown:
		if !hijackClose(w) {
			// HTTP/2: drop the whole connection, as a server going down does.
			if c, ok := r.Context().Value(connKey{}).(net.Conn); ok {
				_ = c.Close()
			}
			panic(http.ErrAbortHandler)
		}
	case FaultHang:
		select {
		case <-r.Context().Done():
		case <-b.closing:
		}
	case FaultHTML:
		writeRaw(w, http.StatusOK, "text/html; charset=utf-8",
			"<!DOCTYPE html><html><head><title>Box | Maintenance</title></head><body><h1>Box is down for maintenance</h1></body></html>\n")
	case FaultTruncated:
		writeRaw(w, http.StatusOK, "application/json", `{"access_token":"`+randAlnum(12))
	case FaultNoAccessToken:
		writeRaw(w, http.StatusOK, "application/json", `{"expires_in":3600}`)
	case Fault500:
		writeRaw(w, http.StatusInternalServerError, "text/html; charset=utf-8",
			"<html><head><title>500 Internal Server Error</title></head><body><h1>Internal Server Error</h1></body></html>\n")
	case Fault503:
		w.Header().Set("Retry-After", "1")
		writeRaw(w, http.StatusServiceUnavailable, "text/html; charset=utf-8",
			"<html><head><title>503 Service Unavailable</title></head><body><h1>Service Unavailable</h1></body></html>\n")
	default:
		writeRaw(w, http.StatusInternalServerError, "text/plain", "unknown fault\n")
	}
}

// grant checks a token request and issues tokens. tr receives the subject.
func (b *Box) grant(form url.Values, tr *TokenRequest) (*tokenResponse, *tokenError) {
	gt := form.Get("grant_type")
	switch gt {
	case "client_credentials", GrantJWT, "authorization_code", "refresh_token":
	default:
		return nil, tokErr("invalid_request", descBadGrantType)
	}
	if form.Get("client_id") != b.cfg.ClientID {
		return nil, tokErr("invalid_client", descInvalidClient)
	}
	if subtle.ConstantTimeCompare([]byte(form.Get("client_secret")), []byte(b.cfg.ClientSecret)) != 1 {
		if gt == "client_credentials" {
			return nil, tokErr("invalid_grant", descGrantInvalid)
		}
		return nil, tokErr("invalid_client", descInvalidClient)
	}
	if !b.appAuthorized() {
		return nil, tokErr("unauthorized_client", descUnauthorized)
	}
	switch gt {
	case "client_credentials":
		return b.grantCCG(form, tr)
	case GrantJWT:
		return b.grantJWT(form, tr)
	case "authorization_code":
		return b.grantCode(form, tr)
	default:
		return b.grantRefresh(form, tr)
	}
}

func (b *Box) grantCCG(form url.Values, tr *TokenRequest) (*tokenResponse, *tokenError) {
	st, sid := form.Get("box_subject_type"), form.Get("box_subject_id")
	b.mu.Lock()
	defer b.mu.Unlock()
	user, ok := b.subjectUserLocked(st, sid)
	if !ok {
		return nil, tokErr("invalid_grant", descGrantInvalid)
	}
	tok, _ := b.issueLocked(st, sid, user, "client_credentials", false)
	return b.responseLocked(tok, ""), nil
}

// subjectUserLocked maps a subject to the user its tokens act as.
func (b *Box) subjectUserLocked(subjectType, subjectID string) (string, bool) {
	switch subjectType {
	case "enterprise":
		if b.cfg.EnterpriseID != "" && subjectID == b.cfg.EnterpriseID {
			return b.cfg.ServiceAccountID, true
		}
	case "user":
		if _, ok := b.users[subjectID]; ok {
			return subjectID, true
		}
	}
	return "", false
}

var (
	errBadAlg = errors.New("alg not allowed")
	errBadKid = errors.New("kid unknown")
)

func (b *Box) grantJWT(form url.Values, tr *TokenRequest) (*tokenResponse, *tokenError) {
	assertion := form.Get("assertion")
	if assertion == "" {
		return nil, tokErr("invalid_request", descMissingAssertion)
	}
	claims := jwt.MapClaims{}
	p := jwt.NewParser(jwt.WithoutClaimsValidation(), jwt.WithJSONNumber())
	_, err := p.ParseWithClaims(assertion, claims, func(t *jwt.Token) (any, error) {
		switch t.Method.Alg() {
		case "RS256", "RS384", "RS512":
		default:
			return nil, errBadAlg
		}
		kid, _ := t.Header["kid"].(string)
		key := b.cfg.PublicKeys[kid]
		if kid == "" || key == nil {
			return nil, errBadKid
		}
		return key, nil
	})
	if err != nil {
		if errors.Is(err, errBadKid) {
			return nil, tokErr("invalid_grant", descKid)
		}
		return nil, tokErr("invalid_grant", descSignature)
	}
	subType, _ := claims["box_sub_type"].(string)
	sub, subIsString := claims["sub"].(string)
	tr.SubjectType = subType
	if subIsString {
		tr.SubjectID = sub
	} else if claims["sub"] != nil {
		tr.SubjectID = fmt.Sprint(claims["sub"])
	}

	if iss, _ := claims["iss"].(string); iss != form.Get("client_id") {
		return nil, tokErr("invalid_grant", descIss)
	}
	// aud must be exactly the token URL, as a string (not an array).
	if aud, _ := claims["aud"].(string); aud != TokenAudience {
		return nil, tokErr("invalid_grant", descAud)
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	user, ok := "", false
	if subIsString {
		user, ok = b.subjectUserLocked(subType, sub)
	}
	if !ok {
		return nil, tokErr("invalid_grant", descSub)
	}
	jti, _ := claims["jti"].(string)
	if len(jti) < 16 || len(jti) > 128 {
		return nil, tokErr("invalid_grant", descJti)
	}
	if _, seen := b.jtis[jti]; seen {
		return nil, tokErr("invalid_grant", descJti)
	}
	b.jtis[jti] = struct{}{}

	now := time.Now().Add(b.skew)
	nowSec := float64(now.UnixNano()) / 1e9
	exp, ok := numericClaim(claims["exp"])
	if !ok {
		return nil, tokErr("invalid_grant", descExpTooFar)
	}
	if exp <= nowSec {
		return nil, tokErr("invalid_grant", descExpPassed)
	}
	if exp > nowSec+60 {
		return nil, tokErr("invalid_grant", descExpTooFar)
	}
	for _, name := range []string{"nbf", "iat"} {
		v, present := claims[name]
		if !present {
			continue
		}
		t, ok := numericClaim(v)
		if !ok {
			return nil, tokErr("invalid_grant", fmt.Sprintf("Please check the '%s' claim.", name))
		}
		if t > nowSec {
			return nil, tokErr("invalid_grant", descNotYet)
		}
	}
	tok, _ := b.issueLocked(subType, sub, user, "jwt", false)
	return b.responseLocked(tok, ""), nil
}

func numericClaim(v any) (float64, bool) {
	switch n := v.(type) {
	case json.Number:
		f, err := n.Float64()
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return 0, false
		}
		return f, true
	case float64:
		return n, true
	}
	return 0, false
}

func (b *Box) grantCode(form url.Values, tr *TokenRequest) (*tokenResponse, *tokenError) {
	b.mu.Lock()
	defer b.mu.Unlock()
	code := form.Get("code")
	c, ok := b.codes[code]
	if !ok {
		return nil, tokErr("invalid_grant", descCodeInvalid)
	}
	delete(b.codes, code) // single use, even when the exchange fails
	if c.clientID != form.Get("client_id") {
		return nil, tokErr("invalid_grant", descCodeInvalid)
	}
	if !time.Now().Add(b.skew).Before(c.expires) {
		return nil, tokErr("invalid_grant", descCodeExpired)
	}
	if form.Has("redirect_uri") && form.Get("redirect_uri") != c.redirectURI {
		return nil, tokErr("invalid_grant", descRedirectMismatch)
	}
	tr.SubjectType, tr.SubjectID = "user", c.userID
	tok, rt := b.issueLocked("user", c.userID, c.userID, "authorization_code", true)
	return b.responseLocked(tok, rt), nil
}

func (b *Box) grantRefresh(form url.Values, tr *TokenRequest) (*tokenResponse, *tokenError) {
	b.mu.Lock()
	defer b.mu.Unlock()
	old := form.Get("refresh_token")
	rt, ok := b.refresh[old]
	if !ok {
		return nil, tokErr("invalid_grant", descRefreshInvalid)
	}
	delete(b.refresh, old) // rotation: the old refresh token dies at once
	if !time.Now().Add(b.skew).Before(rt.expires) {
		return nil, tokErr("invalid_grant", descRefreshInvalid)
	}
	tr.SubjectType, tr.SubjectID = "user", rt.userID
	tok, nrt := b.issueLocked("user", rt.userID, rt.userID, "refresh_token", true)
	return b.responseLocked(tok, nrt), nil
}

// issueLocked creates an access token, and a refresh token when asked.
func (b *Box) issueLocked(subjectType, subjectID, userID, grant string, withRefresh bool) (string, string) {
	now := time.Now().Add(b.skew)
	tok := randAlnum(32)
	b.tokens[tok] = &accessToken{subjectType: subjectType, subjectID: subjectID, userID: userID, grant: grant, expires: now.Add(b.ttl)}
	b.issued = append(b.issued, tok)
	if !withRefresh {
		return tok, ""
	}
	rt := randAlnum(64)
	b.refresh[rt] = &refreshToken{userID: userID, expires: now.Add(refreshTTL), access: []string{tok}}
	b.issued = append(b.issued, rt)
	return tok, rt
}

func (b *Box) responseLocked(tok, rt string) *tokenResponse {
	secs := int64(b.ttl / time.Second)
	if secs < 1 {
		secs = 1
	}
	return &tokenResponse{AccessToken: tok, ExpiresIn: secs, RestrictedTo: []any{}, RefreshToken: rt, TokenType: "bearer"}
}

// lookupToken returns a copy of a valid, unexpired access token.
func (b *Box) lookupToken(tok string) (accessToken, bool) {
	if tok == "" {
		return accessToken{}, false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	t, ok := b.tokens[tok]
	if !ok || t.revoked || t.expired || !time.Now().Add(b.skew).Before(t.expires) {
		return accessToken{}, false
	}
	return *t, true
}

func (b *Box) handleRevoke(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if r.Method != http.MethodPost {
		writeTokenError(w, tokErr("invalid_request", "Invalid request method"))
		return
	}
	if err := r.ParseForm(); err != nil {
		writeTokenError(w, tokErr("invalid_request", "Malformed request body"))
		return
	}
	f := r.PostForm
	if f.Get("client_id") != b.cfg.ClientID ||
		subtle.ConstantTimeCompare([]byte(f.Get("client_secret")), []byte(b.cfg.ClientSecret)) != 1 {
		writeTokenError(w, tokErr("invalid_client", descInvalidClient))
		return
	}
	tok := f.Get("token")
	b.mu.Lock()
	b.revoked = append(b.revoked, tok)
	known := b.revokeLocked(tok)
	b.mu.Unlock()
	b.logf("revoke: known token %v", known)
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusOK)
}

func (b *Box) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		authorizePage(w, http.StatusMethodNotAllowed, "invalid_request", "Use GET")
		return
	}
	q := r.URL.Query()
	if q.Get("response_type") != "code" {
		authorizePage(w, http.StatusBadRequest, "invalid_request", "response_type must be 'code'")
		return
	}
	if q.Get("client_id") != b.cfg.ClientID {
		authorizePage(w, http.StatusBadRequest, "invalid_client", "The client_id is not valid")
		return
	}
	redirect := q.Get("redirect_uri")
	switch {
	case redirect == "" && len(b.cfg.RedirectURIs) == 1:
		redirect = b.cfg.RedirectURIs[0]
	case redirect == "":
		authorizePage(w, http.StatusBadRequest, "redirect_uri_missing", "A redirect_uri is required")
		return
	case len(b.cfg.RedirectURIs) > 0 && !slices.Contains(b.cfg.RedirectURIs, redirect):
		authorizePage(w, http.StatusBadRequest, "redirect_uri_mismatch", "The redirect_uri does not match the app's configuration")
		return
	}
	u, err := url.Parse(redirect)
	if err != nil || !u.IsAbs() || u.Fragment != "" {
		authorizePage(w, http.StatusBadRequest, "redirect_uri_mismatch", "The redirect_uri is not a valid absolute URL")
		return
	}
	back := u.Query()
	b.mu.Lock()
	deny := b.denyLogin
	if deny {
		back.Set("error", "access_denied")
		back.Set("error_description", "The user denied access to your application")
	} else {
		code := randAlnum(32)
		b.codes[code] = &authCode{clientID: b.cfg.ClientID, redirectURI: redirect, userID: b.cfg.OAuthUserID,
			expires: time.Now().Add(b.skew).Add(codeTTL)}
		back.Set("code", code)
	}
	b.mu.Unlock()
	if q.Has("state") {
		back.Set("state", q.Get("state"))
	}
	u.RawQuery = back.Encode()
	b.logf("authorize: redirecting (denied=%v)", deny)
	http.Redirect(w, r, u.String(), http.StatusFound)
}

func authorizePage(w http.ResponseWriter, status int, code, msg string) {
	writeRaw(w, status, "text/html; charset=utf-8", fmt.Sprintf(
		"<!DOCTYPE html><html><head><title>Box | Error</title></head><body><h1>%s</h1><p>%s</p></body></html>\n",
		html.EscapeString(code), html.EscapeString(msg)))
}

package integration_test

// Issue 2, points 1-4: the grants (Client Credentials, JWT, developer token)
// and As-User. Routing, uploads and pass-through are in core_routing_test.go,
// the token cache and the 401 retry in core_tokens_test.go, the binary, memory
// and logs in core_binary_test.go.

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/boxproxy/boxproxy/fakebox"
)

// --- 1. Client Credentials Grant

func TestCCGWithEnterpriseIDAnswersUsersMeAsTheServiceAccount(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	p := startProxy(t, box, ccgEnv(box)...)

	resp, body := p.Get(t, "/2.0/users/me")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /2.0/users/me = %d %s", resp.StatusCode, body)
	}
	me := jsonBody(t, body)
	if me["id"] != testServiceAccountID || me["login"] != box.ServiceAccount().Login {
		t.Fatalf("users/me answered %v, want the Service Account %s", me, testServiceAccountID)
	}
	reqs := requestsTo(box, "api")
	if len(reqs) != 1 || reqs[0].UserID != testServiceAccountID || !isIssued(box, reqs[0].Token) {
		t.Fatalf("the stand-in saw %+v, want one request as the Service Account with an issued token", reqs)
	}
	for _, tr := range box.TokenRequests() {
		if tr.GrantType != "client_credentials" || tr.SubjectType != "enterprise" || tr.SubjectID != testEnterpriseID || !tr.OK {
			t.Errorf("token request %+v, want a successful client_credentials grant for enterprise %s", tr, testEnterpriseID)
		}
	}
}

func TestCCGWithUserIDAnswersUsersMeAsThatUser(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	env := append(boxEnv(box),
		"BOXPROXY_CLIENT_ID="+testClientID, "BOXPROXY_CLIENT_SECRET="+testClientSecret, "BOXPROXY_USER_ID="+userAlice)
	p := startProxy(t, box, env...)

	resp, body := p.Get(t, "/2.0/users/me")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /2.0/users/me = %d %s", resp.StatusCode, body)
	}
	if me := jsonBody(t, body); me["id"] != userAlice {
		t.Fatalf("users/me answered %v, want user %s", me, userAlice)
	}
	if n := box.CountTokenRequestsFor("user", userAlice); n != 1 {
		t.Errorf("%d token requests for user %s, want 1", n, userAlice)
	}
	if n := box.CountTokenRequestsFor("enterprise", testEnterpriseID); n != 0 {
		t.Errorf("%d token requests for the enterprise, want 0 (BOXPROXY_USER_ID is the default subject)", n)
	}
}

// --- 2. JWT

func TestJWTConfigFileWithEncryptedPKCS8KeyAnswersAsTheServiceAccount(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	app := newJWTApp(t, box)
	p := startProxy(t, box, append(boxEnv(box), app.ConfigEnv()...)...)
	p.AddSecret(app.Secrets()...)

	resp, body := p.Get(t, "/2.0/users/me")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /2.0/users/me = %d %s", resp.StatusCode, body)
	}
	if me := jsonBody(t, body); me["id"] != testServiceAccountID {
		t.Fatalf("users/me answered %v, want the Service Account", me)
	}
	// As another user too: a second assertion, with sub=user.
	resp, body = p.Get(t, "/2.0/users/me", "As-User", userAlice)
	if resp.StatusCode != http.StatusOK || jsonBody(t, body)["id"] != userAlice {
		t.Fatalf("GET /2.0/users/me As-User %s = %d %s", userAlice, resp.StatusCode, body)
	}
	trs := box.TokenRequests()
	if len(trs) != 2 {
		t.Fatalf("%d token requests, want 2 (enterprise, then user): %+v", len(trs), trs)
	}
	for _, tr := range trs {
		if tr.GrantType != fakebox.GrantJWT || !tr.OK || tr.ClientID != testClientID {
			t.Errorf("token request %+v, want a successful JWT bearer grant", tr)
		}
	}
}

func TestJWTPlainPKCS1AndPKCS8KeysGivenByVariablesWork(t *testing.T) {
	t.Parallel()
	for _, form := range []string{"PKCS1", "PKCS8"} {
		t.Run(form, func(t *testing.T) {
			t.Parallel()
			box := startBox(t)
			app := newJWTApp(t, box)
			env := app.PKCS1Env()
			if form == "PKCS8" {
				env = app.PKCS8Env()
			}
			p := startProxy(t, box, append(boxEnv(box), env...)...)
			p.AddSecret(app.Secrets()...)
			resp, body := p.Get(t, "/2.0/users/me")
			if resp.StatusCode != http.StatusOK || jsonBody(t, body)["id"] != testServiceAccountID {
				t.Fatalf("GET /2.0/users/me = %d %s, want the Service Account", resp.StatusCode, body)
			}
			if n := box.CountTokenRequestsFor("enterprise", testEnterpriseID); n != 1 {
				t.Errorf("%d successful token requests for the enterprise, want 1", n)
			}
		})
	}
}

func TestJWTWrongPassphraseStopsStartWithOneLineErrorWithoutThePassphrase(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	app := newJWTApp(t, box)
	const wrong = "definitely-not-the-passphrase-42"
	encPEM := string(app.pems[0])
	badFile := writeJWTConfigFile(t, t.TempDir(), testClientID, testClientSecret, testKeyID, encPEM, wrong, testEnterpriseID)

	cases := map[string][]string{
		"wrong passphrase in the JSON file":             append(boxEnv(box), "BOXPROXY_JWT_CONFIG="+badFile),
		"wrong BOXPROXY_JWT_PASSPHRASE beside the file": append(boxEnv(box), "BOXPROXY_JWT_CONFIG="+app.ConfigPath, "BOXPROXY_JWT_PASSPHRASE="+wrong),
	}
	for name, env := range cases {
		t.Run(name+"/in-process", func(t *testing.T) {
			_, err := tryStartProxy(t, box, env...)
			if err == nil {
				t.Fatal("the proxy started with a wrong passphrase")
			}
			msg := err.Error()
			if !strings.Contains(msg, "passphrase") || strings.Contains(msg, "\n") {
				t.Errorf("error %q should be one line that names the passphrase", msg)
			}
			assertNoSecrets(t, "start-up error", msg, append(app.Secrets(), wrong))
		})
		t.Run(name+"/binary", func(t *testing.T) {
			t.Parallel()
			stdout, stderr, code := runBinary(t, append(env, "BOXPROXY_LISTEN=127.0.0.1:0"))
			if code == 0 || code == -1 {
				t.Fatalf("boxproxy exited %d with a wrong passphrase, want a non-zero exit at start; stderr %q", code, stderr)
			}
			lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
			if len(lines) != 1 || !strings.Contains(stderr, "passphrase") {
				t.Errorf("stderr %q should be one line that names the passphrase", stderr)
			}
			assertNoSecrets(t, "stderr", stderr+stdout, append(app.Secrets(), wrong, testClientSecret))
		})
	}
}

// Box's clock is off by two minutes in either direction: the first assertion is
// refused (exp already past, or more than 60 s ahead), and the proxy tries once
// more with a time taken from Box's Date header, with a new jti.
func TestJWTClockSkewIsRetriedOnceWithBoxDateThenRememberedAndEveryAssertionHasAFreshJTI(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		skew time.Duration
		desc string // Box's complaint about the first assertion
	}{
		{"box clock ahead", 2 * time.Minute, "Current date/time MUST be before the expiration date/time listed in the 'exp' claim"},
		{"box clock behind", -2 * time.Minute, "Please check the 'exp' claim."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			box := startBox(t)
			box.SetClockSkew(tc.skew)
			app := newJWTApp(t, box)
			p := startProxy(t, box, append(boxEnv(box), app.ConfigEnv()...)...)
			p.AddSecret(app.Secrets()...)

			for _, asUser := range []string{"", userAlice, userCarol} {
				var hdr []string
				want := testServiceAccountID
				if asUser != "" {
					hdr, want = []string{"As-User", asUser}, asUser
				}
				resp, body := p.Get(t, "/2.0/users/me", hdr...)
				if resp.StatusCode != http.StatusOK || jsonBody(t, body)["id"] != want {
					t.Fatalf("GET /2.0/users/me as %q = %d %s", want, resp.StatusCode, body)
				}
			}
			// The first subject (the default one): one refused assertion, then
			// one accepted. The skew is then known: every later subject's
			// first assertion is accepted.
			trs := box.TokenRequests()
			perSubject := map[string][]fakebox.TokenRequest{}
			for _, tr := range trs {
				if strings.Contains(tr.Description, "'jti'") {
					t.Errorf("the stand-in refused a reused jti: %+v", tr)
				}
				perSubject[tr.SubjectType+":"+tr.SubjectID] = append(perSubject[tr.SubjectType+":"+tr.SubjectID], tr)
			}
			if len(perSubject) != 3 {
				t.Fatalf("token requests for %d subjects, want 3: %+v", len(perSubject), trs)
			}
			for s, list := range perSubject {
				if s == "enterprise:"+testEnterpriseID {
					if len(list) != 2 || list[0].OK || list[0].Description != tc.desc || !list[1].OK {
						t.Errorf("subject %s: token requests %+v, want one refused for the clock (%q) then one accepted", s, list, tc.desc)
					}
				} else if len(list) != 1 || !list[0].OK {
					t.Errorf("subject %s: token requests %+v, want one accepted (the skew is learnt)", s, list)
				}
			}
		})
	}
}

// --- 3. Developer token

func TestDeveloperTokenIsSentToBoxAsIs(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	dev, err := box.IssueToken(testServiceAccountID)
	if err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, box, append(boxEnv(box), "BOXPROXY_DEVELOPER_TOKEN="+dev)...)
	for _, path := range []string{"/2.0/users/me", "/api/2.0/test/echo"} {
		resp, body := p.Get(t, path)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s = %d %s", path, resp.StatusCode, body)
		}
	}
	reqs := box.Requests()
	if len(reqs) != 2 {
		t.Fatalf("the stand-in saw %d requests, want 2", len(reqs))
	}
	for _, r := range reqs {
		if r.Token != dev || r.Header.Get("Authorization") != "Bearer "+dev {
			t.Errorf("%s %s carried another token than the developer token", r.Method, r.Path)
		}
	}
	if trs := box.TokenRequests(); len(trs) != 0 {
		t.Errorf("the developer token method called the token endpoint: %+v", trs)
	}
}

func TestDeveloperTokenRejectedByBoxGives401DeveloperTokenExpired(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"revoked", "unknown"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			box := startBox(t)
			dev := "devtoken-unknown-to-box-" + randomHex(t, 8)
			if name == "revoked" {
				var err error
				if dev, err = box.IssueToken(testServiceAccountID); err != nil {
					t.Fatal(err)
				}
			}
			p := startProxy(t, box, append(boxEnv(box), "BOXPROXY_DEVELOPER_TOKEN="+dev)...)
			if name == "revoked" {
				if resp, body := p.Get(t, "/2.0/users/me"); resp.StatusCode != http.StatusOK {
					t.Fatalf("before revocation: %d %s", resp.StatusCode, body)
				}
				box.RevokeAll()
			}
			box.ResetRecords()
			resp, body := p.Get(t, "/2.0/users/me")
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("GET /2.0/users/me with a rejected developer token = %d %s, want 401", resp.StatusCode, body)
			}
			e := decodeBoxError(t, resp, body)
			if e.Code != "developer_token_expired" || !strings.Contains(strings.ToLower(e.Message), "refresh") {
				t.Errorf("error %+v, want code developer_token_expired saying it cannot be refreshed", e)
			}
			if n := len(box.Requests()); n != 1 {
				t.Errorf("the stand-in saw %d attempts, want 1 (a developer token cannot be renewed)", n)
			}
			if n := len(box.TokenRequests()); n != 0 {
				t.Errorf("%d token requests, want 0", n)
			}
			p.AddSecret(dev)
		})
	}
}

// --- 4. As-User

func TestAsUserByDefaultUsesATokenMintedForThatUserAndRemovesTheHeader(t *testing.T) {
	t.Parallel()
	for _, method := range []string{"ccg", "jwt"} {
		t.Run(method, func(t *testing.T) {
			t.Parallel()
			box := startBox(t)
			env := ccgEnv(box)
			if method == "jwt" {
				app := newJWTApp(t, box)
				env = append(boxEnv(box), app.ConfigEnv()...)
			}
			p := startProxy(t, box, env...)
			waitUntil(t, 10*time.Second, func() bool { return box.CountTokenRequestsFor("enterprise", testEnterpriseID) == 1 }, "the default token is fetched")

			for i := 0; i < 3; i++ {
				resp, body := p.Get(t, "/2.0/test/echo/as-user", "As-User", userAlice)
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("GET with As-User = %d %s", resp.StatusCode, body)
				}
				echo := jsonBody(t, body)
				if echo["user_id"] != userAlice || echo["as_user"] != "" {
					t.Fatalf("the stand-in acted as %v with As-User %q, want user %s by token and no As-User header", echo["user_id"], echo["as_user"], userAlice)
				}
			}
			for _, r := range requestsTo(box, "api") {
				if _, has := r.Header["As-User"]; has {
					t.Errorf("the As-User header reached the stand-in: %v", r.Header["As-User"])
				}
				if r.UserID != userAlice {
					t.Errorf("request acted as %s, want %s", r.UserID, userAlice)
				}
			}
			if n := box.CountTokenRequestsFor("user", userAlice); n != 1 {
				t.Errorf("%d token requests for user %s, want 1 (cached for the next requests)", n, userAlice)
			}
		})
	}
}

func TestAsUserHeaderModePassesTheHeaderOnWithTheAppsOwnToken(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	p := startProxy(t, box, append(ccgEnv(box), "BOXPROXY_AS_USER=header")...)

	resp, body := p.Get(t, "/2.0/test/echo/as-user", "As-User", userAlice)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET with As-User = %d %s", resp.StatusCode, body)
	}
	echo := jsonBody(t, body)
	if echo["as_user"] != userAlice || echo["user_id"] != userAlice {
		t.Fatalf("the stand-in saw As-User %q acting as %v, want the header passed on", echo["as_user"], echo["user_id"])
	}
	reqs := requestsTo(box, "api")
	if len(reqs) != 1 || reqs[0].Header.Get("As-User") != userAlice {
		t.Fatalf("recorded requests %+v, want one with As-User: %s", reqs, userAlice)
	}
	if n := box.CountTokenRequestsFor("user", userAlice); n != 0 {
		t.Errorf("%d token requests for user %s, want 0 (header mode uses the app's token)", n, userAlice)
	}
	if n := box.CountTokenRequestsFor("enterprise", testEnterpriseID); n != 1 {
		t.Errorf("%d token requests for the enterprise, want 1", n)
	}
}

func TestAllowedUsersRefusesOtherUsersWith403AndForwardsNothing(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"token", "header"} {
		t.Run("BOXPROXY_AS_USER="+mode, func(t *testing.T) {
			t.Parallel()
			box := startBox(t)
			p := startProxy(t, box, append(ccgEnv(box), "BOXPROXY_AS_USER="+mode, "BOXPROXY_ALLOWED_USERS="+userAlice+","+userCarol)...)

			for _, asUser := range []string{userBob, "999"} {
				resp, body := p.Get(t, "/2.0/users/me", "As-User", asUser)
				if resp.StatusCode != http.StatusForbidden {
					t.Fatalf("As-User %s (not allowed) = %d %s, want 403", asUser, resp.StatusCode, body)
				}
				decodeBoxError(t, resp, body)
			}
			if n := len(box.Requests()); n != 0 {
				t.Fatalf("refused requests reached the stand-in: %+v", box.Requests())
			}
			if n := box.CountTokenRequestsFor("user", userBob); n != 0 {
				t.Errorf("a token was minted for a user that is not allowed")
			}
			for _, asUser := range []string{userAlice, userCarol} {
				resp, body := p.Get(t, "/2.0/users/me", "As-User", asUser)
				if resp.StatusCode != http.StatusOK || jsonBody(t, body)["id"] != asUser {
					t.Fatalf("As-User %s (allowed) = %d %s", asUser, resp.StatusCode, body)
				}
			}
		})
	}
}

func TestMalformedAsUserGets400AndIsNeverForwarded(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"token", "header"} {
		t.Run("BOXPROXY_AS_USER="+mode, func(t *testing.T) {
			t.Parallel()
			box := startBox(t)
			p := startProxy(t, box, append(ccgEnv(box), "BOXPROXY_AS_USER="+mode)...)
			waitUntil(t, 10*time.Second, func() bool { return len(box.TokenRequests()) == 1 }, "the default token is fetched")

			cases := map[string][]string{
				"letters":           {"abc"},
				"empty":             {""},
				"digits and letter": {"2001a"},
				"inner space":       {"20 01"},
				"sign":              {"+2001"},
				"negative":          {"-2001"},
				"hex":               {"0x7d1"},
				"21 digits":         {"123456789012345678901"},
				"non-ASCII digits":  {"２００１"},
				"percent-encoded":   {"2001%0D%0AX-Evil:%201"},
				"two headers":       {userAlice, userCarol},
			}
			for name, vals := range cases {
				req := p.Request(t, http.MethodGet, "/2.0/users/me", nil)
				req.Header["As-User"] = vals
				resp, body := p.Do(t, req)
				if resp.StatusCode != http.StatusBadRequest {
					t.Errorf("%s: As-User %q = %d %s, want 400", name, vals, resp.StatusCode, body)
					continue
				}
				decodeBoxError(t, resp, body)
			}
			if reqs := box.Requests(); len(reqs) != 0 {
				t.Errorf("requests with a bad As-User reached the stand-in: %+v", reqs)
			}
			if n := len(box.TokenRequests()); n != 1 {
				t.Errorf("%d token requests, want only the default subject's", n)
			}
		})
	}
}

func TestAsUserWithCRorLFOverRawTCPGets400AndIsNeverForwarded(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	p := startProxy(t, box, ccgEnv(box)...)
	waitUntil(t, 10*time.Second, func() bool { return len(box.TokenRequests()) == 1 }, "the default token is fetched")

	host := "Host: " + p.Addr + "\r\n"
	cases := map[string]string{
		"bare CR inside the value": "GET /2.0/users/me HTTP/1.1\r\n" + host + "As-User: 2001\rX-Injected: 1\r\nConnection: close\r\n\r\n",
		"CR then digits":           "GET /2.0/users/me HTTP/1.1\r\n" + host + "As-User: 20\r01\r\nConnection: close\r\n\r\n",
		"obsolete line folding":    "GET /2.0/users/me HTTP/1.1\r\n" + host + "As-User: 2001\r\n X-Injected: 1\r\nConnection: close\r\n\r\n",
		"NUL inside the value":     "GET /2.0/users/me HTTP/1.1\r\n" + host + "As-User: 2001\x00\r\nConnection: close\r\n\r\n",
	}
	for name, raw := range cases {
		status, body := rawHTTP(t, p.Addr, raw)
		if status != http.StatusBadRequest {
			t.Errorf("%s: status %d %q, want 400", name, status, body)
		}
	}
	if reqs := box.Requests(); len(reqs) != 0 {
		t.Errorf("requests with CR/LF in As-User reached the stand-in: %+v", reqs)
	}
	if n := len(box.TokenRequests()); n != 1 {
		t.Errorf("%d token requests, want only the default subject's", n)
	}
}

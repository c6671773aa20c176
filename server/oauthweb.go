package server

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"html"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/boxproxy/boxproxy/auth"
)

const (
	// stateTTL is how long a login started at /auth/login may take.
	stateTTL = 10 * time.Minute
	// maxStates bounds the logins in progress (each /auth/login adds one).
	maxStates = 64
	// stateCookie ties the callback to the browser that started the login.
	stateCookie = "boxproxy_oauth_state"
	// usedTTL is how long a used state is remembered, so that a reloaded
	// callback page can say that its login is over rather than that it was
	// never started.
	usedTTL = time.Hour
	// movedParam marks a /auth/login that another name of the proxy
	// redirected to the public URL, so that a front end that changes the
	// Host (a reverse proxy in front of boxproxy) cannot cause a loop.
	movedParam = "moved"
)

// oauthWeb serves /auth/login and /auth/callback: the OAuth 2.0
// authorization-code flow, with a random, single-use, short-lived state that
// is also kept in a cookie of the browser that started the login.
type oauthWeb struct {
	s      *Server
	o      *auth.OAuth
	client *http.Client // asks Box who logged in
	now    func() time.Time

	mu     sync.Mutex
	states map[string]time.Time  // state -> expiry
	used   map[string]*usedState // state -> how its login ended
	done   chan struct{}         // closed (and replaced) when a login completes
}

// usedState is a state whose callback has been served once.
type usedState struct {
	until   time.Time // forgotten then
	settled bool      // its callback has answered
	ok      bool      // and its login succeeded
}

func newOAuthWeb(s *Server, o *auth.OAuth) *oauthWeb {
	client := s.auth.Client
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	return &oauthWeb{
		s: s, o: o,
		client: client,
		now:    time.Now,
		states: map[string]time.Time{},
		used:   map[string]*usedState{},
		done:   make(chan struct{}),
	}
}

// WaitLogin waits until a browser completes the login flow at /auth/callback
// (oauth method) and returns who logged in, as far as Box told.
func (s *Server) WaitLogin(ctx context.Context) (auth.StoredUser, error) {
	if s.oauth == nil {
		return auth.StoredUser{}, errors.New("logins need the oauth method (BOXPROXY_AUTH is " + s.cfg.Auth + ")")
	}
	s.oauth.mu.Lock()
	ch := s.oauth.done
	s.oauth.mu.Unlock()
	select {
	case <-ch:
		return s.oauth.o.User(), nil
	case <-ctx.Done():
		return auth.StoredUser{}, ctx.Err()
	}
}

// LoginURL is where a browser starts the login: the public URL + /auth/login.
func (s *Server) LoginURL() string { return s.loginURL() }

func (h *oauthWeb) redirectURI() string { return h.s.PublicURL("/auth/callback") }

func (h *oauthWeb) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("Referrer-Policy", "no-referrer") // the callback URL carries the code
	hdr.Set("X-Frame-Options", "DENY")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
	if r.Method != http.MethodGet {
		hdr.Set("Allow", "GET")
		h.page(w, http.StatusMethodNotAllowed, page{Title: "Method not allowed",
			Text: []string{"Open this address in a browser (GET)."}})
		return
	}
	if r.URL.Path == "/auth/login" {
		h.login(w, r)
		return
	}
	h.callback(w, r)
}

// login starts the flow: a new state, remembered here and in a cookie, and a
// redirect to Box's authorization page.
//
// A login opened by another name of the proxy (http://127.0.0.1:8080 while
// BOXPROXY_PUBLIC_URL is http://localhost:8080) is first sent to the public
// URL's /auth/login: the cookie must be set for the host that Box's redirect
// to the callback (always the public URL) will reach.
func (h *oauthWeb) login(w http.ResponseWriter, r *http.Request) {
	if !onHost(r.Host, h.s.cfg.Public) && !r.URL.Query().Has(movedParam) {
		h.s.log.Info().Str("host", clip(r.Host, 100)).Msg("oauth: login opened by another name of the proxy; sent to BOXPROXY_PUBLIC_URL")
		http.Redirect(w, r, h.s.PublicURL("/auth/login")+"?"+movedParam+"=1", http.StatusFound)
		return
	}
	var b [32]byte
	_, _ = rand.Read(b[:])
	state := base64.RawURLEncoding.EncodeToString(b[:])
	h.remember(state)
	http.SetCookie(w, &http.Cookie{
		Name: stateCookie, Value: state, Path: h.cookiePath(), MaxAge: int(stateTTL / time.Second),
		HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: h.s.cfg.Public.Scheme == "https",
	})
	http.Redirect(w, r, h.o.AuthCodeURL(h.s.cfg.AuthorizeURL, h.redirectURI(), state), http.StatusFound)
}

// onHost says whether a request's Host field names the host and port of u
// (a missing port is the scheme's default).
func onHost(host string, u *url.URL) bool {
	defPort := "80"
	if u.Scheme == "https" {
		defPort = "443"
	}
	h, p, err := net.SplitHostPort(host)
	if err != nil {
		h, p = host, defPort
	}
	up := u.Port()
	if up == "" {
		up = defPort
	}
	return strings.EqualFold(strings.Trim(h, "[]"), u.Hostname()) && p == up
}

func (h *oauthWeb) cookiePath() string {
	if u, err := url.Parse(h.s.PublicURL("/auth/")); err == nil && u.Path != "" {
		return u.Path
	}
	return "/auth/"
}

func (h *oauthWeb) clearCookie(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: stateCookie, Value: "", Path: h.cookiePath(), MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: h.s.cfg.Public.Scheme == "https"})
}

// callback finishes the flow. Anything wrong with the state, the cookie or
// Box's answer gets a page that says so and changes nothing.
func (h *oauthWeb) callback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	state := q.Get("state")
	cookieOK := false
	if c, err := r.Cookie(stateCookie); err == nil && state != "" {
		cookieOK = subtle.ConstantTimeCompare([]byte(c.Value), []byte(state)) == 1
	}
	log := h.s.log

	if q.Has("error") {
		if cookieOK {
			h.take(state) // this login is over
			h.settle(state, false)
			h.clearCookie(w)
		}
		code := clip(q.Get("error"), 64)
		log.Info().Str("error", code).Msg("oauth: login denied at Box")
		p := page{Title: "Login was denied at Box", Again: true}
		status := http.StatusForbidden
		if code == "access_denied" {
			p.Text = []string{"Box says that access was denied, so boxproxy is not logged in with this attempt; nothing was changed."}
		} else {
			status = http.StatusBadRequest
			p.Text = []string{"Box did not complete the login (error " + code + "), so nothing was changed."}
		}
		if d := clip(q.Get("error_description"), 300); d != "" {
			p.Text = append(p.Text, "Box's explanation: "+d)
		}
		h.page(w, status, p)
		return
	}
	if state == "" {
		h.bad(w, "This login link is incomplete",
			"The address carries no state parameter, so it cannot be matched to a login that this proxy started. Nothing was changed.")
		return
	}
	if u, ok := h.usedState(state); ok {
		// A reload of the page, or the browser's back button: the cookie
		// is gone, but the login is over, not unknown.
		switch {
		case !u.settled:
			h.page(w, http.StatusConflict, page{Title: "This login is still being completed", Text: []string{
				"boxproxy is exchanging this login's code with Box right now. Reload this page in a few seconds to see how it ended.",
			}})
			return
		case u.ok:
			h.page(w, http.StatusOK, page{OK: true, Title: "This login is already complete", Text: []string{
				"boxproxy was logged in to Box with this login. Each login link works once; opening it again changed nothing.",
				"You can close this page.",
			}})
			return
		}
		h.bad(w, "This login link was already used",
			"This login did not succeed, and each login link works once. Nothing was changed; start a new login.")
		return
	}
	if !cookieOK && !h.pending(state) {
		h.clearCookie(w)
		log.Warn().Msg("oauth: callback refused: unknown or expired state")
		h.bad(w, "This login link has expired or was already used",
			"A login must be finished within 10 minutes, and each link works once (a restart of boxproxy also ends the logins in progress). Nothing was changed.")
		return
	}
	if !cookieOK {
		log.Warn().Msg("oauth: callback refused: its state does not match this browser's login cookie")
		h.bad(w, "This login was not started in this browser",
			"The answer from Box does not belong to a login started in this browser (the state does not match its cookie). "+
				"This protects against a link that would log the proxy in to someone else's account. Nothing was changed.")
		return
	}
	if !h.take(state) {
		h.settle(state, false)
		h.clearCookie(w)
		log.Warn().Msg("oauth: callback refused: unknown, expired or already used state")
		h.bad(w, "This login link has expired or was already used",
			"A login must be finished within 10 minutes, and each link works once. Nothing was changed.")
		return
	}
	succeeded := false
	defer func() { h.settle(state, succeeded) }()
	h.clearCookie(w)
	code := q.Get("code")
	if code == "" {
		h.bad(w, "Box sent no authorization code", "The answer from Box carries no code, so there is nothing to log in with. Nothing was changed.")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.s.cfg.TokenTimeout+5*time.Second)
	defer cancel()
	if err := h.o.Exchange(ctx, code, h.redirectURI()); err != nil {
		log.Error().Err(err).Msg("oauth: login failed: the authorization code could not be exchanged")
		p := page{Title: "Login failed", Again: true}
		status := http.StatusBadGateway
		switch {
		case errors.Is(err, auth.ErrGrant):
			status = http.StatusBadRequest
			p.Text = []string{"Box refused the authorization code (a code lives 30 seconds and works once)."}
		case errors.Is(err, auth.ErrConfig):
			p.Text = []string{"Box rejected the app's configuration: check BOXPROXY_CLIENT_ID, BOXPROXY_CLIENT_SECRET, and that " +
				h.redirectURI() + " is a redirect URI of the app."}
		default:
			p.Text = []string{"Box's token endpoint could not be used."}
		}
		p.Text = append(p.Text, "Details: "+err.Error())
		h.page(w, status, p)
		return
	}
	// Logged in: a reload from now on says so (asking Box who logged in is
	// only for the page).
	succeeded = true
	h.settle(state, true)
	u := h.whoAmI(ctx)
	if u != (auth.StoredUser{}) {
		if err := h.o.SetUser(u); err != nil {
			log.Warn().Err(err).Msg("oauth: cannot record the logged-in user")
		}
	}
	who := u.String()
	if u.ID != "" {
		who += ", user ID " + u.ID
	}
	h.page(w, http.StatusOK, page{OK: true, Title: "boxproxy is logged in to Box", Text: []string{
		"Logged in as " + who + ".",
		"The proxy is ready: requests to " + h.s.PublicURL("/2.0/") + "… now act as this user. You can close this page.",
	}})
	h.finished()
}

// whoAmI asks Box's /2.0/users/me with the new login's token.
func (h *oauthWeb) whoAmI(ctx context.Context) auth.StoredUser {
	log := h.s.log
	tok, err := h.s.auth.Cache.Token(ctx, h.s.auth.Default)
	if err != nil {
		log.Warn().Err(err).Msg("oauth: no token to ask Box who logged in")
		return auth.StoredUser{}
	}
	u := strings.TrimSuffix(h.s.cfg.API.String(), "/") + "/2.0/users/me?fields=id,name,login"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return auth.StoredUser{}
	}
	req.Header["Authorization"] = tok.AuthorizationHeader()
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "boxproxy")
	resp, err := h.client.Do(req)
	if err != nil {
		log.Warn().Str("error", clip(err.Error(), 200)).Msg("oauth: cannot ask Box who logged in")
		return auth.StoredUser{}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var me struct {
		ID    string `json:"id"`
		Name  string `json:"name"`
		Login string `json:"login"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &me) != nil {
		log.Warn().Int("status", resp.StatusCode).Msg("oauth: Box did not say who logged in")
		return auth.StoredUser{}
	}
	return auth.StoredUser{ID: me.ID, Name: me.Name, Login: me.Login}
}

func (h *oauthWeb) finished() {
	h.mu.Lock()
	close(h.done)
	h.done = make(chan struct{})
	h.mu.Unlock()
}

// remember keeps a new state until it expires, dropping expired ones and,
// past maxStates, the oldest.
func (h *oauthWeb) remember(state string) {
	now := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	var oldest string
	for s, exp := range h.states {
		if !now.Before(exp) {
			delete(h.states, s)
		} else if oldest == "" || exp.Before(h.states[oldest]) {
			oldest = s
		}
	}
	if len(h.states) >= maxStates {
		delete(h.states, oldest)
	}
	h.states[state] = now.Add(stateTTL)
}

// take uses up a state: it reports whether the state was known and unexpired.
// A known state is remembered as used for usedTTL.
func (h *oauthWeb) take(state string) bool {
	now := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	exp, ok := h.states[state]
	delete(h.states, state)
	if ok {
		for s, u := range h.used {
			if !now.Before(u.until) {
				delete(h.used, s)
			}
		}
		if len(h.used) >= maxStates {
			var oldest string
			for s, u := range h.used {
				if oldest == "" || u.until.Before(h.used[oldest].until) {
					oldest = s
				}
			}
			delete(h.used, oldest)
		}
		h.used[state] = &usedState{until: now.Add(usedTTL)}
	}
	return ok && now.Before(exp)
}

// pending says whether a state is one of the logins in progress.
func (h *oauthWeb) pending(state string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	exp, ok := h.states[state]
	return ok && h.now().Before(exp)
}

// usedState returns how the login of a used state ended.
func (h *oauthWeb) usedState(state string) (usedState, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	u, ok := h.used[state]
	if !ok || !h.now().Before(u.until) {
		return usedState{}, false
	}
	return *u, true
}

// settle records how the login of a used state ended.
func (h *oauthWeb) settle(state string, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if u, found := h.used[state]; found {
		u.settled, u.ok = true, ok
	}
}

func (h *oauthWeb) bad(w http.ResponseWriter, title, text string) {
	h.page(w, http.StatusBadRequest, page{Title: title, Text: []string{text}, Again: true})
}

// page is one of the HTML pages of the flow. Every field is escaped by
// html.EscapeString when the page is written; none ever holds a token or the
// code.
type page struct {
	OK    bool
	Title string
	Text  []string
	Again bool // offer a link to start a new login
	Login string
}

// The page is built from these parts and escaped fields, not with
// html/template: that package calls reflect's MethodByName, and a binary that
// can reach it keeps every exported method of every type (the Redis client's
// hundreds of commands among them): 11 MiB more executable and about 3 MiB
// more resident memory, for five escaped strings.
const (
	pageHead = `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>boxproxy: `
	pageStyle = `</title>
<style>body{font-family:system-ui,sans-serif;max-width:42em;margin:3em auto;padding:0 1em;line-height:1.5}h1{font-size:1.4em}.ok{color:#0a6b2d}.err{color:#a4121b}</style>
</head><body>
`
	pageEnd = "</body></html>\n"
)

// render writes the page as HTML.
func (p page) render(w io.Writer) error {
	var b strings.Builder
	b.WriteString(pageHead)
	b.WriteString(html.EscapeString(p.Title))
	b.WriteString(pageStyle)
	if p.OK {
		b.WriteString(`<h1 class="ok">`)
	} else {
		b.WriteString(`<h1 class="err">`)
	}
	b.WriteString(html.EscapeString(p.Title))
	b.WriteString("</h1>\n")
	for _, t := range p.Text {
		b.WriteString("<p>" + html.EscapeString(t) + "</p>\n")
	}
	if p.Again {
		b.WriteString(`<p><a href="` + html.EscapeString(p.Login) + `">Start a new login</a></p>` + "\n")
	}
	b.WriteString(pageEnd)
	_, err := io.WriteString(w, b.String())
	return err
}

func (h *oauthWeb) page(w http.ResponseWriter, status int, p page) {
	p.Login = h.s.PublicURL("/auth/login")
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_ = p.render(w)
}

// clip keeps printable characters of a value from the query, cut to n bytes.
func clip(s string, n int) string {
	var b strings.Builder
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			continue
		}
		if b.Len()+len(string(r)) > n {
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}

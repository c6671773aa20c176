package auth

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

const (
	// expiryMargin: a stored access token with less life left than this (or
	// than a quarter of its lifetime, if that is shorter) is refreshed rather
	// than handed out after a start.
	expiryMargin = 60 * time.Second
	// refreshTimeout bounds one refresh. The caller's context does not cancel
	// a refresh once it has been sent: Box may already have rotated the
	// refresh token, and the answer is the only copy of the new one.
	refreshTimeout = 30 * time.Second
	// refreshTokenLife is how long Box keeps an unused refresh token.
	refreshTokenLife = 60 * 24 * time.Hour
)

// OAuth is the OAuth 2.0 authorization-code grant: a user logs in once in a
// browser; afterwards single-use refresh tokens, kept in a store file, buy new
// access tokens.
//
// Box's refresh tokens are single-use: a refresh answers with a new refresh
// token and the old one dies at once. So OAuth refreshes one at a time (its
// mutex, besides the Cache's single flight), never sends a refresh token
// twice, and writes the new refresh token to the store (atomically: see
// writeStore) before it hands out the new access token.
type OAuth struct {
	ep   *Endpoint
	path string // absolute, symlinks resolved
	log  zerolog.Logger

	mu     sync.Mutex // one refresh, login or logout at a time; guards the fields below
	st     storeData
	handed bool // st.AccessToken has been handed out by this process
	dirty  bool // st holds tokens that could not be saved yet
	// gen counts changes of st.AccessToken. A caller that finds it changed
	// once it holds mu waited while another caller refreshed: it takes that
	// token instead of refreshing again.
	gen atomic.Uint64

	hookMu  sync.Mutex
	onLogin []func()
}

// NewOAuth loads the token store at path. A missing store means "not logged
// in"; a store that cannot be read or parsed, or a directory where new
// versions of it cannot be written, is an error, so that the start fails
// instead of silently throwing a login away.
func NewOAuth(ep *Endpoint, path string, log zerolog.Logger) (*OAuth, error) {
	if path == "" {
		return nil, errors.New("BOXPROXY_TOKEN_STORE is empty: the oauth method needs a file to keep its tokens in")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("BOXPROXY_TOKEN_STORE %s: %v", path, err)
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real // replace the file the link points at, not the link
	}
	o := &OAuth{ep: ep, path: abs, log: log}
	st, err := loadStore(abs, func(msg string) { log.Warn().Str("token_store", abs).Msg(msg) })
	if err != nil {
		return nil, fmt.Errorf("BOXPROXY_TOKEN_STORE %s: %v (fix the file or remove it; without it boxproxy must log in again)", path, err)
	}
	if err := checkStoreDir(abs); err != nil {
		return nil, fmt.Errorf("BOXPROXY_TOKEN_STORE %s: %v", path, err)
	}
	cleanTemps(abs)
	if js, ok := recoverJournal(abs, st); ok {
		// A crash came between Box's answer to a refresh and the store's
		// replacement: the journal holds the only refresh token Box accepts.
		if err := writeStore(abs, js); err != nil {
			return nil, fmt.Errorf("BOXPROXY_TOKEN_STORE %s: cannot save the tokens of an interrupted refresh: %v", path, err)
		}
		log.Warn().Str("token_store", abs).Msg("oauth: took over the tokens of a refresh that a crash interrupted")
		st = js
	}
	o.st = st
	now := ep.now()
	switch {
	case st.RefreshToken != "":
		ev := log.Info()
		age := now.Sub(st.RefreshObtained)
		if !st.RefreshObtained.IsZero() && age > refreshTokenLife-10*24*time.Hour {
			ev = log.Warn().Str("hint", "Box drops refresh tokens unused for 60 days; if it refuses this one, log in again at /auth/login")
		}
		ev.Str("token_store", abs).Str("user", o.userLocked().String()).Int64("refresh_token_age_s", int64(age.Seconds())).
			Msg("oauth: logged in (tokens from the token store)")
	case st.Rejected != nil:
		log.Warn().Str("token_store", abs).Time("rejected_at", st.Rejected.At).
			Msg("oauth: Box rejected the saved login; log in again at /auth/login")
	default:
		log.Info().Str("token_store", abs).Msg("oauth: not logged in yet; open /auth/login in a browser or run boxproxy login")
	}
	return o, nil
}

// Method implements Source.
func (o *OAuth) Method() string { return "oauth" }

// Path is the token store's file.
func (o *OAuth) Path() string { return o.path }

// Token implements Source. It hands out the stored access token when this
// process has not handed it out yet and it has life left (so that a restart
// does not refresh needlessly); callers that waited while another refreshed
// get that refresh's token; otherwise it refreshes. So a caller that needs a
// new token (the one it has is due for renewal, or Box rejected it) simply
// asks again.
func (o *OAuth) Token(ctx context.Context, _ Subject) (Token, error) {
	entered := o.gen.Load()
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.dirty {
		if err := o.saveLocked(); err != nil {
			return Token{}, err
		}
	}
	if o.st.RefreshToken == "" {
		return Token{}, o.notLoggedInLocked()
	}
	if tok, ok := o.currentLocked(o.ep.now(), entered); ok {
		return tok, nil
	}
	return o.refreshLocked(ctx)
}

// currentLocked returns the current access token if it may be handed out to a
// caller that entered Token at generation entered.
func (o *OAuth) currentLocked(now time.Time, entered uint64) (Token, bool) {
	st := o.st
	if st.AccessToken == "" || st.RefreshToken == "" {
		return Token{}, false
	}
	life := st.AccessExpiry.Sub(st.AccessObtained)
	if st.AccessObtained.IsZero() || life <= 0 {
		life = time.Hour
	}
	left := st.AccessExpiry.Sub(now)
	switch {
	case !o.handed && left > min(expiryMargin, life/4):
		o.handed = true
	case o.handed && o.gen.Load() != entered && left > 0:
		// refreshed (or logged in) while this caller waited
	default:
		return Token{}, false
	}
	return NewToken(st.AccessToken, st.AccessExpiry), true
}

// refreshLocked buys a new access token with the refresh token. When Box
// rejects the refresh token it looks once whether another process on the
// same store rotated it meanwhile; it never loops.
func (o *OAuth) refreshLocked(ctx context.Context) (Token, error) {
	var rejected error
	for attempt := 0; attempt < 2; attempt++ {
		if o.adoptDiskLocked() {
			if o.st.RefreshToken == "" {
				return Token{}, o.notLoggedInLocked()
			}
			if tok, ok := o.currentLocked(o.ep.now(), o.gen.Load()); ok {
				return tok, nil
			}
		} else if attempt > 0 {
			break // Box rejected our refresh token, and nobody has a newer one
		}
		tok, err := o.refreshOnceLocked(ctx)
		if err == nil || !errors.Is(err, ErrGrant) {
			return tok, err
		}
		rejected = err
	}
	return Token{}, o.markRejectedLocked(rejected)
}

// refreshOnceLocked sends the refresh token once and saves the answer.
//
// The one window that cannot be closed: Box rotates the refresh token when it
// handles the request, so if the process dies after Box received the request
// and before the new refresh token reaches the disk, or the answer is lost on
// the way (a timeout, a network failure), the store keeps a refresh token
// that Box no longer accepts and the user must log in again. The window is
// made as small as it can be: the answer is written to the journal (a rename,
// no fsync) as soon as it is read, before anything else happens, then the
// store is replaced durably; and a caller that gives up does not abandon a
// refresh in flight. A power loss before the store's fsync still loses it.
func (o *OAuth) refreshOnceLocked(ctx context.Context) (Token, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), refreshTimeout)
	defer cancel()
	issued := o.ep.now()
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {o.st.RefreshToken}}
	tr, err := o.ep.Exchange(ctx, "oauth", form)
	if err != nil {
		return Token{}, err
	}
	answered := time.Now()
	next := o.st
	next.AccessToken, next.AccessExpiry, next.AccessObtained = tr.AccessToken, tr.expiry(issued), issued
	if tr.RefreshToken != "" && checkStoredToken("refresh_token", tr.RefreshToken) == nil {
		next.RefreshToken, next.RefreshObtained = tr.RefreshToken, issued
	} else {
		// Box always rotates; without a usable new one the old one is all there is.
		o.log.Warn().Msg("oauth: the refresh answer had no usable refresh_token; keeping the previous one")
	}
	next.Rejected = nil
	// From here on the old refresh token exists nowhere in this process:
	// memory holds the new one even if saving fails (then it is saved at the
	// next call, before any token is handed out). The journal is written
	// first because it needs no fsync: it shrinks the window to well under
	// a millisecond; the store's replacement then makes the state durable.
	o.setLocked(next)
	if err := writeJournal(o.path, next); err != nil {
		o.log.Warn().Str("error", pathErr(err).Error()).Msg("oauth: cannot write the token store's journal; saving the store directly")
	}
	journaled := time.Since(answered)
	if err := o.saveLocked(); err != nil {
		return Token{}, err
	}
	o.handed = true
	o.log.Debug().Time("expires", next.AccessExpiry).Dur("journal_took_ms", journaled).Dur("save_took_ms", time.Since(answered)).
		Msg("oauth: refreshed; new refresh token saved")
	return NewToken(next.AccessToken, next.AccessExpiry), nil
}

// setLocked replaces the state with one whose access token is not handed out yet.
func (o *OAuth) setLocked(st storeData) {
	o.st, o.handed = st, false
	o.gen.Add(1)
}

// adoptDiskLocked takes the store on disk when it holds a different refresh
// token than memory: another process on the same store (boxproxy token, a
// restarted twin) has refreshed since this one read it, and the refresh token
// in memory is dead.
func (o *OAuth) adoptDiskLocked() bool {
	if o.dirty {
		return false // memory is newer than the disk
	}
	st, err := loadStore(o.path, func(string) {})
	if err != nil || st.RefreshToken == "" || st.RefreshToken == o.st.RefreshToken {
		return false
	}
	o.log.Info().Msg("oauth: the token store was updated by another process; using its tokens")
	o.setLocked(st)
	return true
}

// markRejectedLocked forgets a refresh token that Box refused and records
// that in the store, so that the proxy (also after a restart) says "log in
// again" without asking Box, which would refuse again.
func (o *OAuth) markRejectedLocked(err error) error {
	r := &storeRejection{At: o.ep.now()}
	var te *TokenError
	if errors.As(err, &te) {
		r.Code, r.Description = te.Code, te.Description
	}
	o.log.Error().Err(err).Str("login_url", "/auth/login").
		Msg("oauth: Box rejected the saved refresh token (unused for 60 days, revoked, or used elsewhere); log in again at /auth/login or with boxproxy login")
	o.setLocked(storeData{Version: storeVersion, User: o.st.User, Rejected: r})
	if serr := o.saveLocked(); serr != nil {
		o.log.Error().Err(serr).Msg("oauth: cannot record the rejected login in the token store")
	}
	return err
}

// notLoggedInLocked is the error while there is no refresh token.
func (o *OAuth) notLoggedInLocked() error {
	if r := o.st.Rejected; r != nil {
		return &TokenError{Kind: ErrGrant, Method: "oauth", Code: r.Code, Description: r.Description}
	}
	return ErrLoginRequired
}

// saveLocked writes the store; on failure the state stays in memory, marked
// to be saved at the next call.
func (o *OAuth) saveLocked() error {
	if err := writeStore(o.path, o.st); err != nil {
		o.dirty = true
		o.log.Error().Str("token_store", o.path).Err(err).
			Msg("oauth: cannot save the token store; the tokens are kept in memory only, and a restart now would lose the login")
		return fmt.Errorf("oauth: cannot save the token store %s: %v", o.path, err)
	}
	o.dirty = false
	return nil
}

// OnLogin adds f to the functions called after every successful login.
func (o *OAuth) OnLogin(f func()) {
	o.hookMu.Lock()
	o.onLogin = append(o.onLogin, f)
	o.hookMu.Unlock()
}

func (o *OAuth) loggedIn() {
	o.hookMu.Lock()
	hooks := append([]func(){}, o.onLogin...)
	o.hookMu.Unlock()
	for _, f := range hooks {
		f()
	}
}

// AuthCodeURL returns the URL of Box's authorization page.
func (o *OAuth) AuthCodeURL(authorizeURL, redirectURI, state string) string {
	q := url.Values{"response_type": {"code"}, "client_id": {o.ep.ClientID}, "redirect_uri": {redirectURI}, "state": {state}}
	sep := "?"
	if u, err := url.Parse(authorizeURL); err == nil && u.RawQuery != "" {
		sep = "&"
	}
	return authorizeURL + sep + q.Encode()
}

// Exchange trades an authorization code for tokens and saves them; then it
// calls the OnLogin functions. A previous login's refresh token is revoked.
func (o *OAuth) Exchange(ctx context.Context, code, redirectURI string) error {
	if code == "" {
		return errors.New("no authorization code")
	}
	o.mu.Lock()
	issued := o.ep.now()
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}}
	if redirectURI != "" {
		form.Set("redirect_uri", redirectURI)
	}
	tr, err := o.ep.Exchange(ctx, "oauth", form)
	if err == nil && (tr.RefreshToken == "" || checkStoredToken("refresh_token", tr.RefreshToken) != nil) {
		err = &TokenError{Kind: ErrBadResponse, Method: "oauth", Status: 200, Cause: errors.New("response has no usable refresh_token")}
	}
	if err != nil {
		o.mu.Unlock()
		return err
	}
	prev := o.st.RefreshToken
	o.setLocked(storeData{Version: storeVersion,
		AccessToken: tr.AccessToken, AccessExpiry: tr.expiry(issued), AccessObtained: issued,
		RefreshToken: tr.RefreshToken, RefreshObtained: issued})
	serr := o.saveLocked()
	o.mu.Unlock()

	o.log.Info().Msg("oauth: logged in")
	o.loggedIn() // the cache drops tokens of the previous login
	if prev != "" && prev != tr.RefreshToken {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		if err := o.ep.Revoke(rctx, prev); err != nil {
			o.log.Warn().Err(err).Msg("oauth: cannot revoke the previous login's refresh token")
		}
		cancel()
	}
	return serr
}

// SetUser records who is logged in (learned from /2.0/users/me after the
// login) in the store.
func (o *OAuth) SetUser(u StoredUser) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.st.RefreshToken == "" {
		return ErrLoginRequired
	}
	u = u.clean()
	o.st.User = &u
	o.log.Info().Str("user_id", u.ID).Str("user", u.String()).Msg("oauth: logged-in user")
	return o.saveLocked()
}

// User returns who is logged in, as far as known.
func (o *OAuth) User() StoredUser {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.userLocked()
}

func (o *OAuth) userLocked() StoredUser {
	if o.st.User == nil {
		return StoredUser{}
	}
	return *o.st.User
}

// Logout revokes the tokens at Box and removes the store. When Box cannot be
// reached the store is kept, so that logout can be run again; without a
// login it only removes the store.
func (o *OAuth) Logout(ctx context.Context) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.dirty {
		_ = o.saveLocked()
	}
	o.adoptDiskLocked()
	// Revoking the refresh token ends the access tokens issued with it too;
	// the access token is revoked as well in case Box does not.
	if rt := o.st.RefreshToken; rt != "" {
		if err := o.ep.Revoke(ctx, rt); err != nil {
			return fmt.Errorf("cannot revoke the refresh token at Box, so the token store %s was kept (run logout again): %w", o.path, err)
		}
	}
	if at := o.st.AccessToken; at != "" && o.ep.now().Before(o.st.AccessExpiry) {
		if err := o.ep.Revoke(ctx, at); err != nil {
			o.log.Warn().Err(err).Msg("oauth: cannot revoke the access token at Box; it expires within the hour")
		}
	}
	if err := removeStore(o.path); err != nil {
		return fmt.Errorf("token store %s: %v", o.path, err)
	}
	o.setLocked(storeData{Version: storeVersion})
	o.dirty = false
	o.log.Info().Msg("oauth: logged out")
	return nil
}

// LoggedIn reports whether the store holds a refresh token.
func (o *OAuth) LoggedIn() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.st.RefreshToken != ""
}

// LoginExpired reports whether Box rejected the last login's refresh token.
func (o *OAuth) LoginExpired() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.st.RefreshToken == "" && o.st.Rejected != nil
}

package auth

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/boxproxy/boxproxy/metrics"
	"github.com/boxproxy/boxproxy/seal"
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
	// lockWait bounds the wait for the fleet's refresh lock; then the
	// request fails with a 503 rather than risk a second rotation.
	lockWait = 15 * time.Second
	// sharedTimeout bounds one look-up of the shared login.
	sharedTimeout = 2 * time.Second
)

// OAuthOptions say where an OAuth source keeps its login.
type OAuthOptions struct {
	// Path is the token store file (BOXPROXY_TOKEN_STORE); not used when
	// Shared is set, but for taking over its login once.
	Path string
	// Seal encrypts the token store file (BOXPROXY_STORE_KEY). Required.
	Seal *seal.Box
	// Shared is the fleet's login store (Redis): every replica serves the
	// login kept there, and refreshes under its lock.
	Shared LoginStore
	// Keepalive: RunKeepalive refreshes an idle login at least this often.
	Keepalive time.Duration
	Metrics   *metrics.Metrics
}

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
	ep        *Endpoint
	path      string // absolute, symlinks resolved; empty with shared
	sl        *seal.Box
	shared    LoginStore
	keepalive time.Duration
	m         *metrics.Metrics
	log       zerolog.Logger

	mu     sync.Mutex // one refresh, login or logout at a time; guards the fields below
	st     storeData
	handed bool  // st.AccessToken has been handed out by this process
	dirty  bool  // st holds tokens that could not be saved yet
	ver    int64 // with shared: the version of the shared login that st is
	// held is the fleet lock kept while dirty: it is released once the
	// tokens are saved, so that no replica rotates the refresh token that
	// this one has already spent.
	held func()
	// changed: st became another login than before (taken from the fleet):
	// the OnLogin functions are due; unlockMu runs them once mu is released.
	changed bool
	// logins counts the logins this process has served (written under mu):
	// a new one on each code exchange, logout, and login taken from the
	// fleet or the store file that is another than memory's (LoginEpoch).
	logins atomic.Uint64
	// overwritten collects the refresh tokens of other, older logins that a
	// fenced write replaced (Exchange revokes them).
	overwritten []string
	// gen counts changes of st.AccessToken. A caller that finds it changed
	// once it holds mu waited while another caller refreshed: it takes that
	// token instead of refreshing again.
	gen atomic.Uint64

	hookMu  sync.Mutex
	onLogin []func()

	// closed is set by Close (shutdown): no refresh starts any more.
	closed atomic.Bool
}

// NewOAuth loads the login: from the token store file at o.Path, or from the
// fleet's shared store. A missing store means "not logged in"; a store that
// cannot be read, parsed or decrypted, or a directory where new versions of
// the file cannot be written, is an error, so that the start fails instead of
// silently throwing a login away.
func NewOAuth(ep *Endpoint, opts OAuthOptions, log zerolog.Logger) (*OAuth, error) {
	if opts.Seal == nil {
		return nil, errors.New("oauth: no key to encrypt the stored tokens with (BOXPROXY_STORE_KEY)")
	}
	o := &OAuth{ep: ep, sl: opts.Seal, shared: opts.Shared, keepalive: opts.Keepalive, m: opts.Metrics, log: log}
	if opts.Shared != nil {
		if err := o.loadShared(opts.Path); err != nil {
			return nil, err
		}
		o.logState("Redis")
		return o, nil
	}
	path := opts.Path
	if path == "" {
		return nil, errors.New("BOXPROXY_TOKEN_STORE is empty: the oauth method needs a file to keep its tokens in")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("BOXPROXY_TOKEN_STORE: %v", err)
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real // replace the file the link points at, not the link
	}
	o.path = abs
	// No message quotes the path: a refresh token pasted into
	// BOXPROXY_TOKEN_STORE by mistake is a valid file name (README, "No
	// value in any error").
	st, plain, err := loadStore(abs, o.sl, func(msg string) { log.Warn().Str("token_store", "file").Msg(msg) })
	if errors.Is(err, ErrStoreKey) {
		return nil, fmt.Errorf("BOXPROXY_TOKEN_STORE: %w", err)
	}
	if err != nil {
		return nil, fmt.Errorf("BOXPROXY_TOKEN_STORE: %v (fix the file or remove it; without it boxproxy must log in again)", err)
	}
	if err := checkStoreDir(abs); err != nil {
		return nil, fmt.Errorf("BOXPROXY_TOKEN_STORE: %v", err)
	}
	cleanTemps(abs)
	if js, ok := recoverJournal(abs, o.sl, st); ok {
		// A crash came between Box's answer to a refresh and the store's
		// replacement: the journal holds the only refresh token Box accepts.
		if err := writeStore(abs, o.sl, js); err != nil {
			return nil, fmt.Errorf("BOXPROXY_TOKEN_STORE: cannot save the tokens of an interrupted refresh: %v", pathErr(err))
		}
		log.Warn().Str("token_store", "file").Msg("oauth: took over the tokens of a refresh that a crash interrupted")
		st, plain = js, false
	}
	if plain {
		if err := writeStore(abs, o.sl, st); err != nil {
			return nil, fmt.Errorf("BOXPROXY_TOKEN_STORE: cannot rewrite the unencrypted store encrypted: %v", pathErr(err))
		}
		log.Warn().Str("token_store", "file").Msg("oauth: the token store was unencrypted (an older boxproxy); rewritten encrypted with BOXPROXY_STORE_KEY")
	}
	o.st = st
	o.logState("file")
	return o, nil
}

// logState says at start whether a login is there, and where it is kept
// ("file" or "Redis", never the file's path).
func (o *OAuth) logState(where string) {
	st, now := o.st, o.ep.now()
	switch {
	case st.RefreshToken != "":
		ev := o.log.Info()
		age := now.Sub(st.RefreshObtained)
		if !st.RefreshObtained.IsZero() && age > refreshTokenLife-10*24*time.Hour {
			ev = o.log.Warn().Str("hint", "Box drops refresh tokens unused for 60 days; if it refuses this one, log in again at /auth/login")
		}
		ev.Str("token_store", where).Str("user", o.userLocked().String()).Int64("refresh_token_age_s", int64(age.Seconds())).
			Msg("oauth: logged in (tokens from the token store)")
	case st.Rejected != nil:
		o.log.Warn().Str("token_store", where).Time("rejected_at", st.Rejected.At).
			Msg("oauth: Box rejected the saved login; log in again at /auth/login")
	default:
		o.log.Info().Str("token_store", where).Msg("oauth: not logged in yet; open /auth/login in a browser or run boxproxy login")
	}
}

// loadShared reads the fleet's login at start. A login sealed under another
// key stops the start; an unreachable Redis does not (the login is read when
// it answers). When the fleet has no login yet, a token store file's login
// is taken over, once.
func (o *OAuth) loadShared(path string) error {
	ctx, cancel := context.WithTimeout(context.Background(), sharedTimeout)
	defer cancel()
	defer func() { o.changed = false }() // nothing to tell at start
	err := o.syncLocked(ctx)
	if errors.Is(err, ErrStoreKey) {
		return fmt.Errorf("BOXPROXY_REDIS_URL: %w", err)
	}
	if err != nil {
		o.log.Warn().Err(err).Msg("oauth: cannot read the fleet's login from Redis yet; trying again at the first request")
		return nil
	}
	if o.st.RefreshToken != "" || o.st.Rejected != nil || path == "" {
		return nil
	}
	st, _, ferr := loadStore(path, o.sl, func(string) {})
	if ferr != nil || st.RefreshToken == "" {
		return nil
	}
	st.LoginSeq = max(st.LoginSeq, o.ver) + 1 // a login new to the fleet
	o.st = st
	if err := o.saveSharedLocked(ctx); err != nil {
		o.log.Warn().Err(err).Msg("oauth: cannot copy the token store's login to Redis")
		return nil
	}
	o.log.Warn().Str("token_store", "file").Msg("oauth: the fleet had no login; took over the token store file's login (the file is no longer used: remove it)")
	return nil
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
	defer o.unlockMu()
	defer func() { reportLogin(ctx, o.logins.Load()) }() // still under mu
	if o.dirty {
		if err := o.saveLocked(); err != nil {
			return Token{}, err
		}
	}
	if o.shared != nil {
		sctx, cancel := context.WithTimeout(ctx, sharedTimeout)
		err := o.syncLocked(sctx)
		cancel()
		if err != nil {
			if o.st.RefreshToken == "" && o.st.Rejected == nil {
				// Not "log in": the login may well be in Redis.
				return Token{}, fmt.Errorf("oauth: cannot read the fleet's login: %w", err)
			}
			// Serve the access token in hand; a refresh needs Redis.
			o.log.Debug().Err(err).Msg("oauth: cannot read the fleet's login; using the one in memory")
		}
	}
	if o.st.RefreshToken == "" {
		return Token{}, o.notLoggedInLocked()
	}
	take := func() (Token, bool) { return o.currentLocked(o.ep.now(), entered) }
	if tok, ok := take(); ok {
		return tok, nil
	}
	return o.refreshLocked(ctx, take)
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

// lockFleet takes the fleet's refresh lock, waiting at most lockWait, and
// counts the wait. Refreshes, logins and logouts change the login under it.
func (o *OAuth) lockFleet(ctx context.Context) (unlock func(), err error) {
	lctx, cancel := context.WithTimeout(ctx, lockWait)
	defer cancel()
	start := time.Now()
	unlock, err = o.shared.Lock(lctx)
	o.m.FleetLockWait(time.Since(start))
	return unlock, err
}

// refreshLocked buys a new access token with the refresh token, unless take,
// asked again once this process knows the latest login (another process or
// replica may have refreshed meanwhile), yields a token or says that none is
// needed. When Box rejects the refresh token it looks once more whether
// another process rotated it meanwhile; it never loops.
func (o *OAuth) refreshLocked(ctx context.Context, take func() (Token, bool)) (Token, error) {
	if o.shared != nil {
		unlock, err := o.lockFleet(ctx)
		if err != nil {
			o.log.Warn().Err(err).Msg("oauth: cannot take the fleet's refresh lock; not refreshing")
			// err wraps ErrFleet.
			return Token{}, fmt.Errorf("oauth: not refreshing without the fleet's refresh lock (that could spend the refresh token twice): %w", err)
		}
		defer func() {
			if o.dirty && o.held == nil {
				o.held = unlock // released once the tokens are saved
				return
			}
			unlock()
		}()
	}
	var rejected error
	for attempt := 0; attempt < 2; attempt++ {
		if o.adoptLatestLocked(ctx) {
			if o.st.RefreshToken == "" {
				return Token{}, o.notLoggedInLocked()
			}
			if tok, ok := take(); ok {
				return tok, nil
			}
		} else if attempt > 0 {
			break // Box rejected our refresh token, and nobody has a newer one
		}
		tok, err := o.refreshOnceLocked(ctx)
		if errors.Is(err, errLoginReplaced) {
			// Never the previous login's token: the fleet's login is
			// another one now (this replica's lease had lapsed).
			if o.st.RefreshToken == "" {
				return Token{}, o.notLoggedInLocked()
			}
			if tok, ok := take(); ok {
				return tok, nil
			}
			return Token{}, err
		}
		if err == nil || !errors.Is(err, ErrGrant) {
			return tok, err
		}
		rejected = err
	}
	return Token{}, o.markRejectedLocked(rejected)
}

// revoke revokes tok at Box, bounded, and logs a failure (never the token).
func (o *OAuth) revoke(ctx context.Context, tok, what string) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := o.ep.Revoke(rctx, tok); err != nil {
		o.log.Warn().Err(err).Msg("oauth: cannot revoke " + what)
	}
}

// errLoginReplaced: while this replica refreshed, another login replaced the
// one it refreshed (its lock's lease had lapsed); the caller asks again.
var errLoginReplaced = fmt.Errorf("%w: the fleet's login was replaced by another one while this replica refreshed the previous one; ask again", ErrFleet)

// adoptLatestLocked takes the latest login when another process changed it:
// the store file (another process on it) or the fleet's login (Redis). It
// reports whether the refresh token changed.
func (o *OAuth) adoptLatestLocked(ctx context.Context) bool {
	if o.shared == nil {
		return o.adoptDiskLocked()
	}
	before := o.st.RefreshToken
	sctx, cancel := context.WithTimeout(ctx, sharedTimeout)
	defer cancel()
	if err := o.syncLocked(sctx); err != nil {
		return false
	}
	return o.st.RefreshToken != before
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
	if o.closed.Load() {
		return Token{}, ErrClosed // shutting down: a refresh sent now could be cut
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), refreshTimeout)
	defer cancel()
	issued := o.ep.now()
	o.log.Debug().Bool("fleet", o.shared != nil).Msg("oauth: refreshing")
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
	next.Rotation++
	// From here on the old refresh token exists nowhere in this process:
	// memory holds the new one even if saving fails (then it is saved at the
	// next call, before any token is handed out). The journal is written
	// first because it needs no fsync: it shrinks the window to well under
	// a millisecond; the store's replacement then makes the state durable.
	o.setLocked(next)
	journaled := time.Duration(0)
	if o.shared == nil {
		if err := writeJournal(o.path, o.sl, next); err != nil {
			o.log.Warn().Str("error", pathErr(err).Error()).Msg("oauth: cannot write the token store's journal; saving the store directly")
		}
		journaled = time.Since(answered)
	}
	if err := o.saveLocked(); err != nil {
		return Token{}, err
	}
	if o.st.RefreshToken != next.RefreshToken {
		// The save found a newer, other login in the fleet and took it:
		// the one just refreshed is orphaned. Its new refresh token exists
		// only here; revoke it, and hand out nothing of it.
		o.log.Warn().Msg("oauth: another login replaced the fleet's login during this refresh; following it and revoking the refreshed one")
		if next.RefreshToken != "" && next.RefreshToken != o.st.RefreshToken {
			o.revoke(ctx, next.RefreshToken, "the replaced login's new refresh token")
		}
		return Token{}, errLoginReplaced
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

// adoptLocked takes st, the fleet's login, at version v. When it is another
// login than memory's the OnLogin functions are due (the token cache still
// holds the previous user's tokens).
func (o *OAuth) adoptLocked(st storeData, v int64) {
	if st.otherLogin(o.st) {
		o.changed = true
		o.logins.Add(1)
	}
	o.setLocked(st)
	o.ver = v
}

// unlockMu releases mu, then runs the OnLogin functions if the login changed
// meanwhile: not under mu, because they call into the token cache, whose
// fetches call Token.
func (o *OAuth) unlockMu() {
	changed := o.changed
	o.changed = false
	o.mu.Unlock()
	if changed {
		o.log.Info().Msg("oauth: another login replaced this one (made by another replica or process); following it")
		o.loggedIn()
	}
}

// adoptDiskLocked takes the store on disk when it holds a different refresh
// token than memory: another process on the same store (boxproxy token, a
// restarted twin) has refreshed since this one read it, and the refresh token
// in memory is dead.
func (o *OAuth) adoptDiskLocked() bool {
	if o.dirty {
		return false // memory is newer than the disk
	}
	st, _, err := loadStore(o.path, o.sl, func(string) {})
	if err != nil || st.RefreshToken == "" || st.RefreshToken == o.st.RefreshToken {
		return false
	}
	o.log.Info().Msg("oauth: the token store was updated by another process; using its tokens")
	if st.otherLogin(o.st) {
		o.changed = true // another login (boxproxy login in another process)
		o.logins.Add(1)
	}
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
	o.setLocked(storeData{Version: storeVersion, User: o.st.User, Rejected: r, LoginSeq: o.st.LoginSeq, Rotation: o.st.Rotation + 1})
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
	if o.shared != nil {
		return o.saveSharedRetryLocked()
	}
	if err := writeStore(o.path, o.sl, o.st); err != nil {
		o.dirty = true
		o.log.Error().Str("token_store", "file").Err(err).
			Msg("oauth: cannot save the token store; the tokens are kept in memory only, and a restart now would lose the login")
		return fmt.Errorf("oauth: cannot save the token store (BOXPROXY_TOKEN_STORE): %v", err)
	}
	o.dirty = false
	return nil
}

// saveSharedRetryLocked writes the login to Redis, trying again for a while
// when Redis does not answer: a refresh token that Box has rotated exists
// nowhere else.
func (o *OAuth) saveSharedRetryLocked() error {
	o.overwritten = o.overwritten[:0]
	deadline := time.Now().Add(refreshTimeout / 3)
	var err error
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		ctx, cancel := context.WithTimeout(context.Background(), sharedTimeout)
		err = o.saveSharedLocked(ctx)
		cancel()
		if err == nil {
			o.dirty = false
			if o.held != nil {
				o.held()
				o.held = nil
			}
			return nil
		}
		if time.Now().Add(wait).After(deadline) {
			break
		}
		time.Sleep(wait)
	}
	o.dirty = true
	o.log.Error().Err(err).
		Msg("oauth: cannot save the login to Redis; the tokens are kept in this replica's memory (holding the fleet's refresh lock) until Redis answers, and a restart now would lose the login")
	return fmt.Errorf("oauth: cannot save the login to the fleet's Redis: %w", err)
}

// saveSharedLocked writes st to the fleet's store, fenced on the version it
// was read at. When the version moved on, the stored login is compared with
// memory's by their order (login, then rotation; never by clocks): a newer or
// equal one is taken instead, and memory is never written over it; an older
// one (Redis lost data, or only the user's name changed) is written over.
func (o *OAuth) saveSharedLocked(ctx context.Context) error {
	data, err := o.st.encode()
	if err != nil {
		return err
	}
	for range 3 {
		v, err := o.shared.Save(ctx, data, o.ver)
		if err == nil {
			o.ver = v
			return nil
		}
		if !errors.Is(err, ErrStale) {
			return err
		}
		cur, cv, err := o.loadFleetLocked(ctx)
		if err != nil {
			return err
		}
		cst, err := decodeShared(cur)
		if err != nil {
			return err
		}
		if cst.RefreshToken != "" && !o.st.newerThan(cst) {
			o.log.Warn().Msg("oauth: the fleet's login changed meanwhile to a newer one; taking it")
			o.adoptLocked(cst, cv)
			return nil
		}
		if cst.RefreshToken != "" && cst.RefreshToken != o.st.RefreshToken && cst.otherLogin(o.st) {
			o.overwritten = append(o.overwritten, cst.RefreshToken)
		}
		o.ver = cv
	}
	return ErrStale
}

// loadFleetLocked reads the fleet's login. A version that the store cannot
// use is reported and counted as 0 (the store's fenced write does the same),
// so that the next write repairs it instead of every write failing as stale.
func (o *OAuth) loadFleetLocked(ctx context.Context) ([]byte, int64, error) {
	data, v, err := o.shared.Load(ctx)
	if errors.Is(err, ErrLoginVersion) {
		o.log.Warn().Err(err).Msg("oauth: the fleet's login in Redis has an unusable version; the next write repairs it")
		return data, 0, nil
	}
	return data, v, err
}

// decodeShared parses the fleet's login; nil data is "logged out".
func decodeShared(data []byte) (storeData, error) {
	if data == nil {
		return storeData{Version: storeVersion}, nil
	}
	return parseStore(data)
}

// syncLocked takes the fleet's login when it differs from the one in memory.
// Versions fence writes but do not tell old from new after Redis lost its
// data (restarted without persistence, failed over to a lagging replica):
// they start again from 0. So when Redis's version is not above memory's, the
// logins themselves are compared, by their order (newerThan): a stored login
// older than memory's (or none) is not taken; memory is written back instead,
// fenced, and the newest login among the replicas wins. A version above
// memory's is always taken: Redis has seen writes that this replica has not.
func (o *OAuth) syncLocked(ctx context.Context) error {
	if o.dirty {
		return nil // memory is newer than the store: saveLocked comes first
	}
	data, v, err := o.shared.Load(ctx)
	badVersion := errors.Is(err, ErrLoginVersion)
	if badVersion {
		o.log.Warn().Err(err).Msg("oauth: the fleet's login in Redis has an unusable version; writing it again, fenced at 0, to repair it")
		err = nil // v is 0
	}
	if err != nil {
		return err
	}
	st, err := decodeShared(data)
	if err != nil {
		return fmt.Errorf("%w: the fleet's login in Redis is unusable: %v", ErrFleet, err)
	}
	if st.RefreshToken == o.st.RefreshToken && st.AccessToken == o.st.AccessToken {
		o.st, o.ver = st, v // the user's name may have changed
		if badVersion && data != nil {
			return o.saveSharedLocked(ctx) // fenced at 0, as the store counts it
		}
		return nil
	}
	lost := o.st.RefreshToken != "" && v <= o.ver &&
		((st.RefreshToken == "" && st.Rejected == nil) ||
			(st.RefreshToken != "" && o.st.newerThan(st)) ||
			// a rejection of an older state than memory's (its refresh
			// token was dead; memory's is not)
			(st.Rejected != nil && st.ordered() && o.st.ordered() && o.st.newerThan(st)))
	if lost {
		o.log.Warn().Int64("redis_version", v).Int64("known_version", o.ver).
			Msg("oauth: Redis holds an older login than this replica (it lost data: restarted without persistence?); writing back this replica's")
		o.ver = v
		return o.saveSharedLocked(ctx)
	}
	o.adoptLocked(st, v)
	if badVersion && data != nil {
		return o.saveSharedLocked(ctx)
	}
	return nil
}

// RunKeepalive refreshes an idle login at least every Keepalive, so that Box's
// 60-day expiry of unused refresh tokens never ends it, until ctx ends. In a
// fleet every replica checks, and the first to take the refresh lock
// refreshes; the others then see the new login and do nothing.
func (o *OAuth) RunKeepalive(ctx context.Context) {
	if o.keepalive <= 0 {
		return
	}
	every := min(max(o.keepalive/20, 50*time.Millisecond), 10*time.Minute)
	if o.shared != nil {
		// Also follow the fleet's login, so that this replica's memory is
		// never far behind it (it is what Redis is restored from).
		every = min(every, 5*time.Second)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(every/2 + rand.N(every/2+1)):
		}
		o.keepaliveOnce(ctx)
	}
}

func (o *OAuth) keepaliveOnce(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	o.mu.Lock()
	defer o.unlockMu()
	if o.closed.Load() {
		return
	}
	if o.dirty {
		if o.saveLocked() != nil {
			return
		}
	}
	if o.shared != nil {
		sctx, cancel := context.WithTimeout(ctx, sharedTimeout)
		err := o.syncLocked(sctx)
		cancel()
		if err != nil {
			return
		}
	}
	idle := func() bool { return o.st.RefreshToken != "" && o.ep.now().Sub(o.st.RefreshObtained) >= o.keepalive }
	if !idle() {
		return
	}
	handed, gen := o.handed, o.gen.Load()
	_, err := o.refreshLocked(context.WithoutCancel(ctx), func() (Token, bool) { return Token{}, !idle() })
	if err != nil {
		o.log.Warn().Err(err).Msg("oauth: keep-alive refresh failed")
		return
	}
	if o.gen.Load() != gen {
		// Nobody was handed the new access token: the next caller is.
		o.handed = false
		o.log.Info().Dur("keepalive", o.keepalive).Msg("oauth: refreshed an idle login (keep-alive)")
	} else {
		o.handed = handed
	}
}

// Close is for a shutdown: from now on no refresh starts (the keep-alive
// does nothing more; a Token call that would refresh fails with ErrClosed),
// and Close waits until the refresh, login or logout in progress, if any,
// has ended and saved its answer (it holds mu throughout), or until ctx
// ends. A refresh that Box has received must not be cut: Box has rotated
// the refresh token, and the answer is the only copy of the new one. Tokens
// that could not be saved yet get one last attempt.
func (o *OAuth) Close(ctx context.Context) error {
	o.closed.Store(true)
	start := time.Now()
	if o.mu.TryLock() {
		dirty := o.dirty
		o.mu.Unlock()
		if !dirty {
			return nil
		}
	} else {
		o.log.Info().Bool("fleet", o.shared != nil).
			Msg("shutdown: waiting for the oauth refresh (or login) in progress to end and its new refresh token to be saved")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		o.mu.Lock()
		defer o.unlockMu()
		if o.dirty {
			if err := o.saveLocked(); err != nil {
				o.log.Error().Str("login_url", "/auth/login").
					Msg("shutdown: the latest oauth tokens cannot be saved; the login ends with this process: log in again after the restart")
				return
			}
			o.log.Warn().Msg("shutdown: saved the oauth tokens that could not be saved before")
		}
	}()
	select {
	case <-done:
		o.log.Info().Dur("waited_ms", time.Since(start)).Msg("shutdown: no oauth refresh in progress any more")
		return nil
	case <-ctx.Done():
		o.log.Error().Dur("waited_ms", time.Since(start)).
			Msg("shutdown: gave up waiting for the oauth refresh in progress; if Box has answered it meanwhile, its new refresh token is lost and someone must log in again")
		return ctx.Err()
	}
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

// AuthCodeURL returns the URL of Box's authorization page. Parameters the
// configured URL carries (scope=…) are kept; boxproxy's own (response_type,
// client_id, redirect_uri, state) replace any of the same name there.
func (o *OAuth) AuthCodeURL(authorizeURL, redirectURI, state string) string {
	u, err := url.Parse(authorizeURL)
	if err != nil {
		u = &url.URL{Path: authorizeURL} // config has checked it; keep the link visible
	}
	q := u.Query()
	q.Set("response_type", "code")
	q.Set("client_id", o.ep.ClientID)
	q.Set("redirect_uri", redirectURI)
	q.Set("state", state)
	u.RawQuery, u.ForceQuery = q.Encode(), false
	return u.String()
}

// Exchange trades an authorization code for tokens and saves them; then it
// calls the OnLogin functions. A previous login's refresh token is revoked.
//
// With a fleet it works under the fleet's refresh lock (waiting at most
// lockWait for it, as a refresh does): no replica rotates the previous login
// meanwhile, so the refresh token revoked is the one the fleet holds, and the
// new login is written fenced on the version read, with a LoginSeq above the
// previous login's, so that no write of the previous login can replace it.
func (o *OAuth) Exchange(ctx context.Context, code, redirectURI string) error {
	if code == "" {
		return errors.New("no authorization code")
	}
	o.mu.Lock()
	if o.dirty {
		if err := o.saveLocked(); err != nil {
			o.mu.Unlock()
			return fmt.Errorf("oauth: the login was not completed (the current tokens cannot be saved yet): %w", err)
		}
	}
	release := func() {}
	if o.shared != nil {
		unlock, err := o.lockFleet(ctx)
		if err != nil {
			o.mu.Unlock()
			return fmt.Errorf("oauth: the login was not completed: cannot take the fleet's refresh lock (log in again): %w", err)
		}
		release = unlock
	}
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
		release()
		o.mu.Unlock()
		return err
	}
	if o.shared != nil {
		// The previous login's refresh token, as the fleet has it now
		// (another replica may have rotated it): that is the one to revoke.
		sctx, cancel := context.WithTimeout(ctx, sharedTimeout)
		_ = o.syncLocked(sctx)
		cancel()
	}
	revoke := []string{o.st.RefreshToken}
	o.overwritten = nil
	o.logins.Add(1)
	o.setLocked(storeData{Version: storeVersion,
		AccessToken: tr.AccessToken, AccessExpiry: tr.expiry(issued), AccessObtained: issued,
		RefreshToken: tr.RefreshToken, RefreshObtained: issued,
		// Above the previous login's, and above the version read: a
		// logout in between leaves no login, but the version moved on.
		LoginSeq: max(o.st.LoginSeq, o.ver) + 1})
	serr := o.saveLocked()
	revoke = append(revoke, o.overwritten...)
	o.overwritten = nil
	replaced := o.st.RefreshToken != tr.RefreshToken
	if replaced {
		// A newer login was saved meanwhile (possible only if this
		// replica's lease lapsed): the fleet follows it, and this one,
		// which nobody else holds, is revoked with the previous one.
		revoke = append(revoke, tr.RefreshToken)
	}
	o.changed = false // the OnLogin functions run below in any case
	if o.dirty && o.held == nil {
		// Not saved yet: keep the lock until it is (as a refresh does),
		// so that no replica refreshes the previous login meanwhile.
		o.held = release
	} else {
		release()
	}
	o.mu.Unlock()

	if replaced {
		o.log.Warn().Msg("oauth: logged in, but another login replaced the fleet's meanwhile; the fleet serves that one")
	} else {
		o.log.Info().Msg("oauth: logged in")
	}
	o.loggedIn() // the cache drops tokens of the previous login
	done := map[string]bool{}
	for _, rt := range revoke {
		if rt == "" || done[rt] || (rt == tr.RefreshToken && !replaced) {
			continue
		}
		done[rt] = true
		o.revoke(ctx, rt, "the previous login's refresh token")
	}
	return serr
}

// SetUser records who is logged in (learned from /2.0/users/me after the
// login) in the store.
func (o *OAuth) SetUser(u StoredUser) error {
	o.mu.Lock()
	defer o.unlockMu()
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
	defer o.unlockMu()
	if o.dirty {
		_ = o.saveLocked()
	}
	where := "the token store (BOXPROXY_TOKEN_STORE)"
	if o.shared != nil {
		// Under the refresh lock: no replica rotates the refresh token
		// between reading it here and revoking it.
		where = "the fleet's login in Redis"
		unlock, err := o.lockFleet(ctx)
		if err != nil {
			return fmt.Errorf("cannot take the fleet's refresh lock, so nothing was revoked (run logout again): %w", err)
		}
		defer unlock()
	}
	o.adoptLatestLocked(ctx)
	// Revoking the refresh token ends the access tokens issued with it too;
	// the access token is revoked as well in case Box does not.
	if rt := o.st.RefreshToken; rt != "" {
		if err := o.ep.Revoke(ctx, rt); err != nil {
			return fmt.Errorf("cannot revoke the refresh token at Box, so %s was kept (run logout again): %w", where, err)
		}
	}
	if at := o.st.AccessToken; at != "" && o.ep.now().Before(o.st.AccessExpiry) {
		if err := o.ep.Revoke(ctx, at); err != nil {
			o.log.Warn().Err(err).Msg("oauth: cannot revoke the access token at Box; it expires within the hour")
		}
	}
	o.logins.Add(1)
	o.setLocked(storeData{Version: storeVersion})
	o.dirty = false
	if o.shared != nil {
		ctx, cancel := context.WithTimeout(ctx, sharedTimeout)
		defer cancel()
		if _, err := o.shared.Save(ctx, nil, -1); err != nil {
			return fmt.Errorf("the tokens were revoked at Box, but the fleet's login cannot be removed from Redis: %w", err)
		}
	} else if err := removeStore(o.path); err != nil {
		return fmt.Errorf("BOXPROXY_TOKEN_STORE: %v", err)
	}
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

// LoginEpoch counts the logins this process has served (see LoginEpocher).
func (o *OAuth) LoginEpoch() uint64 { return o.logins.Load() }

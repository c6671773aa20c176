// Package fakebox is a local stand-in for Box: its API host, upload host,
// download host and token endpoint, strict as Box about token requests.
// End-to-end tests, benchmarks and the `boxproxy demo` command run boxproxy
// in front of it instead of api.box.com.
package fakebox

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults used when the matching Config field is zero.
const (
	DefaultServiceAccountID = "1000"
	DefaultTokenTTL         = time.Hour
	DefaultPartSize         = 8 << 20

	// MaxRetained is the largest uploaded content kept in memory. Larger
	// uploads are hashed and counted but not kept, unless they consist of
	// the deterministic pattern (see PatternReader), which can be
	// regenerated for downloads.
	MaxRetained = 16 << 20

	// TokenAudience is the only aud a JWT assertion may carry.
	TokenAudience = "https://api.box.com/oauth2/token"
	// GrantJWT is the grant_type of a JWT bearer assertion.
	GrantJWT = "urn:ietf:params:oauth:grant-type:jwt-bearer"

	refreshTTL  = 60 * 24 * time.Hour
	codeTTL     = 30 * time.Second
	downloadTTL = 15 * time.Minute
	sessionTTL  = 7 * 24 * time.Hour
)

// User is a managed user or app user of the fake enterprise.
type User struct {
	ID, Name, Login string // ID is a digit string
	Admin           bool   // may use As-User
}

// Config describes the fake enterprise and its one Box app.
type Config struct {
	ClientID, ClientSecret string
	// EnterpriseID is the enterprise's ID (digits); an enterprise subject
	// must name exactly this ID.
	EnterpriseID string
	// ServiceAccountID is the Service Account user's ID (default "1000");
	// enterprise tokens act as this user.
	ServiceAccountID string
	// Users are the known managed users and app users.
	Users []User
	// PublicKeys maps JWT key IDs (kid) to the app's public keys.
	PublicKeys map[string]*rsa.PublicKey
	// AppAuthorized nil means true; false makes every grant fail with
	// unauthorized_client.
	AppAuthorized *bool
	// TokenTTL is the lifetime of access tokens (default 1h). expires_in
	// is its whole seconds, at least 1.
	TokenTTL time.Duration
	// ClockSkew sets Box's clock to time.Now()+ClockSkew; it is used for
	// every expiry check and every response's Date header.
	ClockSkew time.Duration
	// OAuthUserID is the user who "logs in" on the authorize page
	// (default: the first user, else the service account).
	OAuthUserID string
	// RedirectURIs are the allowed OAuth redirect URIs; empty allows any.
	RedirectURIs []string
	// PartSize is the upload-session part size (default 8 MiB).
	PartSize int64
	// MaxRecords caps how many Requests and TokenRequests are kept
	// (default 100000; negative: no cap). Later ones are not recorded.
	MaxRecords int
	// MaxRetainedTotal caps the bytes of uploaded content kept in memory
	// across all files (default 256 MiB); the oldest content is dropped
	// first. Pattern files (see PatternReader) cost nothing.
	MaxRetainedTotal int64
	// ReadBodyBeforeAuth makes the API and upload hosts read a request's
	// whole body before they check its token, as a server that ignores
	// Expect: 100-continue would (Go's server, and by default this one,
	// check the token first and refuse before the body is sent).
	ReadBodyBeforeAuth bool
	// TLS serves every host over HTTPS with a certificate from a CA made at
	// start (see CAFile), offering HTTP/2 and HTTP/1.1 as Box's front ends
	// do. Without it the hosts speak plain HTTP/1.1.
	TLS bool
	// Logf, when set, receives one line per notable event. It never
	// receives tokens or secrets.
	Logf func(format string, args ...any)
}

// TokenRequest records one call of the token endpoint.
type TokenRequest struct {
	Time                   time.Time // local clock
	GrantType              string
	SubjectType, SubjectID string // as asked for (enterprise|user and ID), when known
	ClientID               string
	OK                     bool
	Error, Description     string // the error and error_description sent, or "fault" and the fault's name
}

// Request records one request received by the API, upload or download host.
type Request struct {
	Host     string // "api", "upload" or "download"
	Method   string
	Proto    string // HTTP/1.1 or HTTP/2.0
	Path     string // EscapedPath
	RawQuery string
	Header   http.Header
	BodyLen  int64  // bytes of request body received
	BodySHA1 string // hex SHA-1 of the request body received
	UserID   string // acting user (after As-User); empty when unauthenticated
	Token    string // the access token presented, if any
	Status   int    // status answered (0 when the connection was dropped)
}

// File describes a stored file.
type File struct {
	ID, Name, ParentID, OwnerID string
	Size                        int64
	SHA1                        string // hex
	Retained                    bool   // content can be downloaded
}

// Fault is a way for the token endpoint to misbehave.
type Fault int

// Token endpoint faults.
const (
	FaultNone          Fault = iota
	FaultDown                // hijack and close the connection without answering
	FaultHang                // never answer until the client gives up or Close
	FaultHTML                // 200 text/html page
	FaultTruncated           // 200 application/json with cut-off JSON
	FaultNoAccessToken       // 200 {"expires_in":3600}
	Fault500                 // 500 with an HTML page
	Fault503                 // 503 with Retry-After: 1
)

func (f Fault) String() string {
	switch f {
	case FaultNone:
		return "none"
	case FaultDown:
		return "down"
	case FaultHang:
		return "hang"
	case FaultHTML:
		return "html"
	case FaultTruncated:
		return "truncated"
	case FaultNoAccessToken:
		return "no_access_token"
	case Fault500:
		return "500"
	case Fault503:
		return "503"
	}
	return fmt.Sprintf("fault(%d)", int(f))
}

// Injected is an answer that Inject substitutes for the real one.
type Injected struct {
	Status int // default 200
	Header http.Header
	Body   string // Content-Type defaults to application/json when Body is set
	Reset  bool   // hijack the connection and close it without answering
}

// Unauthorized is an Injected answer identical to Box's answer to an
// invalid access token.
func Unauthorized() Injected {
	h := http.Header{}
	h.Set("WWW-Authenticate", wwwAuthenticate)
	return Injected{Status: http.StatusUnauthorized, Header: h}
}

type accessToken struct {
	subjectType, subjectID string
	userID                 string
	grant                  string
	expires                time.Time // Box clock
	revoked, expired       bool      // by RevokeAll/RevokeToken, by ExpireAll
}

type refreshToken struct {
	userID  string
	expires time.Time
	access  []string // access tokens issued with it
}

type authCode struct {
	clientID, redirectURI string
	userID                string
	expires               time.Time
}

type injection struct {
	prefix string
	left   int
	resp   Injected
}

type file struct {
	id, name, parent, owner string
	size                    int64
	sha1                    string
	data                    []byte
	pattern                 bool
	retained                bool
	etag                    int
	created, modified       time.Time
}

type download struct {
	fileID  string
	expires time.Time
}

// Box is a running fake Box. All methods are safe for concurrent use.
type Box struct {
	cfg                  Config
	apiURL, upURL, dlURL string
	servers              []*http.Server
	tls                  *tlsIdentity
	closing              chan struct{}
	closeOnce            sync.Once
	active               atomic.Int64
	tokenDelay           atomic.Int64 // time.Duration
	answerDelay          atomic.Int64 // time.Duration

	mu         sync.Mutex
	skew       time.Duration
	ttl        time.Duration
	users      map[string]User
	tokens     map[string]*accessToken
	refresh    map[string]*refreshToken
	codes      map[string]*authCode
	jtis       map[string]struct{}
	issued     []string
	tokenReqs  []TokenRequest
	reqs       []Request
	recGen     int
	noRecord   bool
	revoked    []string
	fault      Fault
	faultLeft  int // <0: until changed
	injections []*injection
	denyLogin  bool
	files      map[string]*file
	fileSeq    int64
	retained   int64    // bytes of file content held
	keptOrder  []string // file IDs in the order their content was kept
	downloads  map[string]download
	sessions   map[string]*session
}

// Start validates cfg and starts the three hosts on 127.0.0.1 ports.
func Start(cfg Config) (*Box, error) {
	if cfg.ClientID == "" || cfg.ClientSecret == "" {
		return nil, errors.New("fakebox: ClientID and ClientSecret are required")
	}
	if cfg.EnterpriseID != "" && !isDigits(cfg.EnterpriseID) {
		return nil, errors.New("fakebox: EnterpriseID must be digits")
	}
	if cfg.ServiceAccountID == "" {
		cfg.ServiceAccountID = DefaultServiceAccountID
	}
	if !isDigits(cfg.ServiceAccountID) {
		return nil, errors.New("fakebox: ServiceAccountID must be digits")
	}
	if cfg.TokenTTL <= 0 {
		cfg.TokenTTL = DefaultTokenTTL
	}
	if cfg.PartSize <= 0 {
		cfg.PartSize = DefaultPartSize
	}
	if cfg.MaxRecords == 0 {
		cfg.MaxRecords = 100000
	}
	if cfg.MaxRetainedTotal <= 0 {
		cfg.MaxRetainedTotal = 256 << 20
	}
	users := make(map[string]User, len(cfg.Users))
	for _, u := range cfg.Users {
		if !isDigits(u.ID) {
			return nil, fmt.Errorf("fakebox: user ID %q must be digits", u.ID)
		}
		if _, dup := users[u.ID]; dup || u.ID == cfg.ServiceAccountID {
			return nil, fmt.Errorf("fakebox: user ID %q is used twice", u.ID)
		}
		if u.Name == "" {
			u.Name = "User " + u.ID
		}
		if u.Login == "" {
			u.Login = "user" + u.ID + "@example.com"
		}
		users[u.ID] = u
	}
	if cfg.OAuthUserID == "" {
		if len(cfg.Users) > 0 {
			cfg.OAuthUserID = cfg.Users[0].ID
		} else {
			cfg.OAuthUserID = cfg.ServiceAccountID
		}
	}
	if _, ok := users[cfg.OAuthUserID]; !ok && cfg.OAuthUserID != cfg.ServiceAccountID {
		return nil, fmt.Errorf("fakebox: OAuthUserID %q is not a known user", cfg.OAuthUserID)
	}
	cfg.Users = slices.Clone(cfg.Users)
	cfg.RedirectURIs = slices.Clone(cfg.RedirectURIs)

	b := &Box{
		cfg:       cfg,
		closing:   make(chan struct{}),
		skew:      cfg.ClockSkew,
		ttl:       cfg.TokenTTL,
		users:     users,
		tokens:    map[string]*accessToken{},
		refresh:   map[string]*refreshToken{},
		codes:     map[string]*authCode{},
		jtis:      map[string]struct{}{},
		faultLeft: -1,
		files:     map[string]*file{},
		fileSeq:   100000000000,
		downloads: map[string]download{},
		sessions:  map[string]*session{},
	}

	apiMux := http.NewServeMux()
	apiMux.HandleFunc("/oauth2/token", b.handleToken)
	apiMux.HandleFunc("/oauth2/revoke", b.handleRevoke)
	apiMux.HandleFunc("/api/oauth2/authorize", b.handleAuthorize)
	apiMux.Handle("/", b.boxHost("api", "/2.0/", b.routeAPI))

	handlers := []http.Handler{
		b.guard(apiMux),
		b.guard(b.boxHost("upload", "/api/2.0/", b.routeUpload)),
		b.guard(http.HandlerFunc(b.handleDownload)),
	}
	scheme := "http://"
	if cfg.TLS {
		id, err := processIdentity()
		if err != nil {
			return nil, fmt.Errorf("fakebox: TLS: %w", err)
		}
		b.tls, scheme = id, "https://"
	}
	var urls []string
	var errLog *log.Logger
	if cfg.Logf != nil {
		errLog = log.New(logfWriter(cfg.Logf), "fakebox: ", 0)
	} else {
		errLog = log.New(io.Discard, "", 0)
	}
	for _, h := range handlers {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Close()
			return nil, fmt.Errorf("fakebox: listen: %w", err)
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 30 * time.Second, ErrorLog: errLog,
			ConnContext: func(ctx context.Context, c net.Conn) context.Context { return context.WithValue(ctx, connKey{}, c) }}
		b.servers = append(b.servers, srv)
		urls = append(urls, scheme+l.Addr().String())
		if b.tls != nil {
			srv.TLSConfig = b.tls.serverConfig()
			go func() { _ = srv.ServeTLS(l, "", "") }()
		} else {
			go func() { _ = srv.Serve(l) }()
		}
	}
	b.apiURL, b.upURL, b.dlURL = urls[0], urls[1], urls[2]
	b.logf("started: api %s upload %s download %s", b.apiURL, b.upURL, b.dlURL)
	return b, nil
}

// connKey finds a request's connection in its context.
type connKey struct{}

type logfWriter func(string, ...any)

func (f logfWriter) Write(p []byte) (int, error) {
	f("%s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (b *Box) logf(format string, args ...any) {
	if b.cfg.Logf != nil {
		b.cfg.Logf("fakebox: "+format, args...)
	}
}

// APIURL is the api.box.com stand-in: /2.0/…, /oauth2/token,
// /oauth2/revoke and /api/oauth2/authorize.
func (b *Box) APIURL() string { return b.apiURL }

// UploadURL is the upload.box.com stand-in: /api/2.0/….
func (b *Box) UploadURL() string { return b.upURL }

// DownloadURL is the dl.boxcloud.com stand-in.
func (b *Box) DownloadURL() string { return b.dlURL }

// TokenURL is the token endpoint.
func (b *Box) TokenURL() string { return b.apiURL + "/oauth2/token" }

// RevokeURL is the revocation endpoint.
func (b *Box) RevokeURL() string { return b.apiURL + "/oauth2/revoke" }

// AuthorizeURL is the OAuth 2.0 authorization page.
func (b *Box) AuthorizeURL() string { return b.apiURL + "/api/oauth2/authorize" }

// Config returns the configuration in effect, defaults filled in.
func (b *Box) Config() Config { return b.cfg }

// ServiceAccount returns the Service Account user.
func (b *Box) ServiceAccount() User {
	id := b.cfg.ServiceAccountID
	return User{ID: id, Name: "Service Account", Login: "AutomationUser_" + id + "@boxdevedition.com"}
}

// Close shuts all three hosts, unblocks hanging handlers and waits a
// little for them to return.
func (b *Box) Close() {
	b.closeOnce.Do(func() {
		close(b.closing)
		for _, s := range b.servers {
			_ = s.Close()
		}
		deadline := time.Now().Add(5 * time.Second)
		for b.active.Load() > 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		b.mu.Lock()
		sessions := b.sessions
		b.sessions = map[string]*session{}
		b.mu.Unlock()
		for _, s := range sessions {
			s.discard()
		}
		b.logf("closed")
	})
}

// now is Box's clock.
func (b *Box) now() time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	return time.Now().Add(b.skew)
}

// Now returns Box's clock: time.Now() plus the clock skew.
func (b *Box) Now() time.Time { return b.now() }

// SetClockSkew moves Box's clock to time.Now()+d.
func (b *Box) SetClockSkew(d time.Duration) {
	b.mu.Lock()
	b.skew = d
	b.mu.Unlock()
}

// SetTokenDelay makes the token endpoint wait d before it handles a request
// (d <= 0: no wait). A client that hangs up during the wait gets nothing
// issued: nothing rotates.
func (b *Box) SetTokenDelay(d time.Duration) { b.tokenDelay.Store(int64(d)) }

// SetTokenAnswerDelay makes the token endpoint hold its answer for d after
// it has handled a request (d <= 0: no wait): tokens are issued and a
// refresh token rotated at once, as Box does, and the answer arrives d later.
// A client that hangs up meanwhile has lost the new tokens, and the old
// refresh token is dead all the same. It is how tests put a refresh "at
// Box" for as long as they need.
func (b *Box) SetTokenAnswerDelay(d time.Duration) { b.answerDelay.Store(int64(d)) }

// SetTokenTTL sets the lifetime of access tokens issued from now on
// (d <= 0 restores the default of 1h).
func (b *Box) SetTokenTTL(d time.Duration) {
	if d <= 0 {
		d = DefaultTokenTTL
	}
	b.mu.Lock()
	b.ttl = d
	b.mu.Unlock()
}

// SetTokenFault makes every token request misbehave as f until changed.
func (b *Box) SetTokenFault(f Fault) { b.SetTokenFaultN(f, -1) }

// SetTokenFaultN makes the next n token requests misbehave as f; after
// them the endpoint works again. n < 0 means until changed.
func (b *Box) SetTokenFaultN(f Fault, n int) {
	b.mu.Lock()
	b.fault, b.faultLeft = f, n
	if n == 0 {
		b.fault = FaultNone
	}
	b.mu.Unlock()
}

// SetDenyLogin makes the authorize page report that the user denied access.
func (b *Box) SetDenyLogin(deny bool) {
	b.mu.Lock()
	b.denyLogin = deny
	b.mu.Unlock()
}

// Inject makes the next `times` authenticated requests (API or upload
// host) whose path starts with pathPrefix get r instead of their answer.
// Injections are matched in the order they were added.
func (b *Box) Inject(pathPrefix string, times int, r Injected) {
	if times <= 0 {
		return
	}
	r.Header = r.Header.Clone()
	b.mu.Lock()
	b.injections = append(b.injections, &injection{prefix: pathPrefix, left: times, resp: r})
	b.mu.Unlock()
}

func (b *Box) takeInjection(path, escaped string) (Injected, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, in := range b.injections {
		if strings.HasPrefix(path, in.prefix) || strings.HasPrefix(escaped, in.prefix) {
			in.left--
			if in.left <= 0 {
				b.injections = slices.Delete(b.injections, i, i+1)
			}
			return in.resp, true
		}
	}
	return Injected{}, false
}

// TokenRequests returns every token-endpoint call since the last
// ResetRecords, in order.
func (b *Box) TokenRequests() []TokenRequest {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.tokenReqs)
}

// CountTokenRequests counts the token requests that succeeded (ok) or failed.
func (b *Box) CountTokenRequests(ok bool) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, t := range b.tokenReqs {
		if t.OK == ok {
			n++
		}
	}
	return n
}

// CountTokenRequestsFor counts the successful token requests for one
// subject (subjectType "enterprise" or "user").
func (b *Box) CountTokenRequestsFor(subjectType, subjectID string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, t := range b.tokenReqs {
		if t.OK && t.SubjectType == subjectType && t.SubjectID == subjectID {
			n++
		}
	}
	return n
}

// Requests returns every request received by the API, upload and download
// hosts since the last ResetRecords, in order of arrival (401s included;
// the token, revoke and authorize endpoints are not included).
func (b *Box) Requests() []Request {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := slices.Clone(b.reqs)
	for i := range out {
		out[i].Header = out[i].Header.Clone()
	}
	return out
}

// RevokedTokens returns the tokens named in revoke calls since the last
// ResetRecords.
func (b *Box) RevokedTokens() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.revoked)
}

// SetRecording turns the recording of Requests and TokenRequests on (the
// default) or off, e.g. for long benchmarks.
func (b *Box) SetRecording(on bool) {
	b.mu.Lock()
	b.noRecord = !on
	b.mu.Unlock()
}

// canRecordLocked reports whether one more record may be kept in list.
func (b *Box) canRecordLocked(n int) bool {
	return !b.noRecord && (b.cfg.MaxRecords < 0 || n < b.cfg.MaxRecords)
}

// ResetRecords forgets recorded token requests, requests and revocations.
func (b *Box) ResetRecords() {
	b.mu.Lock()
	b.tokenReqs, b.reqs, b.revoked = nil, nil, nil
	b.recGen++
	b.mu.Unlock()
}

// IssuedTokens returns every access and refresh token ever issued.
func (b *Box) IssuedTokens() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.issued)
}

// RevokeAll invalidates every access token issued so far; refresh tokens
// stay valid.
func (b *Box) RevokeAll() {
	b.mu.Lock()
	for _, t := range b.tokens {
		t.revoked = true
	}
	b.mu.Unlock()
}

// ExpireAll makes every access token issued so far expire now; refresh
// tokens stay valid.
func (b *Box) ExpireAll() {
	b.mu.Lock()
	for _, t := range b.tokens {
		t.expired = true
	}
	b.mu.Unlock()
}

// RevokeToken invalidates one access token (or one refresh token and the
// access tokens issued with it). It reports whether the token was known.
func (b *Box) RevokeToken(tok string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.revokeLocked(tok)
}

func (b *Box) revokeLocked(tok string) bool {
	if t, ok := b.tokens[tok]; ok {
		t.revoked = true
		return true
	}
	if rt, ok := b.refresh[tok]; ok {
		delete(b.refresh, tok)
		for _, a := range rt.access {
			if t, ok := b.tokens[a]; ok {
				t.revoked = true
			}
		}
		return true
	}
	return false
}

// IssueToken issues an access token for a user (or the service account),
// as a developer token would be; it expires after the token TTL.
func (b *Box) IssueToken(userID string) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.users[userID]; !ok && userID != b.cfg.ServiceAccountID {
		return "", fmt.Errorf("fakebox: unknown user %q", userID)
	}
	st := "user"
	if userID == b.cfg.ServiceAccountID {
		st = "enterprise"
	}
	tok, _ := b.issueLocked(st, userID, userID, "developer_token", false)
	return tok, nil
}

// ActiveRequests is the number of handlers (any host) running right now.
func (b *Box) ActiveRequests() int { return int(b.active.Load()) }

// AddFile stores a file in folder "0" owned by the service account and
// returns its ID.
func (b *Box) AddFile(name string, content []byte) string {
	sink := newSink()
	_, _ = sink.Write(content)
	b.mu.Lock()
	defer b.mu.Unlock()
	f := b.newFileLocked(name, "0", b.cfg.ServiceAccountID)
	b.setContentLocked(f, sink)
	return f.id
}

// Files returns every stored file, in ID order.
func (b *Box) Files() []File {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]File, 0, len(b.files))
	for _, f := range b.files {
		out = append(out, f.export())
	}
	slices.SortFunc(out, func(x, y File) int { return strings.Compare(x.ID, y.ID) })
	return out
}

// FileContent returns a stored file's content when it was retained in
// memory (pattern files are not materialised).
func (b *Box) FileContent(id string) ([]byte, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	f, ok := b.files[id]
	if !ok || f.data == nil && !(f.retained && f.size == 0) {
		return nil, false
	}
	return slices.Clone(f.data), true
}

func (f *file) export() File {
	return File{ID: f.id, Name: f.name, ParentID: f.parent, OwnerID: f.owner, Size: f.size, SHA1: f.sha1, Retained: f.retained}
}

// setContentLocked gives f the sink's content and keeps the memory held
// by all files under MaxRetainedTotal by dropping the oldest content.
func (b *Box) setContentLocked(f *file, s *contentSink) {
	old := int64(len(f.data))
	s.store(f, time.Now().Add(b.skew))
	b.retained += int64(len(f.data)) - old
	if len(f.data) > 0 {
		b.keptOrder = append(b.keptOrder, f.id)
	}
	keepF := false
	for b.retained > b.cfg.MaxRetainedTotal && len(b.keptOrder) > 0 {
		id := b.keptOrder[0]
		b.keptOrder = b.keptOrder[1:]
		g := b.files[id]
		if g == f {
			keepF = true
			continue
		}
		if g == nil || len(g.data) == 0 {
			continue
		}
		b.retained -= int64(len(g.data))
		g.data, g.retained = nil, g.pattern
		b.logf("dropped the content of file %s to stay under MaxRetainedTotal", g.id)
	}
	if keepF && len(f.data) > 0 {
		b.keptOrder = append(b.keptOrder, f.id)
	}
}

func (b *Box) newFileLocked(name, parent, owner string) *file {
	b.fileSeq++
	now := time.Now().Add(b.skew)
	f := &file{id: fmt.Sprint(b.fileSeq), name: name, parent: parent, owner: owner, created: now, modified: now}
	b.files[f.id] = f
	return f
}

func (b *Box) appAuthorized() bool {
	return b.cfg.AppAuthorized == nil || *b.cfg.AppAuthorized
}

// guard counts active handlers, sets Box's Date header and turns a panic
// into a 500.
func (b *Box) guard(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.active.Add(1)
		defer b.active.Add(-1)
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				b.logf("panic serving %s %s: %v", r.Method, r.URL.Path, v)
				writeBoxError(w, http.StatusInternalServerError, "internal_server_error", "Internal Server Error")
			}
		}()
		w.Header().Set("Date", b.now().UTC().Format(http.TimeFormat))
		h.ServeHTTP(w, r)
	})
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

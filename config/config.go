// Package config reads boxproxy's configuration from BOXPROXY_* environment
// variables (and their _FILE forms), checks all of it up front, and returns one
// error that says what to fix.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/boxproxy/boxproxy/internal/safefile"
)

// Prefix is the prefix of every variable.
const Prefix = "BOXPROXY_"

// MaxCAFileSize bounds BOXPROXY_UPSTREAM_CA_FILE (a full bundle of public
// roots is about 200 KiB); every other file a variable names (secrets, the
// JWT app configuration and key) is at most safefile.MaxSize (1 MiB).
const MaxCAFileSize = 16 << 20

// Auth methods.
const (
	MethodCCG   = "ccg"
	MethodJWT   = "jwt"
	MethodOAuth = "oauth"
	MethodToken = "token"
)

// As-User modes.
const (
	AsUserToken  = "token"
	AsUserHeader = "header"
)

// Config is every setting. The help tag is what `boxproxy --help` prints (with
// envDefault, or helpDefault for defaults that Load computes); the secret tag
// marks variables that have a _FILE form and never get printed.
type Config struct {
	Listen          string        `env:"LISTEN" envDefault:"127.0.0.1:8080" help:"address to serve on; a non-loopback address needs BOXPROXY_INBOUND_KEY"`
	Auth            string        `env:"AUTH" helpDefault:"inferred" help:"ccg, jwt, oauth or token; inferred from the credentials that are set"`
	ClientID        string        `env:"CLIENT_ID" secret:"file" what:"the client ID" help:"the Box app's client ID (ccg, jwt, oauth)"`
	ClientSecret    string        `env:"CLIENT_SECRET" secret:"true" what:"the client secret" help:"the Box app's client secret (ccg, jwt, oauth)"`
	EnterpriseID    string        `env:"ENTERPRISE_ID" help:"default subject: the enterprise's Service Account (ccg, jwt)"`
	UserID          string        `env:"USER_ID" help:"default subject: this user instead of the Service Account (ccg, jwt)"`
	JWTConfig       string        `env:"JWT_CONFIG" help:"path of the JSON app configuration from the Box Developer Console, or its JSON text (jwt); see the README for how it combines with the variables"`
	JWTKeyID        string        `env:"JWT_KEY_ID" help:"public key ID, when the key is given without the JSON file (jwt)"`
	JWTPrivateKey   string        `env:"JWT_PRIVATE_KEY" help:"path of the PEM private key, or the PEM text itself, when given without the JSON file (jwt)"`
	JWTPassphrase   string        `env:"JWT_PASSPHRASE" secret:"true" what:"the private key's passphrase" help:"passphrase of an encrypted private key (jwt)"`
	DeveloperToken  string        `env:"DEVELOPER_TOKEN" secret:"true" what:"the developer token" help:"a fixed developer token (token method); it cannot be refreshed"`
	TokenStore      string        `env:"TOKEN_STORE" envDefault:"boxproxy-tokens.json" help:"file where the oauth method keeps its tokens between runs (mode 0600)"`
	PublicURL       string        `env:"PUBLIC_URL" helpDefault:"http://localhost:<port of BOXPROXY_LISTEN>" help:"how clients and browsers reach the proxy; OAuth redirect URI is this + /auth/callback"`
	AsUser          string        `env:"AS_USER" helpDefault:"token for ccg/jwt, else header" help:"token (As-User picks a token minted for that user) or header (As-User is passed on beside the app's token)"`
	AllowedUsers    []string      `env:"ALLOWED_USERS" envSeparator:"," helpDefault:"all" help:"comma-separated user IDs that As-User may name"`
	TokenCacheSize  int           `env:"TOKEN_CACHE_SIZE" envDefault:"10000" help:"how many subjects' tokens the cache keeps (about 1 KiB each)"`
	InboundKey      string        `env:"INBOUND_KEY" secret:"true" what:"the inbound key" help:"when set, every request must carry Proxy-Authorization: Bearer <key>"`
	APIURL          string        `env:"API_URL" envDefault:"https://api.box.com" help:"upstream for /2.0/..."`
	UploadURL       string        `env:"UPLOAD_URL" envDefault:"https://upload.box.com" help:"upstream for /api/2.0/... (uploads)"`
	TokenURL        string        `env:"TOKEN_URL" envDefault:"https://api.box.com/oauth2/token" help:"Box's token endpoint"`
	AuthorizeURL    string        `env:"AUTHORIZE_URL" envDefault:"https://account.box.com/api/oauth2/authorize" help:"Box's OAuth authorization page"`
	TokenTimeout    time.Duration `env:"TOKEN_TIMEOUT" envDefault:"10s" help:"longest wait for one answer of the token endpoint"`
	RetryBodyLimit  ByteSize      `env:"RETRY_BODY_LIMIT" envDefault:"10MiB" help:"largest request body kept in memory so it can be sent again after a 401"`
	UpstreamRetries int           `env:"UPSTREAM_RETRIES" envDefault:"0" help:"extra attempts for 429/5xx/network errors on idempotent methods, honouring Retry-After"`
	ShutdownTimeout time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"30s" help:"how long in-flight requests may finish after SIGTERM"`
	LoginTimeout    time.Duration `env:"LOGIN_TIMEOUT" envDefault:"10m" help:"how long boxproxy login waits for the browser flow (oauth)"`
	HeaderTimeout   time.Duration `env:"HEADER_TIMEOUT" envDefault:"10s" help:"longest time a client may take to send a request's headers; slower clients are disconnected"`
	QuitEndpoint    bool          `env:"QUIT_ENDPOINT" envDefault:"false" help:"serve POST /quitquitquit (ends a sidecar when a Job is done)"`
	LogLevel        string        `env:"LOG_LEVEL" envDefault:"info" help:"debug, info, warn or error"`
	LogFormat       string        `env:"LOG_FORMAT" envDefault:"json" help:"json or console"`
	UpstreamTimeout time.Duration `env:"UPSTREAM_TIMEOUT" envDefault:"5m" help:"longest wait for Box's answer head once the request is sent, and longest Box may take none of a request body being sent"`
	UpstreamCAFile  string        `env:"UPSTREAM_CA_FILE" helpDefault:"system roots" help:"PEM file of CA certificates trusted for Box's TLS (for egress proxies that re-sign TLS); added to the system roots"`
	AdminListen     string        `env:"ADMIN_LISTEN" helpDefault:"probes on BOXPROXY_LISTEN" help:"address serving /healthz, /readyz and /metrics without Host check or inbound key; forwards nothing"`
	RedisURL        string        `env:"REDIS_URL" secret:"true" what:"the Redis URL" helpDefault:"each process alone" help:"redis:// or rediss:// URL: replicas of one app share their token cache and their OAuth login"`
	StoreKey        string        `env:"STORE_KEY" secret:"true" what:"the store key" helpDefault:"derived from the client secret" help:"at least 32 characters keying the encryption of every stored token (Redis and BOXPROXY_TOKEN_STORE)"`
	OAuthKeepalive  time.Duration `env:"OAUTH_KEEPALIVE" envDefault:"72h" help:"an idle oauth login is refreshed at least this often, so Box's 60-day refresh-token expiry never ends it"`

	// Derived by Load.
	Public, API, Upload *url.URL `env:"-"`
	// AuthReason says why Auth is what it is, for the start-up line.
	AuthReason string `env:"-"`
	// JWTKey is the jwt method's PEM private key, from BOXPROXY_JWT_PRIVATE_KEY
	// (a path or the PEM text) or from the JSON app configuration; JWTKeyVar
	// names where it came from, for errors about the key.
	JWTKey    []byte `env:"-"`
	JWTKeyVar string `env:"-"`
}

// ByteSize is a size such as 10MiB, 512KiB, 1GB or 1048576.
type ByteSize int64

// UnmarshalText implements encoding.TextUnmarshaler.
func (b *ByteSize) UnmarshalText(t []byte) error {
	s := strings.TrimSpace(string(t))
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return fmt.Errorf("%q is not a size (e.g. 10MiB, 512KiB, 1048576)", string(t))
	}
	*b = ByteSize(n * mult)
	return nil
}

// Load reads the configuration from environ (os.Environ() form) and checks
// all of it. Its error is an Errors listing every problem at once, each
// naming its variable and never its value. Unknown BOXPROXY_* variables are
// not its business: see Unknown.
func Load(environ []string) (*Config, error) { return LoadWith(environ, Options{}) }

// Options adjust LoadWith.
type Options struct {
	// CheckKey, when set, is asked whether the jwt method's private key opens
	// with its passphrase (config does no cryptography itself), so that a wrong
	// passphrase is listed with every other problem. Its error must not quote
	// the key or the passphrase.
	CheckKey func(pemKey []byte, passphrase string) error
}

// LoadWith is Load with options.
func LoadWith(environ []string, o Options) (*Config, error) {
	var ps problems
	ps.checkKey = o.CheckKey
	vars := expandFiles(environ, &ps)
	var c Config
	if err := env.ParseWithOptions(&c, env.Options{Prefix: Prefix, Environment: vars}); err != nil {
		envProblems(err, &ps)
	}
	c.check(&ps)
	if err := ps.err(); err != nil {
		return nil, err
	}
	return &c, nil
}

// expandFiles turns NAME_FILE=path into NAME=<file contents, without a final newline>.
func expandFiles(environ []string, ps *problems) map[string]string {
	vars := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, Prefix) {
			vars[k] = v
		}
	}
	t := reflect.TypeOf(Config{})
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Tag.Get("secret") == "" {
			continue
		}
		name := f.Tag.Get("env")
		path, ok := vars[Prefix+name+"_FILE"]
		if !ok {
			continue
		}
		what := "a file holding " + f.Tag.Get("what")
		if _, both := vars[Prefix+name]; both {
			ps.add(name+"_FILE", "%s%s is set too: set only one of them", Prefix, name)
			continue
		}
		data, err := safefile.Read(strings.TrimSpace(path), safefile.MaxSize)
		if err != nil {
			hint := valueHint(path)
			if hint == "" {
				hint = "; to give the value itself, set " + Prefix + name + " instead"
			}
			ps.add(name+"_FILE", "cannot read the file it names (%v): it takes the path of %s%s", err, what, hint)
			ps.mark(name)
			continue
		}
		v := strings.TrimRight(string(data), "\r\n")
		if v == "" {
			ps.add(name+"_FILE", "the file it names is empty: it must hold %s", f.Tag.Get("what"))
			ps.mark(name)
			continue
		}
		vars[Prefix+name] = v
	}
	return vars
}

// UnwrapPathError drops the path and operation of an *os.PathError, for
// messages that already name the file (or must not repeat it).
func UnwrapPathError(err error) error { return safefile.Unwrap(err) }

// envProblems turns the env library's errors into Problems, never with a variable's value.
func envProblems(err error, ps *problems) {
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		ps.add("", "%s", oneLine(err.Error()))
		return
	}
	for _, e := range agg.Errors {
		var pe env.ParseError
		if errors.As(e, &pe) {
			ps.add(envName(pe.Name), "%s", expected(pe.Type))
			continue
		}
		ps.add("", "%s", oneLine(e.Error()))
	}
}

// expected says what a variable of type t must look like (never echoing the value).
func expected(t reflect.Type) string {
	switch t {
	case reflect.TypeOf(ByteSize(0)):
		return "not a size (e.g. 10MiB, 512KiB, 1GB, 1048576)"
	case reflect.TypeOf(time.Duration(0)):
		return "not a duration (e.g. 30s, 2m, 500ms)"
	}
	switch t.Kind() {
	case reflect.Bool:
		return "not a boolean (true or false)"
	case reflect.Int, reflect.Int64:
		return "not a whole number"
	}
	return "cannot parse as " + t.String()
}

func envName(field string) string {
	if f, ok := reflect.TypeOf(Config{}).FieldByName(field); ok {
		return f.Tag.Get("env")
	}
	return field
}

// inferMethod picks the auth method from the credentials that are set, and says why.
func (c *Config) inferMethod() (method, reason string) {
	switch {
	case c.DeveloperToken != "":
		return MethodToken, Prefix + "DEVELOPER_TOKEN is set"
	case c.JWTConfig != "":
		return MethodJWT, Prefix + "JWT_CONFIG is set"
	case c.JWTPrivateKey != "":
		return MethodJWT, Prefix + "JWT_PRIVATE_KEY is set"
	case c.ClientID != "" && c.EnterpriseID != "":
		return MethodCCG, "client ID with " + Prefix + "ENTERPRISE_ID and no key"
	case c.ClientID != "" && c.UserID != "":
		return MethodCCG, "client ID with " + Prefix + "USER_ID and no key"
	case c.ClientID != "":
		return MethodOAuth, "client ID and secret without a subject (neither " + Prefix + "ENTERPRISE_ID nor " + Prefix + "USER_ID is set)"
	}
	return "", ""
}

func (c *Config) check(ps *problems) {
	// Which method?
	inferred, reason := c.inferMethod()
	switch {
	case ps.has("AUTH"):
	case c.Auth == "":
		c.Auth, c.AuthReason = inferred, reason
	default:
		c.AuthReason = "set by " + Prefix + "AUTH"
	}
	switch c.Auth {
	case "":
		ps.add("AUTH", "no Box credentials: set %[1]sCLIENT_ID + %[1]sCLIENT_SECRET + %[1]sENTERPRISE_ID (ccg), "+
			"%[1]sJWT_CONFIG (jwt), %[1]sCLIENT_ID + %[1]sCLIENT_SECRET (oauth) or %[1]sDEVELOPER_TOKEN (token); see boxproxy --help", Prefix)
	case MethodCCG:
		c.need(ps, "ccg", "CLIENT_ID", c.ClientID, "CLIENT_SECRET", c.ClientSecret)
		if c.EnterpriseID == "" && c.UserID == "" {
			ps.add("ENTERPRISE_ID", "the ccg method needs a subject: set it (the Service Account) or %sUSER_ID", Prefix)
		}
		c.forbid(ps, "ccg", "DEVELOPER_TOKEN", c.DeveloperToken, "JWT_CONFIG", c.JWTConfig, "JWT_PRIVATE_KEY", c.JWTPrivateKey)
	case MethodJWT:
		c.forbid(ps, "jwt", "DEVELOPER_TOKEN", c.DeveloperToken)
		c.resolveJWT(ps)
	case MethodOAuth:
		c.need(ps, "oauth", "CLIENT_ID", c.ClientID, "CLIENT_SECRET", c.ClientSecret)
		c.forbid(ps, "oauth", "ENTERPRISE_ID", c.EnterpriseID, "USER_ID", c.UserID, "DEVELOPER_TOKEN", c.DeveloperToken,
			"JWT_CONFIG", c.JWTConfig, "JWT_PRIVATE_KEY", c.JWTPrivateKey)
		if c.TokenStore == "" {
			ps.add("TOKEN_STORE", "the oauth method needs a file path here")
		}
	case MethodToken:
		c.need(ps, "token", "DEVELOPER_TOKEN", c.DeveloperToken)
		c.forbid(ps, "token", "CLIENT_SECRET", c.ClientSecret, "JWT_CONFIG", c.JWTConfig, "JWT_PRIVATE_KEY", c.JWTPrivateKey)
	default:
		ps.add("AUTH", "unknown method: use ccg, jwt, oauth or token")
	}

	switch c.AsUser {
	case "":
		c.AsUser = AsUserHeader
		if c.Auth == MethodCCG || c.Auth == MethodJWT {
			c.AsUser = AsUserToken
		}
	case AsUserHeader:
	case AsUserToken:
		if c.Auth == MethodOAuth || c.Auth == MethodToken {
			ps.add("AS_USER", "token needs ccg or jwt (the %s method cannot mint user tokens): use header", c.Auth)
		}
	default:
		ps.add("AS_USER", "use token or header")
	}
	for _, id := range []struct{ name, v string }{{"ENTERPRISE_ID", c.EnterpriseID}, {"USER_ID", c.UserID}} {
		if id.v != "" && !IsBoxID(id.v) {
			ps.add(id.name, "not a Box ID (digits only)")
		}
	}
	for i, u := range c.AllowedUsers {
		u = strings.TrimSpace(u)
		if !IsBoxID(u) {
			ps.add("ALLOWED_USERS", "item %d is not a Box user ID (comma-separated digits)", i+1)
			break
		}
		c.AllowedUsers[i] = u
	}

	// LISTEN first: the default PUBLIC_URL is made from its port.
	host, port, err := net.SplitHostPort(c.Listen)
	switch {
	case err != nil:
		ps.add("LISTEN", "not host:port (e.g. 127.0.0.1:8080)")
	case !isPort(port):
		ps.add("LISTEN", "the port must be a number from 0 to 65535")
	case !IsLoopback(host) && c.InboundKey == "":
		ps.add("LISTEN", "not a loopback address: anyone who reaches it would use your Box credentials; "+
			"set %sINBOUND_KEY (or _FILE), or listen on 127.0.0.1", Prefix)
	}
	c.API = parseURL(ps, "API_URL", c.APIURL)
	c.Upload = parseURL(ps, "UPLOAD_URL", c.UploadURL)
	if c.PublicURL == "" {
		if port == "" {
			port = "8080"
		}
		c.PublicURL = "http://localhost:" + port
	}
	c.Public = parseURL(ps, "PUBLIC_URL", c.PublicURL)
	parseURL(ps, "TOKEN_URL", c.TokenURL)
	// Box's authorization page takes parameters of its own (scope, …):
	// the login link keeps them, with boxproxy's own (AuthCodeURL).
	parseURLWith(ps, "AUTHORIZE_URL", c.AuthorizeURL, true)

	if c.InboundKey != "" && len(c.InboundKey) < 16 {
		ps.add("INBOUND_KEY", "too short: use at least 16 characters (e.g. openssl rand -hex 32)")
	}
	if c.TokenCacheSize < 1 {
		ps.add("TOKEN_CACHE_SIZE", "must be at least 1")
	}
	if c.UpstreamRetries < 0 || c.UpstreamRetries > 10 {
		ps.add("UPSTREAM_RETRIES", "must be between 0 and 10")
	}
	for _, d := range []struct {
		name   string
		v      time.Duration
		zeroOK bool
	}{
		{"TOKEN_TIMEOUT", c.TokenTimeout, false},
		{"SHUTDOWN_TIMEOUT", c.ShutdownTimeout, true},
		{"HEADER_TIMEOUT", c.HeaderTimeout, false},
		{"LOGIN_TIMEOUT", c.LoginTimeout, false},
		{"UPSTREAM_TIMEOUT", c.UpstreamTimeout, false},
		{"OAUTH_KEEPALIVE", c.OAuthKeepalive, false},
	} {
		switch {
		case d.zeroOK && d.v < 0:
			ps.add(d.name, "must not be negative")
		case !d.zeroOK && d.v <= 0:
			ps.add(d.name, "must be positive")
		}
	}
	if c.AdminListen != "" {
		if _, p, err := net.SplitHostPort(c.AdminListen); err != nil {
			ps.add("ADMIN_LISTEN", "not host:port (e.g. 0.0.0.0:9090)")
		} else if !isPort(p) {
			ps.add("ADMIN_LISTEN", "the port must be a number from 0 to 65535")
		}
	}
	if c.UpstreamCAFile != "" {
		if data, ok := readPath(ps, "UPSTREAM_CA_FILE", c.UpstreamCAFile, "a PEM file of CA certificates", MaxCAFileSize); ok && !bytes.Contains(data, []byte("-----BEGIN CERTIFICATE-----")) {
			ps.add("UPSTREAM_CA_FILE", "the file it names holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
		}
	}
	if c.RedisURL != "" {
		// Never echo the URL: it may hold a password.
		u, err := url.Parse(c.RedisURL)
		if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
			ps.add("REDIS_URL", "not a redis:// or rediss:// URL (redis://[user:password@]host:port/db)")
		}
	}
	if c.StoreKey != "" && len(c.StoreKey) < 32 {
		ps.add("STORE_KEY", "too short: use at least 32 characters (e.g. openssl rand -hex 32)")
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error", "trace":
	default:
		ps.add("LOG_LEVEL", "use debug, info, warn or error")
	}
	switch c.LogFormat {
	case "json", "console":
	default:
		ps.add("LOG_FORMAT", "use json or console")
	}
}

func isPort(p string) bool {
	_, err := strconv.ParseUint(p, 10, 16)
	return err == nil
}

func (c *Config) need(ps *problems, method string, kv ...string) {
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == "" {
			ps.add(kv[i], "the %s method needs it", method)
		}
	}
}

func (c *Config) forbid(ps *problems, method string, kv ...string) {
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] != "" {
			ps.add(kv[i], "set, but the %s method does not use it: contradictory settings, remove one (or set %sAUTH)", method, Prefix)
		}
	}
}

func parseURL(ps *problems, name, v string) *url.URL { return parseURLWith(ps, name, v, false) }

// parseURLWith parses an http(s) URL variable; query says whether it may
// carry a query (never a fragment).
func parseURLWith(ps *problems, name, v string, query bool) *url.URL {
	u, err := url.Parse(v)
	switch {
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		ps.add(name, "not an http(s) URL")
		return nil
	case u.User != nil:
		ps.add(name, "must not hold a user name or password")
		return nil
	case query && (u.Fragment != "" || strings.Contains(v, "#")):
		ps.add(name, "must not hold a fragment (#…)")
		return nil
	case !query && (u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(v, "#")):
		// boxproxy adds paths and queries of its own; a query here is
		// most often a key pasted in, which the start-up line would show.
		ps.add(name, "must not hold a query or fragment (?… or #…): give the scheme, host and path only")
		return nil
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	return u
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// IsBoxID reports whether s looks like a Box user or enterprise ID: 1 to 20 digits.
func IsBoxID(s string) bool {
	if len(s) == 0 || len(s) > 20 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// IsLoopback reports whether host (a name or IP, without port) is a loopback address.
func IsLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// Help describes every variable: name, default and meaning, one per line.
func Help() string {
	var b strings.Builder
	t := reflect.TypeOf(Config{})
	for i := range t.NumField() {
		f := t.Field(i)
		name := f.Tag.Get("env")
		if name == "" || name == "-" {
			continue
		}
		def := f.Tag.Get("envDefault")
		if def == "" {
			def = f.Tag.Get("helpDefault") // computed defaults, described
		}
		if def == "" {
			def = "-"
		}
		fmt.Fprintf(&b, "  %-30s %-32s %s\n", Prefix+name, "(default "+def+")", f.Tag.Get("help"))
		if f.Tag.Get("secret") != "" {
			fmt.Fprintf(&b, "  %-30s %-32s %s\n", Prefix+name+"_FILE", "", "path of a file holding "+Prefix+name)
		}
	}
	return b.String()
}

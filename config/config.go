// Package config reads boxproxy's configuration from BOXPROXY_* environment
// variables (and their _FILE forms), checks all of it up front, and returns one
// error that says what to fix.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
)

// Prefix is the prefix of every variable.
const Prefix = "BOXPROXY_"

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
	ClientID        string        `env:"CLIENT_ID" secret:"file" help:"the Box app's client ID (ccg, jwt, oauth)"`
	ClientSecret    string        `env:"CLIENT_SECRET" secret:"true" help:"the Box app's client secret (ccg, jwt, oauth)"`
	EnterpriseID    string        `env:"ENTERPRISE_ID" help:"default subject: the enterprise's Service Account (ccg, jwt)"`
	UserID          string        `env:"USER_ID" help:"default subject: this user instead of the Service Account (ccg, jwt)"`
	JWTConfig       string        `env:"JWT_CONFIG" help:"path of the JSON app configuration from the Box Developer Console (jwt)"`
	JWTKeyID        string        `env:"JWT_KEY_ID" help:"public key ID, when the key is given without the JSON file (jwt)"`
	JWTPrivateKey   string        `env:"JWT_PRIVATE_KEY" help:"path of the PEM private key, when given without the JSON file (jwt)"`
	JWTPassphrase   string        `env:"JWT_PASSPHRASE" secret:"true" help:"passphrase of an encrypted private key (jwt)"`
	DeveloperToken  string        `env:"DEVELOPER_TOKEN" secret:"true" help:"a fixed developer token (token method); it cannot be refreshed"`
	TokenStore      string        `env:"TOKEN_STORE" envDefault:"boxproxy-tokens.json" help:"file where the oauth method keeps its tokens between runs (mode 0600)"`
	PublicURL       string        `env:"PUBLIC_URL" helpDefault:"http://localhost:<port of BOXPROXY_LISTEN>" help:"how clients and browsers reach the proxy; OAuth redirect URI is this + /auth/callback"`
	AsUser          string        `env:"AS_USER" helpDefault:"token for ccg/jwt, else header" help:"token (As-User picks a token minted for that user) or header (As-User is passed on beside the app's token)"`
	AllowedUsers    []string      `env:"ALLOWED_USERS" envSeparator:"," helpDefault:"all" help:"comma-separated user IDs that As-User may name"`
	TokenCacheSize  int           `env:"TOKEN_CACHE_SIZE" envDefault:"10000" help:"how many subjects' tokens the cache keeps (about 1 KiB each)"`
	InboundKey      string        `env:"INBOUND_KEY" secret:"true" help:"when set, every request must carry Proxy-Authorization: Bearer <key>"`
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
	UpstreamTimeout time.Duration `env:"UPSTREAM_TIMEOUT" envDefault:"5m" help:"longest wait for Box's answer head once the request is sent"`
	UpstreamCAFile  string        `env:"UPSTREAM_CA_FILE" helpDefault:"system roots" help:"PEM file of CA certificates trusted for Box's TLS (for egress proxies that re-sign TLS); added to the system roots"`
	AdminListen     string        `env:"ADMIN_LISTEN" helpDefault:"probes on BOXPROXY_LISTEN" help:"address serving /healthz, /readyz and /metrics without Host check or inbound key; forwards nothing"`
	RedisURL        string        `env:"REDIS_URL" secret:"true" helpDefault:"each process alone" help:"redis:// or rediss:// URL: replicas of one app share their token cache and their OAuth login"`
	StoreKey        string        `env:"STORE_KEY" secret:"true" helpDefault:"derived from the client secret" help:"at least 32 characters keying the encryption of every stored token (Redis and BOXPROXY_TOKEN_STORE)"`
	OAuthKeepalive  time.Duration `env:"OAUTH_KEEPALIVE" envDefault:"72h" help:"an idle oauth login is refreshed at least this often, so Box's 60-day refresh-token expiry never ends it"`

	// Derived by Load.
	Public, API, Upload *url.URL `env:"-"`
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

// Load reads the configuration from environ (os.Environ() form) and checks it.
func Load(environ []string) (*Config, error) {
	vars, err := expandFiles(environ)
	if err != nil {
		return nil, err
	}
	var c Config
	if err := env.ParseWithOptions(&c, env.Options{Prefix: Prefix, Environment: vars}); err != nil {
		return nil, cleanEnvError(err)
	}
	if err := c.check(); err != nil {
		return nil, err
	}
	return &c, nil
}

// secretVars lists the variables that have a _FILE form.
func secretVars() []string {
	var out []string
	t := reflect.TypeOf(Config{})
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Tag.Get("secret") != "" {
			out = append(out, Prefix+f.Tag.Get("env"))
		}
	}
	return out
}

// expandFiles turns NAME_FILE=path into NAME=<file contents, without a final newline>.
func expandFiles(environ []string) (map[string]string, error) {
	vars := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, Prefix) {
			vars[k] = v
		}
	}
	for _, name := range secretVars() {
		path, ok := vars[name+"_FILE"]
		if !ok {
			continue
		}
		if _, both := vars[name]; both {
			return nil, fmt.Errorf("%s and %s_FILE are both set: set only one", name, name)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("%s_FILE: cannot read %s: %v", name, path, UnwrapPathError(err))
		}
		v := strings.TrimRight(string(data), "\r\n")
		if v == "" {
			return nil, fmt.Errorf("%s_FILE: %s is empty", name, path)
		}
		vars[name] = v
	}
	return vars, nil
}

// UnwrapPathError drops the path and operation of an *os.PathError, for
// messages that already name the file.
func UnwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// cleanEnvError keeps the env library's message but never a variable's value.
func cleanEnvError(err error) error {
	var agg env.AggregateError
	if errors.As(err, &agg) {
		var msgs []string
		for _, e := range agg.Errors {
			var pe env.ParseError
			if errors.As(e, &pe) {
				msgs = append(msgs, fmt.Sprintf("%s%s: %s", Prefix, envName(pe.Name), expected(pe.Type)))
				continue
			}
			msgs = append(msgs, e.Error())
		}
		return errors.New(strings.Join(msgs, "; "))
	}
	return err
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

func (c *Config) check() error {
	// Which method?
	inferred := ""
	switch {
	case c.DeveloperToken != "":
		inferred = MethodToken
	case c.JWTConfig != "" || c.JWTPrivateKey != "":
		inferred = MethodJWT
	case c.ClientID != "" && (c.EnterpriseID != "" || c.UserID != ""):
		inferred = MethodCCG
	case c.ClientID != "":
		inferred = MethodOAuth
	}
	if c.Auth == "" {
		c.Auth = inferred
	}
	switch c.Auth {
	case "":
		return errors.New("no Box credentials: set BOXPROXY_CLIENT_ID + BOXPROXY_CLIENT_SECRET + BOXPROXY_ENTERPRISE_ID (ccg), " +
			"BOXPROXY_JWT_CONFIG (jwt), BOXPROXY_CLIENT_ID + BOXPROXY_CLIENT_SECRET (oauth) or BOXPROXY_DEVELOPER_TOKEN (token); see boxproxy --help")
	case MethodCCG:
		if err := c.need("ccg", "CLIENT_ID", c.ClientID, "CLIENT_SECRET", c.ClientSecret); err != nil {
			return err
		}
		if c.EnterpriseID == "" && c.UserID == "" {
			return errors.New("ccg needs a subject: set BOXPROXY_ENTERPRISE_ID (Service Account) or BOXPROXY_USER_ID")
		}
		if err := c.forbid("ccg", "DEVELOPER_TOKEN", c.DeveloperToken, "JWT_CONFIG", c.JWTConfig, "JWT_PRIVATE_KEY", c.JWTPrivateKey); err != nil {
			return err
		}
	case MethodJWT:
		if c.JWTConfig != "" && (c.JWTPrivateKey != "" || c.JWTKeyID != "") {
			return errors.New("BOXPROXY_JWT_CONFIG and BOXPROXY_JWT_PRIVATE_KEY/BOXPROXY_JWT_KEY_ID are both set: use the JSON file or the separate variables, not both")
		}
		if c.JWTConfig == "" {
			if err := c.need("jwt", "JWT_PRIVATE_KEY", c.JWTPrivateKey, "JWT_KEY_ID", c.JWTKeyID, "CLIENT_ID", c.ClientID, "CLIENT_SECRET", c.ClientSecret); err != nil {
				return err
			}
			if c.EnterpriseID == "" && c.UserID == "" {
				return errors.New("jwt needs a subject: set BOXPROXY_ENTERPRISE_ID (Service Account) or BOXPROXY_USER_ID")
			}
		}
		if err := c.forbid("jwt", "DEVELOPER_TOKEN", c.DeveloperToken); err != nil {
			return err
		}
	case MethodOAuth:
		if err := c.need("oauth", "CLIENT_ID", c.ClientID, "CLIENT_SECRET", c.ClientSecret); err != nil {
			return err
		}
		if err := c.forbid("oauth", "ENTERPRISE_ID", c.EnterpriseID, "USER_ID", c.UserID, "DEVELOPER_TOKEN", c.DeveloperToken,
			"JWT_CONFIG", c.JWTConfig, "JWT_PRIVATE_KEY", c.JWTPrivateKey); err != nil {
			return err
		}
		if c.TokenStore == "" {
			return errors.New("oauth needs BOXPROXY_TOKEN_STORE (a file path)")
		}
	case MethodToken:
		if err := c.need("token", "DEVELOPER_TOKEN", c.DeveloperToken); err != nil {
			return err
		}
		if err := c.forbid("token", "CLIENT_SECRET", c.ClientSecret, "JWT_CONFIG", c.JWTConfig, "JWT_PRIVATE_KEY", c.JWTPrivateKey); err != nil {
			return err
		}
	default:
		return fmt.Errorf("BOXPROXY_AUTH=%q: use ccg, jwt, oauth or token", sanitize(c.Auth))
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
			return fmt.Errorf("BOXPROXY_AS_USER=token needs ccg or jwt (the %s method cannot mint user tokens): use header", c.Auth)
		}
	default:
		return fmt.Errorf("BOXPROXY_AS_USER=%q: use token or header", sanitize(c.AsUser))
	}
	for _, id := range []struct{ name, v string }{{"ENTERPRISE_ID", c.EnterpriseID}, {"USER_ID", c.UserID}} {
		if id.v != "" && !IsBoxID(id.v) {
			return fmt.Errorf("BOXPROXY_%s=%q is not a Box ID (digits only)", id.name, sanitize(id.v))
		}
	}
	for i, u := range c.AllowedUsers {
		u = strings.TrimSpace(u)
		if !IsBoxID(u) {
			return fmt.Errorf("BOXPROXY_ALLOWED_USERS: %q is not a Box user ID (digits only)", sanitize(u))
		}
		c.AllowedUsers[i] = u
	}

	// LISTEN first: the default PUBLIC_URL is made from its port.
	host, port, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return fmt.Errorf("BOXPROXY_LISTEN=%q is not host:port (e.g. 127.0.0.1:8080)", sanitize(c.Listen))
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("BOXPROXY_LISTEN=%q: the port must be a number", sanitize(c.Listen))
	}
	if c.API, err = parseURL("API_URL", c.APIURL); err != nil {
		return err
	}
	if c.Upload, err = parseURL("UPLOAD_URL", c.UploadURL); err != nil {
		return err
	}
	if c.PublicURL == "" {
		c.PublicURL = "http://localhost:" + port
	}
	if c.Public, err = parseURL("PUBLIC_URL", c.PublicURL); err != nil {
		return err
	}
	if _, err = parseURL("TOKEN_URL", c.TokenURL); err != nil {
		return err
	}
	if _, err = parseURL("AUTHORIZE_URL", c.AuthorizeURL); err != nil {
		return err
	}

	if !IsLoopback(host) && c.InboundKey == "" {
		return fmt.Errorf("BOXPROXY_LISTEN=%s is not a loopback address: anyone who reaches it would use your Box credentials; "+
			"set BOXPROXY_INBOUND_KEY (or _FILE), or listen on 127.0.0.1", sanitize(c.Listen))
	}
	if c.InboundKey != "" && len(c.InboundKey) < 16 {
		return errors.New("BOXPROXY_INBOUND_KEY is too short: use at least 16 characters (e.g. openssl rand -hex 32)")
	}
	if c.TokenCacheSize < 1 {
		return errors.New("BOXPROXY_TOKEN_CACHE_SIZE must be at least 1")
	}
	if c.UpstreamRetries < 0 || c.UpstreamRetries > 10 {
		return errors.New("BOXPROXY_UPSTREAM_RETRIES must be between 0 and 10")
	}
	if c.TokenTimeout <= 0 || c.ShutdownTimeout < 0 {
		return errors.New("BOXPROXY_TOKEN_TIMEOUT must be positive and BOXPROXY_SHUTDOWN_TIMEOUT not negative")
	}
	if c.HeaderTimeout <= 0 {
		return errors.New("BOXPROXY_HEADER_TIMEOUT must be positive")
	}
	if c.LoginTimeout <= 0 {
		return errors.New("BOXPROXY_LOGIN_TIMEOUT must be positive")
	}
	if c.UpstreamTimeout <= 0 {
		return errors.New("BOXPROXY_UPSTREAM_TIMEOUT must be positive")
	}
	if c.OAuthKeepalive <= 0 {
		return errors.New("BOXPROXY_OAUTH_KEEPALIVE must be positive")
	}
	if c.AdminListen != "" {
		if _, p, err := net.SplitHostPort(c.AdminListen); err != nil {
			return fmt.Errorf("BOXPROXY_ADMIN_LISTEN=%q is not host:port (e.g. 0.0.0.0:9090)", sanitize(c.AdminListen))
		} else if _, err := strconv.ParseUint(p, 10, 16); err != nil {
			return fmt.Errorf("BOXPROXY_ADMIN_LISTEN=%q: the port must be a number", sanitize(c.AdminListen))
		}
	}
	if c.RedisURL != "" {
		// Never echo the URL: it may hold a password.
		u, err := url.Parse(c.RedisURL)
		if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
			return errors.New("BOXPROXY_REDIS_URL is not a redis:// or rediss:// URL (redis://[user:password@]host:port/db)")
		}
	}
	if c.StoreKey != "" && len(c.StoreKey) < 32 {
		return errors.New("BOXPROXY_STORE_KEY is too short: use at least 32 characters (e.g. openssl rand -hex 32)")
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error", "trace":
	default:
		return fmt.Errorf("BOXPROXY_LOG_LEVEL=%q: use debug, info, warn or error", sanitize(c.LogLevel))
	}
	switch c.LogFormat {
	case "json", "console":
	default:
		return fmt.Errorf("BOXPROXY_LOG_FORMAT=%q: use json or console", sanitize(c.LogFormat))
	}
	return nil
}

func (c *Config) need(method string, kv ...string) error {
	var missing []string
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == "" {
			missing = append(missing, Prefix+kv[i])
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("the %s method needs %s", method, strings.Join(missing, ", "))
	}
	return nil
}

func (c *Config) forbid(method string, kv ...string) error {
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] != "" {
			return fmt.Errorf("%s%s is set but the %s method does not use it: contradictory settings, remove one (or set BOXPROXY_AUTH)", Prefix, kv[i], method)
		}
	}
	return nil
}

func parseURL(name, v string) (*url.URL, error) {
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("BOXPROXY_%s=%q is not an http(s) URL", name, sanitize(v))
	}
	if u.User != nil {
		return nil, fmt.Errorf("BOXPROXY_%s must not hold a user name or password", name)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	return u, nil
}

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

func sanitize(s string) string {
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
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

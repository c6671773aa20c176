package server

import (
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/rs/zerolog"

	"github.com/boxproxy/boxproxy/auth"
	"github.com/boxproxy/boxproxy/config"
	"github.com/boxproxy/boxproxy/metrics"
	"github.com/boxproxy/boxproxy/proxy"
)

// Auth is the token side of boxproxy, built from the configuration.
type Auth struct {
	Cache    *auth.Cache
	Source   auth.Source
	OAuth    *auth.OAuth // set for the oauth method
	Default  auth.Subject
	Endpoint *auth.Endpoint
	// Client calls Box's API outside the proxy (who logged in, whether a
	// developer token works), trusting what the proxy trusts.
	Client *http.Client
}

// SelfSubject is the cache key of the oauth and token methods, whose token
// is always the logged-in user's (or the developer token's).
var SelfSubject = auth.Subject{Type: auth.User, ID: "self"}

// NewAuth builds the Source the configuration names and the Cache around it.
// Key files and the token store are read here, so that their errors stop the
// program at start.
func NewAuth(cfg *config.Config, log zerolog.Logger, m *metrics.Metrics) (*Auth, error) {
	a := &Auth{}
	tt, err := tokenTransport(cfg)
	if err != nil {
		return nil, err
	}
	a.Endpoint = &auth.Endpoint{
		URL: cfg.TokenURL, ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret,
		Client:  &http.Client{Timeout: cfg.TokenTimeout, Transport: tt},
		Metrics: m,
	}
	a.Client = &http.Client{Timeout: 10 * time.Second, Transport: tt,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	subject := func(enterprise, user string) auth.Subject {
		if user != "" {
			return auth.Subject{Type: auth.User, ID: user}
		}
		return auth.Subject{Type: auth.Enterprise, ID: enterprise}
	}
	switch cfg.Auth {
	case config.MethodCCG:
		a.Source = &auth.CCG{Endpoint: a.Endpoint}
		a.Default = subject(cfg.EnterpriseID, cfg.UserID)
	case config.MethodJWT:
		j, def, err := newJWT(cfg, a.Endpoint)
		if err != nil {
			return nil, err
		}
		a.Source, a.Default = j, def
	case config.MethodOAuth:
		o, err := auth.NewOAuth(a.Endpoint, cfg.TokenStore, log)
		if err != nil {
			return nil, err
		}
		a.Source, a.OAuth, a.Default = o, o, SelfSubject
	case config.MethodToken:
		a.Source, a.Default = auth.NewStatic(cfg.DeveloperToken), SelfSubject
	default:
		return nil, fmt.Errorf("unknown auth method %q", cfg.Auth)
	}
	c, err := auth.NewCache(a.Source, auth.CacheOptions{
		Size: cfg.TokenCacheSize, FetchTimeout: cfg.TokenTimeout, Metrics: m, Logger: log,
	})
	if err != nil {
		return nil, err
	}
	a.Cache = c
	if a.OAuth != nil {
		a.OAuth.OnLogin(c.Purge)
	}
	return a, nil
}

func newJWT(cfg *config.Config, ep *auth.Endpoint) (*auth.JWT, auth.Subject, error) {
	keyID, pemKey, pass := cfg.JWTKeyID, []byte(nil), cfg.JWTPassphrase
	enterprise, user := cfg.EnterpriseID, cfg.UserID
	if cfg.JWTConfig != "" {
		data, err := os.ReadFile(cfg.JWTConfig)
		if err != nil {
			return nil, auth.Subject{}, fmt.Errorf("BOXPROXY_JWT_CONFIG: cannot read %s: %v", cfg.JWTConfig, config.UnwrapPathError(err))
		}
		ac, err := auth.ParseAppConfig(data)
		if err != nil {
			return nil, auth.Subject{}, fmt.Errorf("BOXPROXY_JWT_CONFIG %s: %v", cfg.JWTConfig, err)
		}
		s := ac.BoxAppSettings
		ep.ClientID, ep.ClientSecret = s.ClientID, s.ClientSecret
		keyID, pemKey = s.AppAuth.PublicKeyID, []byte(s.AppAuth.PrivateKey)
		if pass == "" {
			pass = s.AppAuth.Passphrase
		}
		if enterprise == "" {
			enterprise = ac.EnterpriseID
		}
		if user == "" {
			user = ac.UserID
		}
		if enterprise == "" && user == "" {
			return nil, auth.Subject{}, fmt.Errorf("BOXPROXY_JWT_CONFIG %s has no enterpriseID: set BOXPROXY_ENTERPRISE_ID or BOXPROXY_USER_ID", cfg.JWTConfig)
		}
		if !config.IsBoxID(enterprise) && user == "" {
			return nil, auth.Subject{}, fmt.Errorf("BOXPROXY_JWT_CONFIG %s: enterpriseID is not a Box ID (digits only)", cfg.JWTConfig)
		}
	} else {
		data, err := os.ReadFile(cfg.JWTPrivateKey)
		if err != nil {
			return nil, auth.Subject{}, fmt.Errorf("BOXPROXY_JWT_PRIVATE_KEY: cannot read %s: %v", cfg.JWTPrivateKey, config.UnwrapPathError(err))
		}
		pemKey = data
	}
	key, err := auth.ParsePrivateKey(pemKey, pass)
	if err != nil {
		return nil, auth.Subject{}, fmt.Errorf("jwt private key: %v", err)
	}
	def := auth.Subject{Type: auth.Enterprise, ID: enterprise}
	if user != "" {
		def = auth.Subject{Type: auth.User, ID: user}
	}
	return &auth.JWT{Endpoint: ep, KeyID: keyID, Key: key}, def, nil
}

// tokenTransport is the proxy's Transport (same TLS trust) sized for the
// token endpoint.
func tokenTransport(cfg *config.Config) (http.RoundTripper, error) {
	t, err := proxy.NewTransport(proxy.TransportOptions{CAFile: cfg.UpstreamCAFile})
	if err != nil {
		return nil, err
	}
	t.MaxIdleConns = 16
	t.MaxIdleConnsPerHost = 16
	t.ResponseHeaderTimeout = 0 // the client's Timeout bounds the whole request
	t.IdleConnTimeout = 90 * time.Second
	t.DisableCompression = false
	return t, nil
}

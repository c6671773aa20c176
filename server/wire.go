package server

import (
	"fmt"
	"net/http"
	"strings"
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

// newJWT parses the private key that config.Load found (the JSON app
// configuration and the variables are merged there). Its errors name where the
// key came from, never the key or the passphrase.
func newJWT(cfg *config.Config, ep *auth.Endpoint) (*auth.JWT, auth.Subject, error) {
	key, err := auth.ParsePrivateKey(cfg.JWTKey, cfg.JWTPassphrase)
	if err != nil {
		if strings.Contains(err.Error(), "passphrase") {
			return nil, auth.Subject{}, fmt.Errorf("%s: %v (%sJWT_PASSPHRASE)", cfg.JWTKeyVar, err, config.Prefix)
		}
		return nil, auth.Subject{}, fmt.Errorf("%s: %v", cfg.JWTKeyVar, err)
	}
	def := auth.Subject{Type: auth.Enterprise, ID: cfg.EnterpriseID}
	if cfg.UserID != "" {
		def = auth.Subject{Type: auth.User, ID: cfg.UserID}
	}
	return &auth.JWT{Endpoint: ep, KeyID: cfg.JWTKeyID, Key: key}, def, nil
}

// Metrics returns the server's collectors.
func (s *Server) Metrics() *metrics.Metrics { return s.m }

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
	return proxy.OneRequestPerHTTP1Connection(t), nil
}

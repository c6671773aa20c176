package server

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/boxproxy/boxproxy/auth"
	"github.com/boxproxy/boxproxy/config"
	"github.com/boxproxy/boxproxy/fleet"
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
	// Fleet is the connection to BOXPROXY_REDIS_URL's Redis, if set.
	Fleet *fleet.Fleet
	// Client calls Box's API outside the proxy (who logged in, whether a
	// developer token works), trusting what the proxy trusts.
	Client *http.Client
}

// Degraded is empty while everything the proxy shares answers, else what is
// degraded (Redis unreachable): /readyz reports it.
func (a *Auth) Degraded() string {
	if a.Fleet == nil {
		return ""
	}
	return a.Fleet.Degraded()
}

// Run does the token side's background work until ctx ends: the oauth
// keep-alive refresh. Only a serving process runs it, never a one-shot
// command.
func (a *Auth) Run(ctx context.Context) {
	if a.OAuth != nil {
		a.OAuth.RunKeepalive(ctx)
	}
}

// StopRenewing begins a shutdown: no token is renewed ahead of expiry in the
// background any more (the requests still being served get their tokens as
// usual). The oauth keep-alive stops with Run's context.
func (a *Auth) StopRenewing() {
	if a.Cache != nil {
		a.Cache.StopRenewing()
	}
}

// Close ends the token side once no request is served any more: no token
// request starts from now on, the ones in flight (a cache renewal, the oauth
// keep-alive, a refresh that Box has received) are waited for until they
// have ended and their answers are saved (token store file or Redis), or
// until ctx ends; then the connection to Redis is closed, so that nothing
// writes to a closed client.
func (a *Auth) Close(ctx context.Context) error {
	var err error
	if a.Cache != nil {
		err = a.Cache.Close(ctx)
	}
	if a.OAuth != nil {
		if oerr := a.OAuth.Close(ctx); err == nil {
			err = oerr
		}
	}
	if a.Fleet != nil {
		_ = a.Fleet.Close()
	}
	return err
}

// CloseWait bounds Auth.Close at a shutdown: the longest a token request can
// still take (an oauth refresh in a fleet: the fleet's lock and Box's answer,
// each within BOXPROXY_TOKEN_TIMEOUT, then up to about 12 s of attempts to
// save the answer while Redis does not answer).
func CloseWait(cfg *config.Config) time.Duration {
	return 2*cfg.TokenTimeout + 15*time.Second
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
		Secrets: otherSecrets(cfg),
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
		opts := auth.OAuthOptions{Path: cfg.TokenStore, Keepalive: cfg.OAuthKeepalive, Metrics: m}
		var err error
		if opts.Seal, err = auth.StoreSeal(cfg.StoreKey, a.Endpoint.ClientSecret, "oauth-login"); err != nil {
			return nil, err
		}
		if cfg.RedisURL != "" {
			if a.Fleet, err = openFleet(cfg, a.Endpoint, log, m); err != nil {
				return nil, err
			}
			opts.Shared = a.Fleet.Login()
		}
		o, err := auth.NewOAuth(a.Endpoint, opts, log)
		if err != nil {
			_ = a.Close(context.Background())
			return nil, err
		}
		a.Source, a.OAuth, a.Default = o, o, SelfSubject
	case config.MethodToken:
		a.Source, a.Default = auth.NewStatic(cfg.DeveloperToken), SelfSubject
	default:
		return nil, fmt.Errorf("unknown auth method %q", cfg.Auth)
	}
	co := auth.CacheOptions{Size: cfg.TokenCacheSize, FetchTimeout: cfg.TokenTimeout, Metrics: m, Logger: log}
	if cfg.RedisURL != "" && (cfg.Auth == config.MethodCCG || cfg.Auth == config.MethodJWT) {
		// ccg and jwt share tokens per subject; oauth shares its login
		// (above); a developer token has nothing to share.
		f, err := openFleet(cfg, a.Endpoint, log, m)
		if err != nil {
			return nil, err
		}
		a.Fleet, co.Shared = f, f.Cache()
	}
	c, err := auth.NewCache(a.Source, co)
	if err != nil {
		_ = a.Close(context.Background())
		return nil, err
	}
	a.Cache = c
	if a.OAuth != nil {
		a.OAuth.OnLogin(c.Purge)
	}
	return a, nil
}

// otherSecrets are the configuration's secrets that a token request does not
// carry, redacted all the same from what the token endpoint answers.
func otherSecrets(cfg *config.Config) []string {
	out := []string{cfg.StoreKey, cfg.InboundKey, cfg.JWTPassphrase, cfg.DeveloperToken}
	if u, err := url.Parse(cfg.RedisURL); err == nil && u.User != nil {
		p, _ := u.User.Password()
		out = append(out, p)
	}
	return out
}

// openFleet connects to BOXPROXY_REDIS_URL. The namespace is the app (grant,
// token URL, client ID), so that apps sharing one Redis stay apart.
func openFleet(cfg *config.Config, ep *auth.Endpoint, log zerolog.Logger, m *metrics.Metrics) (*fleet.Fleet, error) {
	sl, err := auth.StoreSeal(cfg.StoreKey, ep.ClientSecret, "fleet")
	if err != nil {
		return nil, err
	}
	return fleet.Open(fleet.Options{
		URL: cfg.RedisURL, Seal: sl, App: string(cfg.Auth) + "\x00" + cfg.TokenURL + "\x00" + ep.ClientID,
		Metrics: m, Logger: log,
	})
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
	return proxy.OneRequestPerConnection(t), nil
}

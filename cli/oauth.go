package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/boxproxy/boxproxy/config"
	"github.com/boxproxy/boxproxy/server"
)

// login serves the proxy (the callback must reach it), prints the URL to open,
// waits until a browser completes the flow, and exits.
func (r *runner) login(cmd *cobra.Command) error {
	cfg, unknown, err := r.load(cmd, false)
	if err != nil {
		return err
	}
	r.warn(cmd, unknown)
	// Plain sentences, errors only: the start-up line, access lines and the
	// "login required" of the warm-up are noise while a person logs in.
	log := plainLogger(cmd, r.stderr, zerolog.ErrorLevel)
	if cfg.Auth != config.MethodOAuth {
		return fmt.Errorf("login is for the oauth method, but BOXPROXY_AUTH is %s", cfg.Auth)
	}
	timeout := cfg.LoginTimeout
	s, err := server.New(cfg, log)
	if err != nil {
		return err
	}
	if o := s.Auth().OAuth; o.LoggedIn() {
		fmt.Fprintf(r.stdout, "already logged in as %s; a new login replaces that one\n", o.User())
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	srvCtx, stopServer := context.WithCancel(context.Background())
	defer stopServer()
	served := make(chan error, 1)
	go func() {
		served <- r.run(srvCtx, cfg, log, s, func(net.Addr) {
			fmt.Fprintf(r.stdout, "Open this URL in a browser to log in to Box:\n\n    %s\n\nWaiting for the login (up to %s)...\n",
				s.LoginURL(), timeout)
		})
	}()
	type result struct {
		who string
		err error
	}
	logged := make(chan result, 1)
	go func() {
		u, err := s.WaitLogin(ctx)
		logged <- result{u.String(), err}
	}()

	select {
	case err := <-served:
		cancel()
		<-logged
		if err == nil {
			err = errors.New("the server stopped")
		}
		return fmt.Errorf("cannot serve the login callback on %s: %v (if boxproxy already runs there, open %s in a browser instead)",
			cfg.Listen, err, s.LoginURL())
	case res := <-logged:
		stopServer() // drains: the browser still gets its page
		if serr := <-served; serr != nil && res.err == nil {
			log.Warn().Err(serr).Msg("login: server stopped with an error")
		}
		switch {
		case res.err == nil:
			fmt.Fprintf(r.stdout, "logged in as %s; tokens saved in %s\n", res.who, storeName(cfg))
			return nil
		case errors.Is(res.err, context.DeadlineExceeded):
			return fmt.Errorf("no login within %s: run boxproxy login again (BOXPROXY_LOGIN_TIMEOUT sets the wait)", timeout)
		default:
			return errors.New("interrupted before the login completed")
		}
	}
}

// logout revokes the tokens at Box and removes the token store.
func (r *runner) logout(cmd *cobra.Command) error {
	cfg, unknown, err := r.load(cmd, false)
	if err != nil {
		return err
	}
	r.warn(cmd, unknown)
	log := plainLogger(cmd, r.stderr, zerolog.ErrorLevel)
	if cfg.Auth != config.MethodOAuth {
		return fmt.Errorf("logout is for the oauth method, but BOXPROXY_AUTH is %s", cfg.Auth)
	}
	a, err := server.NewAuth(cfg, log, nil)
	if err != nil {
		return err
	}
	o := a.OAuth
	if !o.LoggedIn() {
		if o.LoginExpired() {
			if err := o.Logout(context.Background()); err != nil {
				return err
			}
			fmt.Fprintf(r.stdout, "not logged in (Box had already rejected the saved login); removed %s\n", storeName(cfg))
			return nil
		}
		fmt.Fprintf(r.stdout, "not logged in (no tokens in %s); nothing to do\n", storeName(cfg))
		return nil
	}
	who := o.User()
	ctx, cancel := context.WithTimeout(context.Background(), 2*cfg.TokenTimeout+time.Second)
	defer cancel()
	if err := o.Logout(ctx); err != nil {
		return err
	}
	fmt.Fprintf(r.stdout, "logged out %s: tokens revoked at Box and %s removed\n", who, storeName(cfg))
	return nil
}

// storeName names where the login is kept without quoting
// BOXPROXY_TOKEN_STORE's value: a refresh token pasted into it by mistake is
// a valid file name, and output gets copied into tickets and CI logs.
func storeName(cfg *config.Config) string {
	if cfg.RedisURL != "" {
		return "the fleet's login in Redis"
	}
	return "the token store (BOXPROXY_TOKEN_STORE)"
}

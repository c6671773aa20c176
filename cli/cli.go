// Package cli is boxproxy's command line: it parses the command, loads the
// configuration once, and runs serve, token, check, login, logout, demo,
// version or help. main stays a single call.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/boxproxy/boxproxy/auth"
	"github.com/boxproxy/boxproxy/config"
	"github.com/boxproxy/boxproxy/server"
)

// Main runs the command in args (without the program name) and returns the
// exit code.
func Main(args, environ []string, stdout, stderr io.Writer, version string) int {
	cmd := "serve"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	r := &runner{environ: environ, stdout: stdout, stderr: stderr, version: version}
	var err error
	switch cmd {
	case "serve":
		err = r.serve(context.Background())
	case "token":
		err = r.token(args)
	case "check":
		err = r.check()
	case "login":
		err = r.login()
	case "logout":
		err = r.logout()
	case "demo":
		err = r.demo()
	case "version", "--version", "-v":
		fmt.Fprintf(stdout, "boxproxy %s\n", version)
	case "help", "--help", "-h", "-help":
		fmt.Fprint(stdout, Usage())
	default:
		fmt.Fprintf(stderr, "boxproxy: unknown command %q (see boxproxy --help)\n", cmd)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "boxproxy %s: %s\n", cmd, oneLine(err.Error()))
		return 1
	}
	return 0
}

// Usage is the text of boxproxy --help.
func Usage() string {
	return `boxproxy: a local authenticating reverse proxy for the Box API.
Programs send plain HTTP to boxproxy; it adds a valid Box token and forwards to Box.

Usage:
  boxproxy [serve]             run the proxy until SIGINT/SIGTERM (then drain and exit 0)
  boxproxy token [--as-user ID] print one access token (for the configured app, or that user)
  boxproxy check               validate the configuration and obtain one token
  boxproxy login               oauth: print the login URL and wait for the browser flow
  boxproxy logout              oauth: revoke the tokens at Box and clear the token store
  boxproxy demo                run the proxy in front of a local Box stand-in and print curl commands
  boxproxy version             print the version
  boxproxy --help              this text

Routes: /2.0/... -> BOXPROXY_API_URL, /api/2.0/... -> BOXPROXY_UPLOAD_URL, /healthz, /readyz,
/metrics, /auth/login + /auth/callback (oauth), POST /quitquitquit (when enabled).

Configuration (environment variables; secrets also as NAME_FILE=path):
` + config.Help()
}

type runner struct {
	environ        []string
	stdout, stderr io.Writer
	version        string
}

func (r *runner) load() (*config.Config, zerolog.Logger, error) {
	cfg, err := config.Load(r.environ)
	if err != nil {
		return nil, zerolog.Nop(), err
	}
	return cfg, NewLogger(cfg, r.stderr), nil
}

// NewLogger makes the zerolog logger the configuration asks for.
func NewLogger(cfg *config.Config, w io.Writer) zerolog.Logger {
	if cfg.LogFormat == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	}
	lvl, err := zerolog.ParseLevel(cfg.LogLevel)
	if err != nil {
		lvl = zerolog.InfoLevel
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger()
}

func (r *runner) serve(ctx context.Context) error {
	cfg, log, err := r.load()
	if err != nil {
		return err
	}
	s, err := server.New(cfg, log)
	if err != nil {
		return err
	}
	return r.run(ctx, cfg, log, s, nil)
}

// run serves until a signal, logging the start-up line.
func (r *runner) run(ctx context.Context, cfg *config.Config, log zerolog.Logger, s *server.Server, ready func(net.Addr)) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		// After the first signal the server drains; restoring the default
		// handling lets a second Ctrl-C (or SIGTERM) end the process at once.
		<-ctx.Done()
		stop()
	}()
	a := s.Auth()
	return s.ListenAndRun(ctx, func(addr net.Addr) {
		log.Info().Str("version", r.version).Str("listen", addr.String()).Str("auth", cfg.Auth).
			Str("subject", a.Default.String()).Str("as_user", cfg.AsUser).
			Str("api", cfg.API.String()).Str("upload", cfg.Upload.String()).Str("token_url", cfg.TokenURL).
			Bool("inbound_key", cfg.InboundKey != "").Msg("boxproxy serving")
		if ready != nil {
			ready(addr)
		}
	})
}

func (r *runner) token(args []string) error {
	asUser := ""
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case a == "--as-user" || a == "-as-user":
			if i+1 >= len(args) {
				return errors.New("--as-user needs a user ID")
			}
			asUser = args[i+1]
			i++
		case strings.HasPrefix(a, "--as-user="):
			asUser = strings.TrimPrefix(a, "--as-user=")
		default:
			return fmt.Errorf("unknown argument %q (usage: boxproxy token [--as-user ID])", a)
		}
	}
	cfg, log, err := r.load()
	if err != nil {
		return err
	}
	a, err := server.NewAuth(cfg, log, nil)
	if err != nil {
		return err
	}
	subject := a.Default
	if asUser != "" {
		if !config.IsBoxID(asUser) {
			return errors.New("--as-user must be a Box user ID (digits only)")
		}
		if cfg.AsUser != config.AsUserToken {
			return fmt.Errorf("--as-user needs a method that mints user tokens (ccg or jwt), not %s", cfg.Auth)
		}
		if len(cfg.AllowedUsers) > 0 && !contains(cfg.AllowedUsers, asUser) {
			return errors.New("--as-user names a user that BOXPROXY_ALLOWED_USERS does not list")
		}
		subject.Type, subject.ID = "user", asUser
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.TokenTimeout+time.Second)
	defer cancel()
	tok, err := a.Cache.Token(ctx, subject)
	if err != nil {
		return err
	}
	fmt.Fprintln(r.stdout, tok.Access())
	return nil
}

func (r *runner) check() error {
	cfg, log, err := r.load()
	if err != nil {
		return err
	}
	a, err := server.NewAuth(cfg, log, nil)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.TokenTimeout+time.Second)
	defer cancel()
	tok, err := a.Cache.Token(ctx, a.Default)
	if err != nil {
		return err
	}
	exp := "no known expiry (developer token)"
	if cfg.Auth == config.MethodToken {
		// A developer token is not fetched but given: only Box can say whether it still works.
		if err := checkDeveloperToken(ctx, a.Client, cfg, tok); err != nil {
			return err
		}
		exp = "accepted by Box; " + exp
	}
	if !tok.Expiry.IsZero() {
		exp = "expires in " + time.Until(tok.Expiry).Round(time.Second).String()
	}
	fmt.Fprintf(r.stdout, "ok: %s method, token for %s obtained, %s\n", cfg.Auth, a.Default, exp)
	return nil
}

// checkDeveloperToken asks Box who the token's user is; a 401 means it has expired.
func checkDeveloperToken(ctx context.Context, client *http.Client, cfg *config.Config, tok auth.Token) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, cfg.API.String()+"/2.0/users/me?fields=id", nil)
	if err != nil {
		return err
	}
	req.Header["Authorization"] = tok.AuthorizationHeader()
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach Box to check BOXPROXY_DEVELOPER_TOKEN: %v", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		return errors.New("the developer token BOXPROXY_DEVELOPER_TOKEN is rejected by Box (developer tokens expire after 60 minutes): generate a new one in the Box Developer Console")
	case resp.StatusCode >= 300:
		return fmt.Errorf("box answered %s to GET /2.0/users/me with BOXPROXY_DEVELOPER_TOKEN", resp.Status)
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

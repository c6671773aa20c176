// Package cli is boxproxy's command line: it parses the command and its flags
// (spf13/cobra), loads the configuration once, and runs serve, token, check,
// login, logout, demo, version or help. main stays a single call.
//
// Output: serve (and demo) log JSON records (or console lines) on stderr; the
// other commands are for people: their result goes to stdout, and
// diagnostics go to stderr as plain sentences, never as log records.
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
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/boxproxy/boxproxy/auth"
	"github.com/boxproxy/boxproxy/buildinfo"
	"github.com/boxproxy/boxproxy/config"
	"github.com/boxproxy/boxproxy/proxy"
	"github.com/boxproxy/boxproxy/server"
)

// logTimeFormat is RFC 3339 with milliseconds, for every log line's time.
const logTimeFormat = "2006-01-02T15:04:05.000Z07:00"

func init() {
	// zerolog keeps its time format in a package variable; set it once, before
	// any logger exists, rather than from NewLogger (which tests call in parallel).
	zerolog.TimeFieldFormat = logTimeFormat
}

// Main runs the command in args (without the program name) and returns the
// exit code: 0 done, 1 failed, 2 usage error (unknown command, flag or argument).
// A non-empty version (set at link time) replaces the module version of the
// binary's build information.
func Main(args, environ []string, stdout, stderr io.Writer, version string) int {
	r := &runner{environ: environ, stdout: stdout, stderr: stderr, build: buildinfo.Read(version)}
	root := r.commands()
	args = append([]string{}, args...) // never nil: cobra reads os.Args for nil
	for i, a := range args {
		if a == "-help" { // Go's flag package accepts it; pflag would read -h -e -l -p
			args[i] = "--help"
		}
		if a == "--" {
			break
		}
	}
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteC()
	if err == nil {
		return 0
	}
	name := "boxproxy"
	if cmd != nil && cmd != root {
		name = cmd.CommandPath()
	} else if cmd == root && !r.usage {
		name = "boxproxy serve"
	}
	var ue usageError
	if errors.As(err, &ue) {
		help := "boxproxy --help"
		if cmd != nil && cmd != root {
			help = cmd.CommandPath() + " --help"
		}
		fmt.Fprintf(stderr, "%s: %s (see %s)\n", name, oneLine(err.Error()), help)
		return 2
	}
	fmt.Fprintf(stderr, "%s: %s\n", name, oneLine(err.Error()))
	return 1
}

// usageError is a mistake on the command line rather than in the configuration.
type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }

type runner struct {
	environ        []string
	stdout, stderr io.Writer
	build          buildinfo.Info
	usage          bool // the root command failed on its command line, not as serve
}

// flagEnv annotates a flag with the variable it sets.
const flagEnv = "boxproxy-env"

// envFlag adds a string flag that stands for variable name (without prefix):
// a flag given on the command line wins over the environment, which wins
// over the default.
func envFlag(fs *pflag.FlagSet, flag, name, usage string) {
	fs.String(flag, "", usage+" ("+config.Prefix+name+")")
	_ = fs.SetAnnotation(flag, flagEnv, []string{config.Prefix + name})
}

func (r *runner) commands() *cobra.Command {
	root := &cobra.Command{
		Use:           "boxproxy",
		Short:         "a local authenticating reverse proxy for the Box API",
		SilenceErrors: true,
		SilenceUsage:  true,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return nil
			}
			r.usage = true
			msg := fmt.Sprintf("unknown command %q", clip(args[0]))
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				msg += "; did you mean " + s[0] + "?"
			}
			return usageError{errors.New(msg)}
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			if v, _ := cmd.Flags().GetBool("version"); v {
				fmt.Fprintln(r.stdout, r.build.String())
				return nil
			}
			return r.serve(cmd)
		},
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.SuggestionsMinimumDistance = 2
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		if c == root {
			r.usage = true
		}
		return usageError{err}
	})
	defaultHelp := root.HelpFunc()
	root.SetHelpFunc(func(c *cobra.Command, args []string) {
		if c == root {
			fmt.Fprint(c.OutOrStdout(), Usage())
			return
		}
		defaultHelp(c, args)
	})
	root.Flags().BoolP("version", "v", false, "print the version and exit")
	root.SetHelpCommand(&cobra.Command{
		Use:   "help [command]",
		Short: "help about any command",
		RunE: func(c *cobra.Command, args []string) error {
			target, rest, err := root.Find(args)
			if err != nil || len(rest) > 0 {
				word := strings.Join(args, " ")
				return usageError{fmt.Errorf("no help for %q: not a command", clip(word))}
			}
			return target.Help()
		},
	})
	serveFlags := func(fs *pflag.FlagSet) {
		envFlag(fs, "listen", "LISTEN", "address to serve on")
		envFlag(fs, "admin-listen", "ADMIN_LISTEN", "address for /healthz, /readyz and /metrics")
		envFlag(fs, "public-url", "PUBLIC_URL", "how clients and browsers reach the proxy")
		envFlag(fs, "auth", "AUTH", "ccg, jwt, oauth or token")
		envFlag(fs, "jwt-config", "JWT_CONFIG", "path of the Box app's JSON configuration")
		envFlag(fs, "token-store", "TOKEN_STORE", "file of the oauth method's tokens")
		envFlag(fs, "log-level", "LOG_LEVEL", "debug, info, warn or error")
		envFlag(fs, "log-format", "LOG_FORMAT", "json or console")
	}
	serveFlags(root.Flags())
	noArgs := func(_ *cobra.Command, args []string) error {
		if len(args) > 0 {
			return usageError{fmt.Errorf("unexpected argument %q: this command takes flags only", clip(args[0]))}
		}
		return nil
	}
	const cfgNote = "\n\nConfiguration comes from BOXPROXY_* environment variables (boxproxy --help lists them);\na flag wins over its variable, which wins over the default."

	serve := &cobra.Command{
		Use:   "serve",
		Short: "run the proxy until SIGINT/SIGTERM (then drain and exit 0)",
		Long:  "Run the proxy until SIGINT or SIGTERM, then let in-flight requests finish and exit 0." + cfgNote,
		Args:  noArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return r.serve(cmd) },
	}
	serveFlags(serve.Flags())

	token := &cobra.Command{
		Use:   "token [--as-user ID]",
		Short: "print one access token (for the configured app, or that user)",
		Long: "Print one access token on stdout, and nothing else:\n" +
			`  curl -H "Authorization: Bearer $(boxproxy token)" https://api.box.com/2.0/users/me` + cfgNote,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			asUser, _ := cmd.Flags().GetString("as-user")
			return r.token(cmd, asUser)
		},
	}
	token.Flags().String("as-user", "", "a token for this Box user ID instead of the default subject (ccg, jwt)")

	check := &cobra.Command{
		Use:   "check",
		Short: "validate the configuration and obtain one token",
		Long: "Check the whole configuration (every problem is listed at once, and so are unknown\n" +
			"BOXPROXY_* variables) and obtain one token. Prints one line; exits 0 when usable." + cfgNote,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return r.check(cmd) },
	}

	login := &cobra.Command{
		Use:   "login",
		Short: "oauth: print the login URL and wait for the browser flow",
		Long: "oauth method: serve the proxy's login pages, print the URL to open in a browser, and wait\n" +
			"(BOXPROXY_LOGIN_TIMEOUT) until the login is complete." + cfgNote,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return r.login(cmd) },
	}
	logout := &cobra.Command{
		Use:   "logout",
		Short: "oauth: revoke the tokens at Box and clear the token store",
		Args:  noArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return r.logout(cmd) },
	}
	demo := &cobra.Command{
		Use:   "demo",
		Short: "run the proxy in front of a local Box stand-in and print curl commands",
		Long:  "Run the proxy in front of a local Box stand-in (no Box account needed) and print curl commands to try.",
		Args:  noArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return r.demo(cmd) },
	}
	version := &cobra.Command{
		Use:   "version",
		Short: "print the version, VCS revision and Go version",
		Args:  noArgs,
		RunE: func(*cobra.Command, []string) error {
			fmt.Fprintln(r.stdout, r.build.String())
			return nil
		},
	}
	for _, c := range []*cobra.Command{token, check} {
		envFlag(c.Flags(), "auth", "AUTH", "ccg, jwt, oauth or token")
		envFlag(c.Flags(), "jwt-config", "JWT_CONFIG", "path of the Box app's JSON configuration")
		envFlag(c.Flags(), "token-store", "TOKEN_STORE", "file of the oauth method's tokens")
	}
	envFlag(login.Flags(), "listen", "LISTEN", "address to serve the login pages on")
	envFlag(login.Flags(), "public-url", "PUBLIC_URL", "how the browser reaches the proxy")
	envFlag(login.Flags(), "token-store", "TOKEN_STORE", "file to keep the tokens in")
	envFlag(logout.Flags(), "token-store", "TOKEN_STORE", "file the tokens are kept in")
	envFlag(demo.Flags(), "listen", "LISTEN", "address to serve on")
	envFlag(demo.Flags(), "log-level", "LOG_LEVEL", "debug, info, warn or error")
	envFlag(demo.Flags(), "log-format", "LOG_FORMAT", "json or console")
	root.AddCommand(serve, token, check, login, logout, demo, version)
	return root
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
  boxproxy version             print the version, VCS revision and Go version
  boxproxy COMMAND --help      that command's flags; -h works too
  boxproxy --help              this text

Routes: /2.0/... -> BOXPROXY_API_URL, /api/2.0/... -> BOXPROXY_UPLOAD_URL, /healthz, /readyz,
/metrics, /auth/login + /auth/callback (oauth), POST /quitquitquit (when enabled).

Flags mirror the variables people type (--listen, --admin-listen, --public-url, --auth,
--jwt-config, --token-store, --log-level, --log-format; see each command's --help).
A flag wins over its variable, which wins over the default. Secrets have no flags.
Unknown BOXPROXY_* variables are reported: an error for check, a warning otherwise.

Configuration (environment variables; secrets also as NAME_FILE=path):
` + config.Help()
}

// environ is the environment with the command's flags applied as variables.
func (r *runner) environWith(cmd *cobra.Command) (env []string, fromFlag map[string]string) {
	env = append([]string(nil), r.environ...)
	fromFlag = map[string]string{}
	cmd.Flags().Visit(func(f *pflag.Flag) {
		if v := f.Annotations[flagEnv]; len(v) == 1 {
			env = append(env, v[0]+"="+f.Value.String())
			fromFlag[v[0]] = "--" + f.Name
		}
	})
	return env, fromFlag
}

// load reads the configuration for cmd. Unknown variables are errors when
// strict (check), and otherwise come back as warnings — except when the
// configuration fails, where they are listed with its errors, since a
// misspelt name is the likeliest cause.
func (r *runner) load(cmd *cobra.Command, strict bool) (*config.Config, []config.Problem, error) {
	env, fromFlag := r.environWith(cmd)
	unknown := config.Unknown(r.environ)
	cfg, err := config.LoadWith(env, config.Options{CheckKey: checkKey})
	var errs config.Errors
	if err != nil && !errors.As(err, &errs) {
		return nil, unknown, err
	}
	if err != nil || (strict && len(unknown) > 0) {
		all := append(append(config.Errors{}, unknown...), errs...)
		for i, p := range all {
			if f, ok := fromFlag[p.Var]; ok {
				all[i].Var = f + " (" + p.Var + ")"
			}
		}
		return nil, nil, all
	}
	return cfg, unknown, nil
}

// checkKey opens the jwt method's private key while the configuration is
// checked, so that a wrong passphrase is one of the problems listed at once.
func checkKey(pemKey []byte, passphrase string) error {
	_, err := auth.ParsePrivateKey(pemKey, passphrase)
	return err
}

// warn prints plain warning sentences for a command that is not serve.
func (r *runner) warn(cmd *cobra.Command, ps []config.Problem) {
	for _, p := range ps {
		fmt.Fprintf(r.stderr, "%s: warning: %s (ignored)\n", cmd.CommandPath(), p.Error())
	}
}

// NewLogger makes the zerolog logger the configuration asks for: JSON lines
// (or console lines) with RFC 3339 millisecond timestamps.
func NewLogger(cfg *config.Config, w io.Writer) zerolog.Logger {
	if cfg.LogFormat == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000"}
	}
	lvl, err := zerolog.ParseLevel(cfg.LogLevel)
	if err != nil {
		lvl = zerolog.InfoLevel
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger()
}

// plainLogger writes records at lvl or above as plain sentences
// ("boxproxy login: error: message key=value"), for commands other than serve.
func plainLogger(cmd *cobra.Command, w io.Writer, lvl zerolog.Level) zerolog.Logger {
	prefix := cmd.CommandPath()
	cw := zerolog.ConsoleWriter{
		Out: w, NoColor: true,
		PartsOrder:  []string{zerolog.LevelFieldName, zerolog.MessageFieldName},
		FormatLevel: func(i any) string { return fmt.Sprintf("%s: %s:", prefix, i) },
	}
	return zerolog.New(cw).Level(lvl)
}

func (r *runner) serve(cmd *cobra.Command) error {
	cfg, unknown, err := r.load(cmd, false)
	if err != nil {
		return err
	}
	log := NewLogger(cfg, r.stderr)
	for _, p := range unknown {
		log.Warn().Str("variable", p.Var).Msg(p.Error() + " (ignored)")
	}
	s, err := server.New(cfg, log)
	if err != nil {
		return err
	}
	s.Metrics().SetBuildInfo(r.build)
	return r.run(context.Background(), cfg, log, s, nil)
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
		log.Info().Str("version", r.build.Version).Str("revision", r.build.Revision).
			Str("listen", addr.String()).Str("auth", cfg.Auth).Str("auth_reason", cfg.AuthReason).
			Str("subject", a.Default.String()).Str("as_user", cfg.AsUser).
			Str("api", cfg.API.String()).Str("upload", cfg.Upload.String()).Str("token_url", cfg.TokenURL).
			Bool("inbound_key", cfg.InboundKey != "").Msg("boxproxy serving")
		if ready != nil {
			ready(addr)
		}
	})
}

func (r *runner) token(cmd *cobra.Command, asUser string) error {
	if cmd.Flags().Changed("as-user") {
		if _, e := proxy.NewAsUserRule(nil).Subject(asUser); e != nil {
			return usageError{errors.New("--as-user must be a Box user ID (digits only)")}
		}
	}
	cfg, unknown, err := r.load(cmd, false)
	if err != nil {
		return err
	}
	r.warn(cmd, unknown)
	a, err := server.NewAuth(cfg, zerolog.Nop(), nil)
	if err != nil {
		return err
	}
	subject := a.Default
	if asUser != "" {
		if cfg.AsUser != config.AsUserToken {
			return fmt.Errorf("--as-user needs a method that mints user tokens (ccg or jwt), not %s", cfg.Auth)
		}
		s, e := proxy.NewAsUserRule(cfg.AllowedUsers).Subject(asUser)
		if e != nil {
			return errors.New("--as-user: " + e.Message)
		}
		subject = s
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

func (r *runner) check(cmd *cobra.Command) error {
	cfg, _, err := r.load(cmd, true)
	if err != nil {
		return err
	}
	a, err := server.NewAuth(cfg, zerolog.Nop(), nil)
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
	if d := a.Degraded(); d != "" {
		// Usable, but not as configured: most often a wrong address or password.
		return errors.New("BOXPROXY_REDIS_URL: " + d)
	}
	fmt.Fprintf(r.stdout, "ok: %s method (%s), token for %s obtained, %s\n", cfg.Auth, cfg.AuthReason, a.Default, exp)
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

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// clip keeps a command-line word short and printable for an error message.
func clip(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
	if len(s) > 40 {
		s = s[:40] + "..."
	}
	return s
}

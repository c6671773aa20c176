package cli

import (
	"context"
	"fmt"
	"net"
	"strings"

	"github.com/spf13/cobra"

	"github.com/boxproxy/boxproxy/config"
	"github.com/boxproxy/boxproxy/fakebox"
	"github.com/boxproxy/boxproxy/server"
)

// Demo app credentials: they exist only inside the local stand-in.
const (
	demoClientID     = "demo-client-id"
	demoClientSecret = "demo-client-secret"
	demoEnterprise   = "900100"
)

// demo runs the proxy (Client Credentials Grant) in front of a local Box
// stand-in — the same one the integration tests use — and prints curl
// commands that work against it. No Box account is needed.
func (r *runner) demo(cmd *cobra.Command) error {
	box, err := fakebox.Start(fakebox.Config{
		ClientID: demoClientID, ClientSecret: demoClientSecret, EnterpriseID: demoEnterprise,
		Users: []fakebox.User{
			{ID: "2001", Name: "Ada Lovelace", Login: "ada@example.com", Admin: true},
			{ID: "2002", Name: "Grace Hopper", Login: "grace@example.com"},
		},
	})
	if err != nil {
		return fmt.Errorf("cannot start the Box stand-in: %w", err)
	}
	defer box.Close()

	environ := []string{}
	given, _ := r.environWith(cmd)
	for _, kv := range given { // keep the user's listen address, log settings and the like
		k, _, _ := strings.Cut(kv, "=")
		switch strings.TrimPrefix(k, config.Prefix) {
		case "LISTEN", "LOG_LEVEL", "LOG_FORMAT", "PUBLIC_URL", "TOKEN_CACHE_SIZE", "ALLOWED_USERS", "QUIT_ENDPOINT", "INBOUND_KEY":
			environ = append(environ, kv)
		}
	}
	environ = append(environ,
		"BOXPROXY_AUTH=ccg",
		"BOXPROXY_CLIENT_ID="+demoClientID,
		"BOXPROXY_CLIENT_SECRET="+demoClientSecret,
		"BOXPROXY_ENTERPRISE_ID="+demoEnterprise,
		"BOXPROXY_API_URL="+box.APIURL(),
		"BOXPROXY_UPLOAD_URL="+box.UploadURL(),
		"BOXPROXY_TOKEN_URL="+box.TokenURL(),
	)
	cfg, err := config.Load(environ)
	if err != nil {
		return err
	}
	log := NewLogger(cfg, r.stderr)
	for _, p := range config.Unknown(r.environ) {
		log.Warn().Str("variable", p.Var).Msg(p.Error() + " (ignored)")
	}
	s, err := server.New(cfg, log)
	if err != nil {
		return err
	}
	s.Metrics().SetBuildInfo(r.build)
	return r.run(context.Background(), cfg, log, s, func(addr net.Addr) {
		base := "http://" + addr.String()
		fmt.Fprintf(r.stdout, `boxproxy demo: the proxy listens on %[1]s in front of a local Box stand-in (%[2]s).
It uses the Client Credentials Grant with a demo app; no Box account is involved. Try:

  curl -s %[1]s/2.0/users/me                                 # the Service Account
  curl -s -H 'As-User: 2001' %[1]s/2.0/users/me              # a token minted for user 2001
  curl -s -H 'As-User: abc' %[1]s/2.0/users/me               # 400: not a user ID
  curl -s -F attributes='{"name":"hello.txt","parent":{"id":"0"}}' -F file=@/etc/hostname %[1]s/api/2.0/files/content
  curl -s -X POST -H 'Content-Type: application/json' -d '{"folder_id":"0","file_size":20000000,"file_name":"big.bin"}' %[1]s/api/2.0/files/upload_sessions
  curl -s %[1]s/readyz
  curl -s %[1]s/metrics | grep boxproxy_

Press Ctrl-C to stop.
`, base, box.APIURL())
	})
}

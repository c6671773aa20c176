package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/boxproxy/boxproxy/apierr"
)

// adminServer is the admin listener (BOXPROXY_ADMIN_LISTEN): /healthz,
// /readyz and /metrics for kubelet and Prometheus, which reach a pod by its
// IP. It has its own http.Server, so that the data port (BOXPROXY_LISTEN) can
// stay on loopback, where only the pod's own containers reach it.
//
// It needs no Host check and no inbound key because it forwards nothing,
// changes nothing and reveals neither a secret nor a user ID. For the same
// reason POST /quitquitquit is not served here: anyone who can reach a pod
// IP could stop the proxy. It stays on the data port, behind its guards (a
// Job's container calls it on 127.0.0.1).
type adminServer struct {
	mu   sync.Mutex
	http *http.Server
}

// adminRoutes is what the admin listener serves, named in its 404.
const adminRoutes = "the admin listener (BOXPROXY_ADMIN_LISTEN) serves GET /healthz, /readyz and /metrics only; requests to Box go to BOXPROXY_LISTEN"

// AdminHandler is the admin listener's handler: the probes and the metrics,
// GET or HEAD, and a JSON 404 for anything else. It never forwards.
func (s *Server) AdminHandler() http.Handler { return http.HandlerFunc(s.serveAdmin) }

func (s *Server) serveAdmin(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		apierr.Write(w, http.StatusMethodNotAllowed, "method_not_allowed", adminRoutes)
		return
	}
	switch r.URL.Path {
	case "/healthz":
		s.healthz(w, r)
	case "/readyz":
		s.readyz(w, r)
	case "/metrics":
		s.m.Handler().ServeHTTP(w, r)
	default:
		apierr.Write(w, http.StatusNotFound, "not_found", adminRoutes)
	}
}

func (s *Server) adminHTTP() *http.Server {
	s.admin.mu.Lock()
	defer s.admin.mu.Unlock()
	if s.admin.http == nil {
		s.admin.http = &http.Server{
			Handler:           s.AdminHandler(),
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       120 * time.Second,
			MaxHeaderBytes:    16 << 10,
		}
	}
	return s.admin.http
}

// ServeAdmin serves the admin handler on ln until StopAdmin.
func (s *Server) ServeAdmin(ln net.Listener) error {
	err := s.adminHTTP().Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// StartAdmin opens BOXPROXY_ADMIN_LISTEN, when it is set, and serves the
// admin handler there in the background. It returns the address, or nil
// when no admin listener is configured (the probes are then served on the
// data port only).
func (s *Server) StartAdmin() (net.Addr, error) {
	if s.cfg.AdminListen == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", s.cfg.AdminListen)
	if err != nil {
		return nil, fmt.Errorf("BOXPROXY_ADMIN_LISTEN: %w", err)
	}
	go func() {
		if err := s.ServeAdmin(ln); err != nil {
			s.log.Error().Str("error", err.Error()).Msg("admin listener failed")
		}
	}()
	s.log.Info().Str("admin_listen", ln.Addr().String()).Msg("admin listener serving /healthz, /readyz, /metrics")
	return ln.Addr(), nil
}

// StopAdmin closes the admin listener, letting answers in progress finish
// until ctx ends. It is called after the data port has drained, so that the
// probes keep answering while requests finish.
func (s *Server) StopAdmin(ctx context.Context) error {
	s.admin.mu.Lock()
	h := s.admin.http
	s.admin.mu.Unlock()
	if h == nil {
		return nil
	}
	if err := h.Shutdown(ctx); err != nil {
		_ = h.Close()
		return err
	}
	return nil
}

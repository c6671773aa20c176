package server

import (
	"net/http"

	"github.com/boxproxy/boxproxy/apierr"
	"github.com/boxproxy/boxproxy/auth"
)

// oauthWeb serves /auth/login and /auth/callback. (Skeleton: being completed.)
type oauthWeb struct {
	s *Server
	o *auth.OAuth
}

func newOAuthWeb(s *Server, o *auth.OAuth) *oauthWeb { return &oauthWeb{s: s, o: o} }

func (h *oauthWeb) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	apierr.Write(w, http.StatusNotImplemented, "not_implemented", "OAuth login is not implemented yet")
}

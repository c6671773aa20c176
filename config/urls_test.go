package config_test

import (
	"strings"
	"testing"

	"github.com/boxproxy/boxproxy/config"
)

// A query or fragment makes no sense in the URL variables (boxproxy adds
// paths and queries of its own) and is where a key gets pasted
// (https://api.example.com/?k=SECRET): it is a configuration error that
// names the variable and quotes nothing, and so never reaches the start-up
// line.
func TestConfigURLsWithAQueryOrFragmentAreRefused(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"API_URL", "UPLOAD_URL", "TOKEN_URL", "PUBLIC_URL"} {
		for _, tail := range []string{"?k=" + secret, "/?" + secret, "#" + secret, "?", "#"} {
			v := "https://example.com/base" + tail
			_, err := config.Load(env(ccg, "BOXPROXY_"+name+"="+v))
			if err == nil {
				t.Errorf("%s=%s accepted", name, v)
				continue
			}
			if msg := err.Error(); !strings.Contains(msg, "BOXPROXY_"+name+": ") || !strings.Contains(msg, "query or fragment") || strings.Contains(msg, marker) {
				t.Errorf("%s=%s: %q; want an error naming the variable and the query or fragment, quoting nothing", name, v, msg)
			}
		}
		if _, err := config.Load(env(ccg, "BOXPROXY_"+name+"=https://example.com/base/")); err != nil {
			t.Errorf("%s without a query: %v", name, err)
		}
	}
}

// Box's authorization page takes parameters of its own (scope=…): the
// authorize URL may carry a query, which the login link keeps before
// boxproxy's own parameters; a fragment is still refused.
func TestConfigAuthorizeURLMayCarryAQueryButNoFragment(t *testing.T) {
	t.Parallel()
	c, err := config.Load(env(ccg, "BOXPROXY_AUTHORIZE_URL=https://account.box.com/api/oauth2/authorize?scope=root_readonly"))
	if err != nil {
		t.Fatalf("an authorize URL with a query: %v", err)
	}
	if c.AuthorizeURL != "https://account.box.com/api/oauth2/authorize?scope=root_readonly" {
		t.Errorf("AuthorizeURL = %q", c.AuthorizeURL)
	}
	for _, tail := range []string{"#" + secret, "?a=1#x", "#"} {
		_, err := config.Load(env(ccg, "BOXPROXY_AUTHORIZE_URL=https://account.box.com/authorize"+tail))
		if err == nil || !strings.Contains(err.Error(), "BOXPROXY_AUTHORIZE_URL: ") || !strings.Contains(err.Error(), "fragment") || strings.Contains(err.Error(), marker) {
			t.Errorf("authorize URL with %q: %v; want an error naming the variable and the fragment, quoting nothing", tail, err)
		}
	}
}

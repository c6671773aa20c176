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
	for _, name := range []string{"API_URL", "UPLOAD_URL", "TOKEN_URL", "AUTHORIZE_URL", "PUBLIC_URL"} {
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

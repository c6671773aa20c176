package integration_test

import (
	"strings"
	"testing"
)

// A key pasted into a URL variable's query (or fragment) is refused at start,
// naming the variable; the start-up line, which names the upstreams, never
// shows it.
func TestURLVariablesWithAQueryAreRefusedAndNeverLogged(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	key := "k-" + randomHex(t, 16)
	for _, name := range []string{"BOXPROXY_API_URL", "BOXPROXY_UPLOAD_URL", "BOXPROXY_TOKEN_URL"} {
		for _, tail := range []string{"?k=" + key, "#" + key} {
			v, _ := envValue(ccgEnv(box), name)
			for _, args := range [][]string{nil, {"check"}} {
				stdout, stderr, code := runBinary(t, with(ccgEnv(box), "BOXPROXY_LISTEN=127.0.0.1:0", name+"="+v+tail), args...)
				lines := opsHumanLines(stderr)
				if code != 1 || len(lines) != 1 || !strings.Contains(lines[0], name+": ") || !strings.Contains(lines[0], "query or fragment") {
					t.Errorf("%s=…%s, boxproxy %v: exit %d, stderr %q; want exit 1 and one line naming %s", name, tail[:1], args, code, stderr, name)
				}
				assertNoSecretPieces(t, "output", stdout+stderr, key)
			}
		}
	}
}

//go:build unix

package integration_test

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// `BOXPROXY_CLIENT_SECRET_FILE=/dev/zero boxproxy check` (or a FIFO, or the
// same in any path variable) is one prompt line naming the variable: not a
// process that eats all memory or waits for ever.
func TestCheckRefusesADeviceOrFIFOInAPathVariableAtOnce(t *testing.T) {
	t.Parallel()
	box := startBox(t)
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	noSecret := opsEnvWithout(ccgEnv(box), "BOXPROXY_CLIENT_SECRET")
	for _, path := range []string{"/dev/zero", fifo} {
		for _, v := range []struct {
			name string
			env  []string
		}{
			{"BOXPROXY_CLIENT_SECRET_FILE", with(noSecret, "BOXPROXY_CLIENT_SECRET_FILE="+path)},
			{"BOXPROXY_JWT_CONFIG", with(boxEnv(box), "BOXPROXY_JWT_CONFIG="+path)},
			{"BOXPROXY_UPSTREAM_CA_FILE", with(opsEnvWithout(ccgEnv(box), "BOXPROXY_UPSTREAM_CA_FILE"), "BOXPROXY_UPSTREAM_CA_FILE="+path)},
		} {
			start := time.Now()
			stdout, stderr, code := runBinary(t, v.env, "check")
			lines := opsHumanLines(stderr)
			if code != 1 || stdout != "" || len(lines) != 1 || !strings.Contains(lines[0], v.name+": ") || !strings.Contains(lines[0], "not a regular file") {
				t.Errorf("%s=%s check: exit %d after %v, stdout %q, stderr %q; want exit 1 and one line naming the variable",
					v.name, path, code, time.Since(start).Round(time.Millisecond), stdout, stderr)
			}
			if strings.Contains(stderr, path) {
				t.Errorf("%s=%s check: %q names the path", v.name, path, stderr)
			}
		}
	}
}

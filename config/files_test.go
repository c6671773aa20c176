//go:build unix

package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/boxproxy/boxproxy/config"
)

// A path variable that names a device, a FIFO or a huge file is a clear,
// prompt configuration error naming the variable: never a read until memory
// runs out, never a start that waits for ever, never the path in the error.
func TestConfigFilesThatAreNotSmallRegularFilesAreRefusedAtOnce(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo-"+marker)
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big-"+marker)
	if err := os.WriteFile(big, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(big, 64<<20); err != nil { // sparse: no disk used
		t.Fatal(err)
	}
	noSecret := []string{"BOXPROXY_CLIENT_ID=cid", "BOXPROXY_ENTERPRISE_ID=500100"}
	jwt := []string{"BOXPROXY_JWT_KEY_ID=kid1", "BOXPROXY_CLIENT_ID=cid", "BOXPROXY_CLIENT_SECRET=" + secret, "BOXPROXY_USER_ID=2001"}
	for _, v := range []struct {
		name string
		env  func(path string) []string
	}{
		{"BOXPROXY_CLIENT_SECRET_FILE", func(p string) []string { return env(noSecret, "BOXPROXY_CLIENT_SECRET_FILE="+p) }},
		{"BOXPROXY_INBOUND_KEY_FILE", func(p string) []string { return env(ccg, "BOXPROXY_INBOUND_KEY_FILE="+p) }},
		{"BOXPROXY_JWT_CONFIG", func(p string) []string { return []string{"BOXPROXY_JWT_CONFIG=" + p} }},
		{"BOXPROXY_JWT_PRIVATE_KEY", func(p string) []string { return env(jwt, "BOXPROXY_JWT_PRIVATE_KEY="+p) }},
		{"BOXPROXY_UPSTREAM_CA_FILE", func(p string) []string { return env(ccg, "BOXPROXY_UPSTREAM_CA_FILE="+p) }},
	} {
		for _, f := range []struct{ kind, path, want string }{
			{"a device", "/dev/zero", "not a regular file"},
			{"a FIFO", fifo, "not a regular file"},
			{"a 64 MiB file", big, "larger than"},
		} {
			t.Run(v.name+" names "+f.kind, func(t *testing.T) {
				done := make(chan error, 1)
				go func() { _, err := config.Load(v.env(f.path)); done <- err }()
				var err error
				select {
				case err = <-done:
				case <-time.After(10 * time.Second):
					t.Fatal("Load did not return within 10s")
				}
				if err == nil {
					t.Fatal("Load accepted it")
				}
				msg := err.Error()
				if !strings.Contains(msg, v.name+": ") || !strings.Contains(msg, f.want) {
					t.Errorf("%q does not name %s and say %q", msg, v.name, f.want)
				}
				if strings.Contains(msg, marker) || strings.Contains(msg, "/dev/zero") {
					t.Errorf("%q names the path", msg)
				}
			})
		}
	}
}

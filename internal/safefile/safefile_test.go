//go:build unix

package safefile

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestReadRefusesWhatIsNotASmallRegularFile(t *testing.T) {
	dir := t.TempDir()
	small := filepath.Join(dir, "small")
	if err := os.WriteFile(small, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(big, 2<<20); err != nil { // sparse: no disk used
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if data, err := Read(small, 5); err != nil || string(data) != "hello" {
		t.Fatalf("Read(small) = %q, %v", data, err)
	}
	for _, c := range []struct{ name, path, want string }{
		{"missing", filepath.Join(dir, "none"), "no such file"},
		{"directory", dir, "is a directory"},
		{"device", "/dev/zero", "not a regular file"},
		{"FIFO", fifo, "not a regular file"},
		{"over the limit", big, "larger than 1 MiB"},
		{"one byte over", small, "larger than 4 bytes"},
	} {
		limit := int64(MaxSize)
		if c.name == "one byte over" {
			limit = 4
		}
		done := make(chan error, 1)
		go func() { _, err := Read(c.path, limit); done <- err }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s: err = %v, want %q", c.name, err, c.want)
			}
			if err != nil && strings.Contains(err.Error(), dir) {
				t.Errorf("%s: %q names the path", c.name, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: Read did not return within 5s", c.name)
		}
	}
}

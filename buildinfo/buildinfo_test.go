package buildinfo_test

import (
	"runtime"
	"strings"
	"testing"

	"github.com/boxproxy/boxproxy/buildinfo"
)

func TestBuildInfoReadsTheBinaryAndALinkTimeVersionWins(t *testing.T) {
	i := buildinfo.Read("")
	if i.GoVersion != runtime.Version() || i.Version == "" || i.Revision == "" {
		t.Errorf("Read() = %+v", i)
	}
	for _, o := range []string{"", "dev"} {
		if got := buildinfo.Read(o).Version; got != i.Version {
			t.Errorf("Read(%q).Version = %q, want the build information's %q", o, got, i.Version)
		}
	}
	if got := buildinfo.Read("v1.2.3").Version; got != "v1.2.3" {
		t.Errorf("Read(v1.2.3).Version = %q", got)
	}
	s := buildinfo.Info{Version: "v1.2.3", Revision: "abc", Modified: true, GoVersion: "go1.26.8"}.String()
	if want := "boxproxy v1.2.3 revision abc (modified) go1.26.8 " + runtime.GOOS + "/" + runtime.GOARCH; s != want || strings.Contains(s, "\n") {
		t.Errorf("String() = %q, want %q", s, want)
	}
}

// Package buildinfo says which build of boxproxy is running: the module
// version and VCS revision that the Go toolchain embeds in the binary
// (runtime/debug.ReadBuildInfo, the same data `go version -m` shows) and the
// Go version it was built with.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Info describes one build.
type Info struct {
	Version   string // module version, e.g. v1.2.0 or v0.0.0-20261201170000-abcdef123456+dirty; "(devel)" when unknown
	Revision  string // VCS revision (commit hash); "unknown" when built without VCS information
	Time      string // VCS commit time, RFC 3339; "" when unknown
	Modified  bool   // the work tree had uncommitted changes
	GoVersion string // e.g. go1.26.8
}

// Read returns this binary's build information. A non-empty override (set at
// link time, e.g. -ldflags "-X main.version=v1.2.0" for builds without VCS
// data such as container builds) replaces the module version.
func Read(override string) Info {
	i := Info{Version: "(devel)", Revision: "unknown", GoVersion: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v := bi.Main.Version; v != "" {
			i.Version = v
		}
		if bi.GoVersion != "" {
			i.GoVersion = bi.GoVersion
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				i.Revision = s.Value
			case "vcs.time":
				i.Time = s.Value
			case "vcs.modified":
				i.Modified = s.Value == "true"
			}
		}
	}
	if override != "" && override != "dev" {
		i.Version = override
	}
	return i
}

// String is the line `boxproxy version` prints.
func (i Info) String() string {
	rev := i.Revision
	if i.Modified {
		rev += " (modified)"
	}
	return fmt.Sprintf("boxproxy %s revision %s %s %s/%s", i.Version, rev, i.GoVersion, runtime.GOOS, runtime.GOARCH)
}

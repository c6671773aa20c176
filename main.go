// Command boxproxy is a local authenticating reverse proxy for the Box API.
package main

import (
	"os"
	"runtime/debug"

	"github.com/boxproxy/boxproxy/cli"
)

// version, when set at link time (-ldflags "-X main.version=v1.2.0"), replaces
// the module version of the build information, for builds without VCS data.
var version string

// gcPercent paces the garbage collector when GOGC is not set: a collection
// once the heap has grown by 150 % of what the last one left live, instead
// of Go's 100 %. boxproxy's live heap is 1–2 MiB, so Go's 4 MiB minimum goal
// sets the pace, and what each request leaves behind (its record in the
// request's context, the attempt's copy before the token is set) made it
// collect about a fifth more often than a bare httputil.ReverseProxy; the
// collections were the whole difference in CPU per request. The price is up
// to half as much heap again under load, and nothing at rest or during a
// transfer (README, Performance). GOGC, when set, and GOMEMLIMIT rule as
// usual.
const gcPercent = 150

func main() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(gcPercent)
	}
	os.Exit(cli.Main(os.Args[1:], os.Environ(), os.Stdout, os.Stderr, version))
}

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

// gcPercent paces the garbage collector when GOGC is unset or empty: Go's
// default is 100. boxproxy's live heap is 1–2 MiB, so the collector's minimum
// goal sets the pace: 4 MiB × GOGC/100, 6 MiB here. What each request leaves
// behind by design (its record in the request's context, the attempt's copy
// before the token is set) made boxproxy collect 18 % more often than a bare
// httputil.ReverseProxy at the same GOGC; at 150 it collects less often than
// the bare proxy at 100 and uses about as much CPU per request. The price is
// heap: a few MiB more under load and up to 1 MiB during an HTTPS upload,
// nothing at rest (README, Operations and Performance). A GOGC that is set (a
// number or off) and GOMEMLIMIT rule as Go reads them.
const gcPercent = 150

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	os.Exit(cli.Main(os.Args[1:], os.Environ(), os.Stdout, os.Stderr, version))
}

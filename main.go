// Command boxproxy is a local authenticating reverse proxy for the Box API.
package main

import (
	"os"

	"github.com/boxproxy/boxproxy/cli"
)

// version, when set at link time (-ldflags "-X main.version=v1.2.0"), replaces
// the module version of the build information, for builds without VCS data.
var version string

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Environ(), os.Stdout, os.Stderr, version))
}

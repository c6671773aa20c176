// Command boxproxy is a local authenticating reverse proxy for the Box API.
package main

import (
	"os"

	"github.com/boxproxy/boxproxy/cli"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Environ(), os.Stdout, os.Stderr, version))
}

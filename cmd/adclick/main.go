// Command adclick is the tool for people: `adclick dev` runs a whole
// cluster in one process, `adclick etcd` runs a single-node etcd for running
// the separate binaries by hand.
package main

import (
	"fmt"
	"os"
)

const usage = `adclick: tools for an adclick cluster

Usage:
  adclick dev  [flags]   whole cluster in one process: embedded etcd, router, aggregators, reducers
  adclick etcd [flags]   single-node embedded etcd server, for running router/aggregator/reducer by hand
  adclick load [flags]   load generator: streams clicks into a router, then verifies every count
  adclick admin VERB     cluster operations: status, owner, drain, remove

Run 'adclick <command> --help' for the flags of a command.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var code int
	switch os.Args[1] {
	case "dev":
		code = runDev(os.Args[2:])
	case "etcd":
		code = runEtcd(os.Args[2:])
	case "load":
		code = runLoad(os.Args[2:])
	case "admin":
		code = runAdmin(os.Args[2:])
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "adclick: unknown command %q\n\n%s", os.Args[1], usage)
		code = 2
	}
	os.Exit(code)
}

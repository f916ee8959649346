// Command aggregator runs one aggregator node of an adclick cluster. See README.md,
// "Running a cluster by hand", and `aggregator --help` for its flags.
package main

import (
	"os"

	"github.com/adclick/adclick/pkg/node"
)

func main() { os.Exit(node.Main(node.RoleAggregator, os.Args[1:])) }

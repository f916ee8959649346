// Command router runs one router node of an adclick cluster. See README.md,
// "Running a cluster by hand", and `router --help` for its flags.
package main

import (
	"os"

	"github.com/adclick/adclick/pkg/node"
)

func main() { os.Exit(node.Main(node.RoleRouter, os.Args[1:])) }

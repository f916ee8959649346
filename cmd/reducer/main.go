// Command reducer runs one reducer node of an adclick cluster. See README.md,
// "Running a cluster by hand", and `reducer --help` for its flags.
package main

import (
	"os"

	"github.com/adclick/adclick/pkg/node"
)

func main() { os.Exit(node.Main(node.RoleReducer, os.Args[1:])) }

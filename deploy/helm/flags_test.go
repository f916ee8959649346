package chart_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// definedFlags parses the Go sources under pkg/ and cmd/ and returns every
// flag name they define on a flag.FlagSet (fs.StringVar(&v, "name", ...),
// fs.Bool("name", ...), fs.Var(v, "name", ...), fs.Func("name", ...)), so
// the chart and the compose file cannot pass a flag no binary has.
func definedFlags(t *testing.T) map[string]bool {
	t.Helper()
	nameArg := map[string]int{"Var": 1, "Func": 0, "BoolFunc": 0, "TextVar": 1}
	for _, typ := range []string{"String", "Bool", "Int", "Int64", "Uint", "Uint64", "Float64", "Duration"} {
		nameArg[typ], nameArg[typ+"Var"] = 0, 1
	}
	flags := map[string]bool{}
	fset := token.NewFileSet()
	for _, dir := range []string{"../../pkg", "../../cmd"} {
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
			if err != nil {
				return err
			}
			ast.Inspect(f, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				i, ok := nameArg[sel.Sel.Name]
				if !ok || len(call.Args) < i+2 {
					return true
				}
				if lit, ok := call.Args[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
					name, _ := strconv.Unquote(lit.Value)
					flags[name] = true
				}
				return true
			})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, must := range []string{"etcd-endpoints", "grpc-addr", "data-dir", "allowed-lateness"} {
		if !flags[must] {
			t.Fatalf("flag --%s not found in the code: the parser missed how flags are defined", must)
		}
	}
	return flags
}

// TestChartAndComposeUseDefinedFlags: every --flag in the rendered chart
// (container args and the drain hook) and in the compose file exists.
func TestChartAndComposeUseDefinedFlags(t *testing.T) {
	defined := definedFlags(t)
	check := func(where string, args []string) {
		t.Helper()
		for _, a := range args {
			if !strings.HasPrefix(a, "--") {
				continue
			}
			name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
			if !defined[name] {
				t.Errorf("%s: --%s is not a flag of any adclick binary", where, name)
			}
		}
	}
	for _, f := range valuesFiles(t) {
		out, err := render(t, f)
		if err != nil {
			t.Fatal(err)
		}
		r := decode(t, out)
		for _, w := range r.workloads() {
			for _, c := range w.pod.Spec.Containers {
				check(filepath.Base(f)+" "+w.name+"/"+c.Name, c.Args)
				if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Exec != nil {
					check(filepath.Base(f)+" "+w.name+" preStop", c.Lifecycle.PreStop.Exec.Command)
				}
			}
		}
	}

	var compose struct {
		Services map[string]struct {
			Command []string `json:"command"`
		} `json:"services"`
	}
	data, err := os.ReadFile("../compose/docker-compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &compose); err != nil {
		t.Fatalf("docker-compose.yaml: %v", err)
	}
	if len(compose.Services) != 8 {
		t.Errorf("docker-compose.yaml has %d services, want etcd, 2 routers, 3 aggregators, 2 reducers", len(compose.Services))
	}
	for name, s := range compose.Services {
		check("docker-compose.yaml "+name, s.Command)
	}
}

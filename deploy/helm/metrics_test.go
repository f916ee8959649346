package chart_test

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/yaml"
)

// registeredMetrics parses the Go sources under pkg/ and cmd/ and returns
// every metric name they register: each prometheus.*Opts literal's Name,
// joined with its Namespace and Subsystem as client_golang does, and the
// series a histogram or summary adds.
func registeredMetrics(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
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
				lit, ok := n.(*ast.CompositeLit)
				if !ok {
					return true
				}
				sel, ok := lit.Type.(*ast.SelectorExpr)
				if !ok || !strings.HasSuffix(sel.Sel.Name, "Opts") {
					return true
				}
				if x, ok := sel.X.(*ast.Ident); !ok || x.Name != "prometheus" {
					return true
				}
				fields := map[string]string{}
				for _, e := range lit.Elts {
					kv, ok := e.(*ast.KeyValueExpr)
					if !ok {
						continue
					}
					key, _ := kv.Key.(*ast.Ident)
					if key == nil || (key.Name != "Name" && key.Name != "Namespace" && key.Name != "Subsystem") {
						continue
					}
					bl, ok := kv.Value.(*ast.BasicLit)
					if !ok || bl.Kind != token.STRING {
						t.Fatalf("%s: %s of a metric is not a string literal; teach this test to read it", fset.Position(kv.Pos()), key.Name)
					}
					fields[key.Name], _ = strconv.Unquote(bl.Value)
				}
				if fields["Name"] == "" {
					return true
				}
				name := prometheus.BuildFQName(fields["Namespace"], fields["Subsystem"], fields["Name"])
				names[name] = true
				switch sel.Sel.Name {
				case "HistogramOpts":
					names[name+"_bucket"], names[name+"_sum"], names[name+"_count"] = true, true, true
				case "SummaryOpts":
					names[name+"_sum"], names[name+"_count"] = true, true
				}
				return true
			})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(names) < 20 {
		t.Fatalf("found only %d metric names in the code: the parser missed how metrics are declared", len(names))
	}
	return names
}

// metricRef finds metric names in a PromQL expression: our own, and up.
var metricRef = regexp.MustCompile(`\b(adclick_[a-z0-9_]+|up)\b`)

// TestQueriesUseRegisteredMetrics: every metric the dashboard and the alert
// rules query is one the code registers, so no panel or alert stays silent
// because of a typo or a rename.
func TestQueriesUseRegisteredMetrics(t *testing.T) {
	registered := registeredMetrics(t)
	check := func(where, expr string) {
		t.Helper()
		refs := metricRef.FindAllString(expr, -1)
		if len(refs) == 0 {
			t.Errorf("%s: query %q uses no adclick metric", where, expr)
		}
		for _, m := range refs {
			if m != "up" && !registered[m] {
				t.Errorf("%s: %s is not registered by the code (query %q)", where, m, expr)
			}
		}
	}

	var dash struct {
		Panels []struct {
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	data, err := os.ReadFile(filepath.Join(chartDir, "files", "dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("dashboard.json: %v", err)
	}
	var titles []string
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		titles = append(titles, p.Title)
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			check("dashboard panel "+strconv.Quote(p.Title), q.Expr)
		}
	}
	for _, v := range dash.Templating.List {
		if v.Definition != "" {
			check("dashboard variable "+v.Name, v.Definition)
		}
	}
	for _, want := range []string{"Ingest rate", "Ack latency", "Minute-close lag: open minutes", "Late clicks", "Outbox", "Dedup ids", "Per-aggregator load", "Hot grants", "Reducer query latency"} {
		if !slices.Contains(titles, want) {
			t.Errorf("dashboard lacks the panel %q", want)
		}
	}

	var rules ruleFile
	data, err = os.ReadFile(filepath.Join(chartDir, "files", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(data, &rules); err != nil {
		t.Fatalf("alerts.yaml: %v", err)
	}
	var alerts []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("alert %s: needs a severity label and a summary", r.Alert)
			}
			check("alert "+r.Alert, r.Expr)
		}
	}
	for _, want := range []string{"AdclickNodeDown", "AdclickStorageFailed", "AdclickMinuteCloseLag", "AdclickOutboxGrowing"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("alerts lack %s", want)
		}
	}
	t.Logf("%d panels and %d alerts query only registered metrics (%d names registered)", len(titles), len(alerts), len(registered))
}

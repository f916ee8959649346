package chart_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

const (
	chartDir  = "adclick"
	release   = "adclick"
	namespace = "ads"
)

// helm finds the helm binary, or skips: CI installs it (`make helm`).
func helm(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), "bin", "helm")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Skip("helm is not installed: run `make helm` (go install helm.sh/helm/v3/cmd/helm@v3.22.0); CI does")
	return ""
}

// valuesFiles are the chart's ci/*-values.yaml: each is rendered and checked.
func valuesFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(chartDir, "ci", "*-values.yaml"))
	if err != nil || len(files) < 3 {
		t.Fatalf("want at least 3 ci/*-values.yaml, got %v (%v)", files, err)
	}
	return files
}

// run runs helm with args and returns stdout, or the error with stderr.
func run(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(helm(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("helm %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes(), nil
}

// render runs helm template with a values file and extra --set flags.
func render(t *testing.T, valuesFile string, set ...string) ([]byte, error) {
	t.Helper()
	args := []string{"template", release, chartDir, "--namespace", namespace, "-f", valuesFile}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	return run(t, args...)
}

// rendered is every object of one rendering, decoded strictly.
type rendered struct {
	deployments  []*appsv1.Deployment
	statefulSets []*appsv1.StatefulSet
	services     []*corev1.Service
	pdbs         []*policyv1.PodDisruptionBudget
	configMaps   []*corev1.ConfigMap
	monitors     []*serviceMonitor
	rules        []*prometheusRule
	names        []string // kind/name, in order
}

// serviceMonitor and prometheusRule are the prometheus-operator fields the
// chart uses (monitoring.coreos.com/v1); strict decoding rejects any other.
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		JobLabel          string `json:"jobLabel"`
		NamespaceSelector struct {
			MatchNames []string `json:"matchNames"`
		} `json:"namespaceSelector"`
		Selector  metav1.LabelSelector `json:"selector"`
		Endpoints []struct {
			Port     string `json:"port"`
			Path     string `json:"path"`
			Interval string `json:"interval"`
		} `json:"endpoints"`
	} `json:"spec"`
}

type prometheusRule struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              ruleFile `json:"spec"`
}

// ruleFile is a Prometheus rule file (files/alerts.yaml).
type ruleFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Alert       string            `json:"alert"`
			Expr        string            `json:"expr"`
			For         string            `json:"for,omitempty"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"rules"`
	} `json:"groups"`
}

var docSeparator = regexp.MustCompile(`(?m)^---\s*$`)

// decode splits helm's output into documents and decodes each strictly
// (unknown or duplicate fields fail) into the API type of its kind.
func decode(t *testing.T, out []byte) *rendered {
	t.Helper()
	r := &rendered{}
	for _, doc := range docSeparator.Split(string(out), -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatalf("document is not YAML: %v\n%s", err, doc)
		}
		var obj metav1.Object
		want := map[string]string{
			"Deployment": "apps/v1", "StatefulSet": "apps/v1", "Service": "v1", "ConfigMap": "v1",
			"PodDisruptionBudget": "policy/v1", "ServiceMonitor": "monitoring.coreos.com/v1", "PrometheusRule": "monitoring.coreos.com/v1",
		}[tm.Kind]
		if want == "" || tm.APIVersion != want {
			t.Fatalf("unexpected object %s %s (want a known kind and its apiVersion)\n%s", tm.APIVersion, tm.Kind, doc)
		}
		switch tm.Kind {
		case "Deployment":
			o := &appsv1.Deployment{}
			strict(t, doc, o)
			r.deployments, obj = append(r.deployments, o), o
		case "StatefulSet":
			o := &appsv1.StatefulSet{}
			strict(t, doc, o)
			r.statefulSets, obj = append(r.statefulSets, o), o
		case "Service":
			o := &corev1.Service{}
			strict(t, doc, o)
			r.services, obj = append(r.services, o), o
		case "PodDisruptionBudget":
			o := &policyv1.PodDisruptionBudget{}
			strict(t, doc, o)
			r.pdbs, obj = append(r.pdbs, o), o
		case "ConfigMap":
			o := &corev1.ConfigMap{}
			strict(t, doc, o)
			r.configMaps, obj = append(r.configMaps, o), o
		case "ServiceMonitor":
			o := &serviceMonitor{}
			strict(t, doc, o)
			r.monitors, obj = append(r.monitors, o), o
		case "PrometheusRule":
			o := &prometheusRule{}
			strict(t, doc, o)
			r.rules, obj = append(r.rules, o), o
		}
		if obj.GetName() == "" {
			t.Fatalf("%s without a name", tm.Kind)
		}
		r.names = append(r.names, tm.Kind+"/"+obj.GetName())
	}
	return r
}

func strict(t *testing.T, doc string, into any) {
	t.Helper()
	if err := yaml.UnmarshalStrict([]byte(doc), into); err != nil {
		t.Fatalf("strict decode into %T: %v\n%s", into, err, doc)
	}
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// values reads the chart's values.yaml overlaid with a ci values file (a
// shallow-per-key merge is enough for the keys the checks read).
func values(t *testing.T, valuesFile string) map[string]any {
	t.Helper()
	read := func(path string) map[string]any {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]any{}
		if err := yaml.Unmarshal(data, &m); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return m
	}
	return merge(read(filepath.Join(chartDir, "values.yaml")), read(valuesFile))
}

func merge(base, over map[string]any) map[string]any {
	for k, v := range over {
		if bm, ok := base[k].(map[string]any); ok {
			if om, ok := v.(map[string]any); ok {
				base[k] = merge(bm, om)
				continue
			}
		}
		base[k] = v
	}
	return base
}

// value reads a dotted path of numbers or strings out of values.
func value(t *testing.T, vals map[string]any, path string) any {
	t.Helper()
	var cur any = vals
	for _, k := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			t.Fatalf("values: %s is not a map", path)
		}
		cur = m[k]
	}
	return cur
}

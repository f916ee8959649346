package chart_test

import (
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// workload is a Deployment or StatefulSet reduced to what the checks need.
type workload struct {
	kind, name string
	selector   *metav1.LabelSelector
	pod        corev1.PodTemplateSpec
	replicas   int32
}

func (r *rendered) workloads() []workload {
	var out []workload
	for _, d := range r.deployments {
		out = append(out, workload{"Deployment", d.Name, d.Spec.Selector, d.Spec.Template, *d.Spec.Replicas})
	}
	for _, s := range r.statefulSets {
		out = append(out, workload{"StatefulSet", s.Name, s.Spec.Selector, s.Spec.Template, *s.Spec.Replicas})
	}
	return out
}

func TestLintStrict(t *testing.T) {
	for _, f := range valuesFiles(t) {
		if _, err := run(t, "lint", "--strict", chartDir, "-f", f); err != nil {
			t.Error(err)
		}
	}
}

// TestRenderedObjects renders every ci values file and checks each object
// and how they refer to one another.
func TestRenderedObjects(t *testing.T) {
	for _, f := range valuesFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			out, err := render(t, f)
			if err != nil {
				t.Fatal(err)
			}
			r := decode(t, out)
			t.Logf("%d objects: %s", len(r.names), strings.Join(r.names, ", "))
			vals := values(t, f)
			checkSelectors(t, r)
			checkServices(t, r)
			checkContainers(t, r, vals)
			checkAggregators(t, r, vals)
			checkEtcd(t, r, vals)
			checkMonitoring(t, r, vals)
		})
	}
}

// TestRefusesShortGracePeriod: a grace period that a drain could outlast
// must not render.
func TestRefusesShortGracePeriod(t *testing.T) {
	f := filepath.Join(chartDir, "ci", "default-values.yaml")
	_, err := render(t, f, "aggregator.drainSeconds=400", "aggregator.terminationGracePeriodSeconds=400")
	if err == nil || !strings.Contains(err.Error(), "terminationGracePeriodSeconds") {
		t.Fatalf("rendered with a grace period not above the drain time: %v", err)
	}
	_, err = render(t, f, "aggregator.replicas=2", "aggregator.initialReplicas=3")
	if err == nil || !strings.Contains(err.Error(), "initialReplicas") {
		t.Fatalf("rendered a founding ring naming pods that do not exist: %v", err)
	}
}

// checkSelectors: every workload's selector matches its pod labels, and
// every PodDisruptionBudget selects exactly one workload.
func checkSelectors(t *testing.T, r *rendered) {
	t.Helper()
	for _, w := range r.workloads() {
		sel, err := metav1.LabelSelectorAsSelector(w.selector)
		if err != nil || sel.Empty() {
			t.Errorf("%s %s: selector %v: %v", w.kind, w.name, w.selector, err)
			continue
		}
		if !sel.Matches(labels.Set(w.pod.Labels)) {
			t.Errorf("%s %s: selector %s does not match its pod labels %v", w.kind, w.name, sel, w.pod.Labels)
		}
	}
	if len(r.pdbs) != 3 {
		t.Errorf("%d PodDisruptionBudgets, want one each for routers, aggregators, reducers", len(r.pdbs))
	}
	for _, p := range r.pdbs {
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		if err != nil {
			t.Fatal(err)
		}
		var hit []string
		for _, w := range r.workloads() {
			if sel.Matches(labels.Set(w.pod.Labels)) {
				hit = append(hit, w.name)
			}
		}
		if len(hit) != 1 {
			t.Errorf("PodDisruptionBudget %s selects %v, want exactly one workload", p.Name, hit)
		}
	}
}

// checkServices: every Service selects pods, and each of its ports targets
// a container port those pods have, with the same protocol.
func checkServices(t *testing.T, r *rendered) {
	t.Helper()
	for _, s := range r.services {
		var pods []workload
		for _, w := range r.workloads() {
			if labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(w.pod.Labels)) {
				pods = append(pods, w)
			}
		}
		if len(s.Spec.Selector) == 0 || len(pods) == 0 {
			t.Errorf("Service %s selects no pods (selector %v)", s.Name, s.Spec.Selector)
			continue
		}
		for _, sp := range s.Spec.Ports {
			for _, w := range pods {
				if !hasPort(w.pod.Spec.Containers, sp) {
					t.Errorf("Service %s port %s (%s, target %s): no such container port in %s %s", s.Name, sp.Name, sp.Protocol, sp.TargetPort.String(), w.kind, w.name)
				}
			}
		}
	}
	for _, s := range r.statefulSets {
		svc := findService(r, s.Spec.ServiceName)
		if svc == nil || svc.Spec.ClusterIP != corev1.ClusterIPNone {
			t.Errorf("StatefulSet %s: serviceName %q is not a headless Service of the chart", s.Name, s.Spec.ServiceName)
		}
	}
	gossip := findService(r, release+"-gossip")
	if gossip == nil {
		t.Fatal("no gossip Service")
	}
	var protos []corev1.Protocol
	for _, p := range gossip.Spec.Ports {
		protos = append(protos, p.Protocol)
	}
	if gossip.Spec.ClusterIP != corev1.ClusterIPNone || !slices.Contains(protos, corev1.ProtocolTCP) || !slices.Contains(protos, corev1.ProtocolUDP) {
		t.Errorf("gossip Service: want headless with TCP and UDP ports, got clusterIP %q protocols %v", gossip.Spec.ClusterIP, protos)
	}
}

func hasPort(cs []corev1.Container, sp corev1.ServicePort) bool {
	for _, c := range cs {
		for _, cp := range c.Ports {
			byName := sp.TargetPort.StrVal != "" && cp.Name == sp.TargetPort.StrVal
			byNumber := sp.TargetPort.StrVal == "" && cp.ContainerPort == sp.TargetPort.IntVal
			if (byName || byNumber) && cp.Protocol == sp.Protocol {
				return true
			}
		}
	}
	return false
}

func findService(r *rendered, name string) *corev1.Service {
	for _, s := range r.services {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// serverRoles are the containers that take the servers' common flags.
var serverRoles = []string{"router", "aggregator", "reducer"}

// checkContainers: ports match the address flags, probes use gRPC health
// on the gRPC port, images and security settings are as the chart promises.
func checkContainers(t *testing.T, r *rendered, vals map[string]any) {
	t.Helper()
	repo, tag := value(t, vals, "image.repository"), value(t, vals, "image.tag")
	for _, w := range r.workloads() {
		spec := w.pod.Spec
		if sc := spec.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
			t.Errorf("%s: pod must run as non-root", w.name)
		}
		for _, c := range spec.Containers {
			sc := c.SecurityContext
			if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
				sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
				sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
				t.Errorf("%s/%s: want readOnlyRootFilesystem, no privilege escalation, capabilities drop ALL", w.name, c.Name)
			}
			if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
				t.Errorf("%s/%s: no cpu/memory requests", w.name, c.Name)
			}
			binary := c.Name
			if c.Name == "etcd" {
				binary = "adclick"
			}
			if want := fmt.Sprintf("%v/%s:%v", repo, binary, tag); c.Image != want {
				t.Errorf("%s/%s: image %s, want %s", w.name, c.Name, c.Image, want)
			}
			if !slices.Contains(serverRoles, c.Name) {
				continue
			}
			flags := flagMap(t, c.Args)
			ports := map[string]int32{}
			for _, p := range c.Ports {
				ports[p.Name] = p.ContainerPort
			}
			for flag, names := range map[string][]string{
				"grpc-addr": {"grpc"}, "http-addr": {"http"}, "gossip-addr": {"gossip-tcp", "gossip-udp"},
				"advertise-addr": {"grpc"}, "gossip-advertise-addr": {"gossip-tcp"},
			} {
				port := portOf(t, w.name, flag, flags[flag])
				for _, n := range names {
					if ports[n] != port {
						t.Errorf("%s/%s: --%s=%s but container port %q is %d", w.name, c.Name, flag, flags[flag], n, ports[n])
					}
				}
			}
			for what, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe, "startup": c.StartupProbe} {
				if p == nil {
					if what != "startup" || c.Name != "router" {
						t.Errorf("%s/%s: no %s probe", w.name, c.Name, what)
					}
					continue
				}
				if p.GRPC == nil || p.GRPC.Port != ports["grpc"] {
					t.Errorf("%s/%s: %s probe %+v is not the gRPC health service on port %d", w.name, c.Name, what, p.ProbeHandler, ports["grpc"])
				}
			}
			for _, ref := range []string{"POD_NAME", "POD_NAMESPACE", "POD_IP"} {
				if strings.Contains(strings.Join(c.Args, " "), "$("+ref+")") && !hasFieldEnv(c, ref) {
					t.Errorf("%s/%s: args use $(%s) but no downward-API env sets it", w.name, c.Name, ref)
				}
			}
			if c.Name != "router" {
				checkDataVolume(t, w, c, flags)
			}
		}
	}
}

// flagMap parses --name=value args.
func flagMap(t *testing.T, args []string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, a := range args {
		name, val, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.HasPrefix(a, "--") || !ok {
			t.Fatalf("arg %q: want --flag=value", a)
		}
		if _, dup := out[name]; dup {
			t.Fatalf("flag --%s given twice", name)
		}
		out[name] = val
	}
	return out
}

func portOf(t *testing.T, where, flag, addr string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	n, perr := strconv.Atoi(p)
	if err != nil || perr != nil {
		t.Fatalf("%s: --%s=%q is not host:port", where, flag, addr)
	}
	return int32(n)
}

func hasFieldEnv(c corev1.Container, name string) bool {
	for _, e := range c.Env {
		if e.Name == name && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			return true
		}
	}
	return false
}

// checkDataVolume: --data-dir is the mount of the StatefulSet's claim.
func checkDataVolume(t *testing.T, w workload, c corev1.Container, flags map[string]string) {
	t.Helper()
	if w.kind != "StatefulSet" {
		t.Errorf("%s: %s keeps state and must be a StatefulSet", w.name, c.Name)
	}
	for _, m := range c.VolumeMounts {
		if m.MountPath == flags["data-dir"] && m.Name == "data" {
			return
		}
	}
	t.Errorf("%s/%s: --data-dir=%s is not the mount of volume claim \"data\"", w.name, c.Name, flags["data-dir"])
}

// checkAggregators: the drain hook, its grace period, node ids and the
// founding ring.
func checkAggregators(t *testing.T, r *rendered, vals map[string]any) {
	t.Helper()
	var sts *workload
	for _, w := range r.workloads() {
		if w.name == release+"-aggregator" {
			sts = &w
		}
	}
	if sts == nil {
		t.Fatal("no aggregator StatefulSet")
	}
	c := sts.pod.Spec.Containers[0]
	flags := flagMap(t, c.Args)
	drain := toInt(t, value(t, vals, "aggregator.drainSeconds"))
	shutdown := 0
	if d := flags["shutdown-timeout"]; strings.HasSuffix(d, "s") {
		shutdown, _ = strconv.Atoi(strings.TrimSuffix(d, "s"))
	}
	grace := sts.pod.Spec.TerminationGracePeriodSeconds
	if grace == nil || *grace <= int64(drain+shutdown) {
		t.Errorf("aggregator terminationGracePeriodSeconds %v must exceed the drain time %d s plus the shutdown %d s", grace, drain, shutdown)
	}
	if value(t, vals, "aggregator.drainOnStop") == true {
		h := c.Lifecycle
		if h == nil || h.PreStop == nil || h.PreStop.Exec == nil {
			t.Fatal("aggregator: drainOnStop but no preStop exec")
		}
		cmd := h.PreStop.Exec.Command
		if len(cmd) < 4 || cmd[0] != "/adclick" || cmd[1] != "admin" || cmd[2] != "drain" || !slices.Contains(cmd, "--wait") ||
			cmd[len(cmd)-1] != "$(POD_NAME)" || !slices.Contains(cmd, "--etcd-endpoints="+flags["etcd-endpoints"]) {
			t.Errorf("aggregator preStop %q: want /adclick admin drain --wait --etcd-endpoints=<the node's> $(POD_NAME)", cmd)
		}
		if want := fmt.Sprintf("--timeout=%ds", drain); !slices.Contains(cmd, want) {
			t.Errorf("aggregator preStop %q: want %s, so the drain gives up before the grace period ends", cmd, want)
		}
	} else if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
		t.Error("aggregator: drainOnStop is off but a preStop hook is set")
	}
	if flags["node-id"] != "$(POD_NAME)" {
		t.Errorf("aggregator --node-id=%s, want the pod name", flags["node-id"])
	}
	initial := strings.Split(flags["initial-aggregators"], ",")
	n := toInt(t, value(t, vals, "aggregator.initialReplicas"))
	if len(initial) != n || n > int(sts.replicas) {
		t.Fatalf("--initial-aggregators=%s: want the first %d of %d pods", flags["initial-aggregators"], n, sts.replicas)
	}
	for i, id := range initial {
		if want := fmt.Sprintf("%s-%d", sts.name, i); id != want {
			t.Errorf("--initial-aggregators[%d] = %s, want pod name %s", i, id, want)
		}
	}
}

func toInt(t *testing.T, v any) int {
	t.Helper()
	switch n := v.(type) {
	case float64:
		return int(n)
	case int:
		return n
	case int64:
		return int(n)
	}
	t.Fatalf("value %v (%T) is not a number", v, v)
	return 0
}

// checkEtcd: the nodes' --etcd-endpoints is the chart's etcd Service, or
// exactly the external endpoints (and then no etcd is deployed).
func checkEtcd(t *testing.T, r *rendered, vals map[string]any) {
	t.Helper()
	var want string
	ext, _ := value(t, vals, "etcd.external.endpoints").([]any)
	etcdSts := false
	for _, s := range r.statefulSets {
		etcdSts = etcdSts || s.Name == release+"-etcd"
	}
	if len(ext) > 0 {
		var eps []string
		for _, e := range ext {
			eps = append(eps, fmt.Sprint(e))
		}
		want = strings.Join(eps, ",")
		if etcdSts || findService(r, release+"-etcd") != nil {
			t.Error("external etcd endpoints given, yet the chart deploys an etcd")
		}
	} else {
		svc := findService(r, release+"-etcd")
		if !etcdSts || svc == nil {
			t.Fatal("no etcd StatefulSet and Service")
		}
		want = fmt.Sprintf("%s:%d", svc.Name, svc.Spec.Ports[0].Port)
	}
	for _, w := range r.workloads() {
		for _, c := range w.pod.Spec.Containers {
			if slices.Contains(serverRoles, c.Name) {
				if got := flagMap(t, c.Args)["etcd-endpoints"]; got != want {
					t.Errorf("%s: --etcd-endpoints=%s, want %s", w.name, got, want)
				}
			}
		}
	}
}

// checkMonitoring: the ServiceMonitor scrapes the http port of the three
// server Services, the PrometheusRule is the alerts file, the dashboard
// ConfigMap holds valid JSON.
func checkMonitoring(t *testing.T, r *rendered, vals map[string]any) {
	t.Helper()
	on := func(k string) bool { return value(t, vals, "metrics."+k+".enabled") == true }
	if got := len(r.monitors) == 1; got != on("serviceMonitor") {
		t.Errorf("ServiceMonitor rendered: %v, enabled: %v", got, on("serviceMonitor"))
	}
	for _, m := range r.monitors {
		sel, err := metav1.LabelSelectorAsSelector(&m.Spec.Selector)
		if err != nil {
			t.Fatal(err)
		}
		var jobs []string
		for _, s := range r.services {
			if !sel.Matches(labels.Set(s.Labels)) {
				continue
			}
			jobs = append(jobs, s.Labels[m.Spec.JobLabel])
			for _, e := range m.Spec.Endpoints {
				if !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == e.Port }) {
					t.Errorf("ServiceMonitor port %q: Service %s has no such port", e.Port, s.Name)
				}
			}
		}
		slices.Sort(jobs)
		if want := []string{"adclick-aggregator", "adclick-reducer", "adclick-router"}; !slices.Equal(jobs, want) {
			t.Errorf("ServiceMonitor scrapes jobs %v, want %v (the alerts name these jobs)", jobs, want)
		}
	}
	if got := len(r.rules) == 1; got != on("prometheusRule") {
		t.Errorf("PrometheusRule rendered: %v, enabled: %v", got, on("prometheusRule"))
	}
	for _, pr := range r.rules {
		if len(pr.Spec.Groups) == 0 || len(pr.Spec.Groups[0].Rules) < 4 {
			t.Errorf("PrometheusRule %s has too few rules", pr.Name)
		}
	}
	dash := 0
	for _, cm := range r.configMaps {
		if js, ok := cm.Data["adclick.json"]; ok {
			dash++
			var d map[string]any
			if err := json.Unmarshal([]byte(js), &d); err != nil || d["panels"] == nil {
				t.Errorf("dashboard ConfigMap %s: not a dashboard: %v", cm.Name, err)
			}
			if _, ok := cm.Labels["grafana_dashboard"]; !ok {
				t.Errorf("dashboard ConfigMap %s lacks the grafana_dashboard label", cm.Name)
			}
		}
	}
	if (dash == 1) != on("dashboards") {
		t.Errorf("dashboard ConfigMap rendered: %d, enabled: %v", dash, on("dashboards"))
	}
}

package integration

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
	"github.com/adclick/adclick/pkg/clock"
	"github.com/adclick/adclick/pkg/porttest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// process is one binary of the cluster, run as its own OS process.
type process struct {
	name string
	cmd  *exec.Cmd
	log  string
}

// buildBinaries compiles the four binaries once for this test.
func buildBinaries(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(file))
	bin := t.TempDir()
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/router", "./cmd/aggregator", "./cmd/reducer", "./cmd/adclick")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func startProcess(t *testing.T, dir, bin, name string, args ...string) *process {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &process{name: name, cmd: cmd, log: logPath}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		f.Close()
		if t.Failed() {
			data, _ := os.ReadFile(logPath)
			t.Logf("---- log of %s ----\n%s", name, data)
		}
	})
	return p
}

// servingAddrs waits for the process's "serving" log line and returns the
// gRPC and HTTP addresses it names.
func (p *process) servingAddrs(t *testing.T) (grpcAddr, httpAddr string) {
	t.Helper()
	re := regexp.MustCompile(`msg=serving .* grpc=(\S+) http=(\S+)`)
	pollUntil(t, 30*time.Second, p.name+" serving", func() bool {
		data, _ := os.ReadFile(p.log)
		m := re.FindSubmatch(data)
		if m == nil {
			return false
		}
		grpcAddr, httpAddr = string(m[1]), string(m[2])
		return true
	})
	return grpcAddr, httpAddr
}

// stop sends SIGTERM and expects a clean exit in time.
func (p *process) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("signal %s: %v", p.name, err)
	}
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("%s exited with %v after SIGTERM", p.name, err)
		}
	case <-time.After(20 * time.Second):
		t.Errorf("%s did not exit within 20s of SIGTERM", p.name)
		_ = p.cmd.Process.Kill()
	}
}

// TestSeparateProcesses runs adclick etcd, a reducer, two aggregators and a
// router as OS processes talking over loopback, ingests clicks and checks
// the counts through gRPC and REST.
func TestSeparateProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binaries")
	}
	bin := buildBinaries(t)
	dir := t.TempDir()
	etcdAddr := porttest.Addr(t)
	etcd := startProcess(t, dir, filepath.Join(bin, "adclick"), "etcd", "etcd", "--data-dir", filepath.Join(dir, "etcd"), "--addr", etcdAddr)
	node := func(role, id string, extra ...string) *process {
		args := append([]string{"--etcd-endpoints", etcdAddr, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
			"--node-id", id, "--data-dir", filepath.Join(dir, id), "--gossip-addr", "127.0.0.1:0"}, extra...)
		return startProcess(t, dir, filepath.Join(bin, role), id, args...)
	}
	reducer := node("reducer", "reducer-1")
	agg1 := node("aggregator", "aggregator-1", "--allowed-lateness", "1s", "--initial-aggregators", "aggregator-1,aggregator-2")
	// The second aggregator takes its settings from the environment.
	t.Setenv("ADCLICK_ALLOWED_LATENESS", "1s")
	t.Setenv("ADCLICK_INITIAL_AGGREGATORS", "aggregator-1,aggregator-2")
	agg2 := node("aggregator", "aggregator-2")
	// Port 0, read back from the log: an address picked free beforehand
	// was once taken meanwhile by an aggregator binding port 0.
	router := startProcess(t, dir, filepath.Join(bin, "router"), "router",
		"--etcd-endpoints", etcdAddr, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0")
	routerGRPC, routerHTTP := router.servingAddrs(t)

	conn, err := grpc.NewClient(routerGRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ingest := adclickv1.NewIngestServiceClient(conn)
	query := adclickv1.NewQueryServiceClient(conn)

	// Clicks two to four minutes old: their minutes closed before the
	// aggregators started, so they arrive as late corrections.
	now := time.Now()
	from := clock.Minute(now) - 4*60
	to := from + 3*60
	tr := truth{}
	var events []*adclickv1.ClickEvent
	for i := 0; i < 3000; i++ {
		ad := "ad-" + strconv.Itoa(i%37*(i%5+1)%53)
		at := time.Unix(from+int64(i%180), 0)
		events = append(events, &adclickv1.ClickEvent{ClickId: fmt.Sprintf("p-%d", i), AdId: ad, ClickTime: timestamppb.New(at), Country: "fr"})
		tr[countKey{0, ad, clock.Minute(at)}]++
	}
	// The first batches may meet a router that has not seen the aggregators
	// yet, or an aggregator not yet started (its events come back in
	// retry): resend until nothing is left to retry, as a client does.
	// Duplicates are safe.
	for b := 0; b < len(events); b += 250 {
		req := &adclickv1.IngestRequest{Events: append(append([]*adclickv1.ClickEvent{}, events[b:b+250]...), &adclickv1.ClickEvent{ClickId: "x"})}
		var resp *adclickv1.IngestResponse
		pollUntil(t, 30*time.Second, "router accepts a batch", func() bool {
			resp, err = ingest.Ingest(ctx, req)
			return err == nil && len(resp.Retry) == 0
		})
		if resp.Accepted+resp.Duplicates != 250 || len(resp.Rejected) != 1 || resp.Rejected[0].Index != 250 {
			t.Fatalf("batch %d: %v", b/250, resp)
		}
	}
	// Send every batch a second time: all duplicates.
	resp, err := ingest.Ingest(ctx, &adclickv1.IngestRequest{Events: events[:1000]})
	if err != nil || resp.Duplicates != 1000 || resp.Accepted != 0 {
		t.Fatalf("resend: %v %v", resp, err)
	}

	ads := adsOf(tr)
	pollUntil(t, 60*time.Second, "counts reach the reducer", func() bool {
		for _, ad := range ads {
			r, err := query.AggregatedCount(ctx, &adclickv1.AggregatedCountRequest{AdId: ad, From: ts(from), To: ts(to)})
			if err != nil || r.Count != tr.sum(0, ad, from, to) {
				return false
			}
		}
		return true
	})
	pop, err := query.PopularAds(ctx, &adclickv1.PopularAdsRequest{Count: 10, Window: 3, To: ts(to)})
	if err != nil {
		t.Fatal(err)
	}
	if want := tr.top(0, from, to, 10); !sameTop(pop.Ads, want) {
		t.Errorf("PopularAds = %v, want %v", brief(pop.Ads), brief(want))
	}
	var rest adclickv1.AggregatedCountResponse
	u := fmt.Sprintf("http://%s/v1/ads/%s/aggregated_count?from=%s&to=%s", routerHTTP, ads[0],
		time.Unix(from, 0).UTC().Format(time.RFC3339), time.Unix(to, 0).UTC().Format(time.RFC3339))
	if code := getJSON(t, u, &rest); code != http.StatusOK || rest.Count != tr.sum(0, ads[0], from, to) {
		t.Errorf("REST %s: HTTP %d, count %d, want %d", u, code, rest.Count, tr.sum(0, ads[0], from, to))
	}

	for _, p := range []*process{router, agg1, agg2, reducer, etcd} {
		p.stop(t)
	}
}

package integration

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	clusterv1 "github.com/adclick/adclick/gen/adclick/cluster/v1"
	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
	"github.com/adclick/adclick/pkg/clock"
	"github.com/adclick/adclick/pkg/porttest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// faultCluster is etcd, a router, three aggregators and two reducers, each
// its own OS process on fixed loopback ports, so any of them can be killed
// and started again in place.
type faultCluster struct {
	t        *testing.T
	bin, dir string
	etcdAddr string
	procs    map[string]*process
	args     map[string][]string
	reducers map[string]string // id -> gRPC address
	router   string
}

func newFaultCluster(t *testing.T) *faultCluster {
	c := &faultCluster{t: t, bin: buildBinaries(t), dir: t.TempDir(), etcdAddr: porttest.Addr(t),
		procs: map[string]*process{}, args: map[string][]string{}, reducers: map[string]string{}, router: porttest.Addr(t)}
	c.args["etcd"] = []string{"adclick", "etcd", "--data-dir", filepath.Join(c.dir, "etcd"), "--addr", c.etcdAddr}
	c.node("reducer", "reducer-1")
	c.node("reducer", "reducer-2")
	for i := 1; i <= 3; i++ {
		c.node("aggregator", fmt.Sprintf("aggregator-%d", i), "--initial-aggregators", "aggregator-1,aggregator-2,aggregator-3", "--allowed-lateness", "2s")
	}
	c.args["router"] = []string{"router", "--etcd-endpoints", c.etcdAddr, "--grpc-addr", c.router, "--http-addr", "127.0.0.1:0", "--log-level", "warn", "--gossip-addr", "127.0.0.1:0"}
	return c
}

// node adds a server process's arguments under id.
func (c *faultCluster) node(role, id string, extra ...string) {
	grpcAddr := porttest.Addr(c.t)
	c.args[id] = append([]string{role, "--etcd-endpoints", c.etcdAddr, "--grpc-addr", grpcAddr, "--http-addr", "127.0.0.1:0",
		"--node-id", id, "--data-dir", filepath.Join(c.dir, id), "--lease-ttl", "2s", "--log-level", "warn", "--gossip-addr", "127.0.0.1:0"}, extra...)
	if role == "reducer" {
		c.reducers[id] = grpcAddr
	}
}

var faultNodes = []string{"etcd", "reducer-1", "reducer-2", "aggregator-1", "aggregator-2", "aggregator-3", "router"}

func (c *faultCluster) start(name string) {
	c.t.Helper()
	a := c.args[name]
	c.procs[name] = startProcess(c.t, c.dir, filepath.Join(c.bin, a[0]), fmt.Sprintf("%s-%d", name, time.Now().UnixNano()), a[1:]...)
}

func (c *faultCluster) startAll() {
	for _, n := range faultNodes {
		c.start(n)
	}
}

// kill sends SIGKILL: no shutdown code runs.
func (c *faultCluster) kill(names ...string) {
	c.t.Helper()
	for _, n := range names {
		p := c.procs[n]
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			c.t.Fatalf("kill %s: %v", n, err)
		}
		_ = p.cmd.Wait()
	}
}

func (c *faultCluster) stopAll() {
	for i := len(faultNodes) - 1; i >= 0; i-- {
		c.procs[faultNodes[i]].stop(c.t)
	}
}

// retryingClient sends batches of fresh clicks and resends every batch that
// was not acknowledged until it is, as a real client does. It records every
// click it generated: each must end up counted exactly once.
type retryingClient struct {
	ingest  adclickv1.IngestServiceClient
	mu      sync.Mutex
	truth   truth
	batches atomic.Int64
	retries atomic.Int64
	partial atomic.Int64 // answers that listed events to retry
	dups    atomic.Int64
}

func (rc *retryingClient) run(ctx context.Context, t *testing.T, worker int, stop <-chan struct{}) error {
	for b := 0; ; b++ {
		select {
		case <-stop:
			return nil
		default:
		}
		now := time.Now()
		req := &adclickv1.IngestRequest{}
		local := truth{}
		for i := 0; i < 200; i++ {
			ad := fmt.Sprintf("ad-%d", (i*7+b)%61)
			req.Events = append(req.Events, &adclickv1.ClickEvent{
				ClickId: fmt.Sprintf("w%d-b%d-%d", worker, b, i), AdId: ad, ClickTime: timestamppb.New(now), Country: "US",
			})
			local[countKey{0, ad, clock.Minute(now)}]++
		}
		rc.mu.Lock()
		for k, v := range local {
			rc.truth[k] += v
		}
		rc.mu.Unlock()
		// Resend what is not acknowledged: the whole batch after an error,
		// exactly the events listed in retry after a partial answer.
		pending, done := req.Events, int64(0)
		for attempt := 0; ; attempt++ {
			actx, cancel := context.WithTimeout(ctx, 5*time.Second)
			resp, err := rc.ingest.Ingest(actx, &adclickv1.IngestRequest{Events: pending})
			cancel()
			if err == nil {
				if len(resp.Rejected) > 0 {
					return fmt.Errorf("batch %d/%d: rejected %v", worker, b, resp.Rejected)
				}
				done += resp.Accepted + resp.Duplicates
				rc.dups.Add(resp.Duplicates)
				if len(resp.Retry) == 0 {
					break
				}
				next := make([]*adclickv1.ClickEvent, len(resp.Retry))
				for k, i := range resp.Retry {
					next[k] = pending[i]
				}
				pending = next
				rc.partial.Add(1)
			}
			if ctx.Err() != nil {
				return fmt.Errorf("batch %d/%d never acknowledged: %v", worker, b, err)
			}
			rc.retries.Add(1)
			time.Sleep(100 * time.Millisecond)
		}
		if done != int64(len(req.Events)) {
			return fmt.Errorf("batch %d/%d: %d accepted or duplicate of %d", worker, b, done, len(req.Events))
		}
		rc.batches.Add(1)
	}
}

// checkReducers polls every reducer directly until, for every ad, the count
// over the run's minutes equals the truth and the range is complete.
func (c *faultCluster) checkReducers(ctx context.Context, t *testing.T, tr truth, from, to int64, within time.Duration) {
	t.Helper()
	ads := adsOf(tr)
	for id, addr := range c.reducers {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		red := clusterv1.NewReducerServiceClient(conn)
		var last string
		deadline := time.Now().Add(within)
		for {
			last = ""
			for _, ad := range ads {
				resp, err := red.AggregatedCount(ctx, &adclickv1.AggregatedCountRequest{AdId: ad, From: ts(from), To: ts(to)})
				if err != nil {
					last = err.Error()
					break
				}
				if want := tr.sum(0, ad, from, to); resp.Count != want || !resp.Complete {
					last = fmt.Sprintf("%s: count %d complete %v, want %d complete", ad, resp.Count, resp.Complete, want)
					break
				}
			}
			if last == "" {
				pop, err := red.PopularAds(ctx, &adclickv1.PopularAdsRequest{Count: 10, Window: int32((to - from) / 60), To: ts(to)})
				if err != nil {
					last = err.Error()
				} else if want := tr.top(0, from, to, 10); !sameTop(pop.Ads, want) || !pop.Complete {
					last = fmt.Sprintf("top 10 = %v, want %v", brief(pop.Ads), brief(want))
				}
			}
			if last == "" {
				break
			}
			if time.Now().After(deadline) {
				conn.Close()
				t.Fatalf("%s does not match the truth after %s: %s", id, within, last)
			}
			time.Sleep(250 * time.Millisecond)
		}
		conn.Close()
		t.Logf("%s: all %d ads and the top 10 equal the truth, complete", id, len(ads))
	}
}

// TestFaultsExactlyOnce kills nodes with SIGKILL while a client streams
// clicks and retries every unacknowledged batch: afterwards every reducer
// holds exactly the truth; then the whole cluster restarts and still does.
func TestFaultsExactlyOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the cluster as processes for about two minutes")
	}
	c := newFaultCluster(t)
	c.startAll()
	conn, err := grpc.NewClient(c.router, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	rc := &retryingClient{ingest: adclickv1.NewIngestServiceClient(conn), truth: truth{}}
	start := time.Now()
	stop := make(chan struct{})
	errs := make(chan error, 2)
	for w := 0; w < 2; w++ {
		go func() { errs <- rc.run(ctx, t, w, stop) }()
	}
	var retriesBefore int64
	step := func(what string, f func()) {
		time.Sleep(2 * time.Second)
		t.Logf("%5.1fs %s (batches acked so far: %d, retries: %d)", time.Since(start).Seconds(), what, rc.batches.Load(), rc.retries.Load())
		f()
	}
	step("kill -9 aggregator-1, restart", func() {
		retriesBefore = rc.retries.Load() // the first batches may have met a router still starting
		killed := time.Now()
		c.kill("aggregator-1")
		acked := rc.batches.Load()
		c.start("aggregator-1")
		// Every batch spans all aggregators, so acks resume only once the
		// restarted one has recovered its log and serves again.
		pollUntil(t, 30*time.Second, "acks resume after the restart", func() bool { return rc.batches.Load() > acked+1 })
		t.Logf("aggregator-1: acks resumed %s after kill -9 (process start and log recovery included)", time.Since(killed).Round(time.Millisecond))
	})
	step("kill -9 aggregator-2 and aggregator-3 at once, restart", func() {
		c.kill("aggregator-2", "aggregator-3")
		c.start("aggregator-2")
		c.start("aggregator-3")
	})
	step("kill -9 reducer-1, restart after 2s", func() { c.kill("reducer-1"); time.Sleep(2 * time.Second); c.start("reducer-1") })
	step("kill -9 the router, restart", func() { c.kill("router"); c.start("router") })
	step("kill -9 etcd, restart", func() { c.kill("etcd"); time.Sleep(time.Second); c.start("etcd") })
	step("stop sending", func() { close(stop) })
	for w := 0; w < 2; w++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("client: %d batches acknowledged, %d retries (%d of them partial answers), %d clicks answered as duplicates", rc.batches.Load(), rc.retries.Load(), rc.partial.Load(), rc.dups.Load())
	if rc.retries.Load() == retriesBefore {
		t.Fatal("no batch was retried: the faults did not hit the client")
	}
	from, to := clock.Minute(start), clock.Minute(time.Now())+60
	// Minutes close 2 s after their end; allow for delivery after that.
	wait := time.Until(time.Unix(to, 0)) + 45*time.Second
	c.checkReducers(ctx, t, rc.truth, from, to, wait)

	t.Log("stopping and restarting the whole cluster")
	c.stopAll()
	c.startAll()
	c.checkReducers(ctx, t, rc.truth, from, to, 30*time.Second)
	c.stopAll()
}

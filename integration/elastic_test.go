package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
	"github.com/adclick/adclick/pkg/clock"
	"github.com/adclick/adclick/pkg/porttest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// twoRouterClient sends batches of fresh clicks through router A until
// each is acknowledged (resending exactly the events answered "retry"),
// then sends the same batch again through router B, which must find every
// click already counted; it keeps every batch so old ones can be resent.
type twoRouterClient struct {
	a, b    adclickv1.IngestServiceClient
	mu      sync.Mutex
	truth   truth
	batches [][]*adclickv1.ClickEvent
	retries int
}

// send delivers evs through ing until nothing is left to retry and returns
// how many were accepted.
func (c *twoRouterClient) send(ctx context.Context, ing adclickv1.IngestServiceClient, evs []*adclickv1.ClickEvent) (int64, error) {
	pending := evs
	var accepted, done int64
	for ctx.Err() == nil {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := ing.Ingest(actx, &adclickv1.IngestRequest{Events: pending})
		cancel()
		if err == nil {
			if len(resp.Rejected) > 0 {
				return 0, fmt.Errorf("rejected %v", resp.Rejected)
			}
			accepted += resp.Accepted
			done += resp.Accepted + resp.Duplicates
			if len(resp.Retry) == 0 {
				if done != int64(len(evs)) {
					return 0, fmt.Errorf("%d of %d events answered", done, len(evs))
				}
				return accepted, nil
			}
			next := make([]*adclickv1.ClickEvent, len(resp.Retry))
			for k, i := range resp.Retry {
				next[k] = pending[i]
			}
			pending = next
		}
		c.mu.Lock()
		c.retries++
		c.mu.Unlock()
		time.Sleep(100 * time.Millisecond)
	}
	return 0, ctx.Err()
}

func (c *twoRouterClient) run(ctx context.Context, worker int, stop <-chan struct{}) error {
	for b := 0; ; b++ {
		select {
		case <-stop:
			return nil
		default:
		}
		now := time.Now()
		var evs []*adclickv1.ClickEvent
		local := truth{}
		for i := 0; i < 100; i++ {
			ad := fmt.Sprintf("ad-%d", (i*13+b)%97)
			evs = append(evs, &adclickv1.ClickEvent{ClickId: fmt.Sprintf("e%d-%d-%d", worker, b, i), AdId: ad, ClickTime: timestamppb.New(now)})
			local[countKey{0, ad, clock.Minute(now)}]++
		}
		c.mu.Lock()
		for k, v := range local {
			c.truth[k] += v
		}
		c.batches = append(c.batches, evs)
		c.mu.Unlock()
		if _, err := c.send(ctx, c.a, evs); err != nil {
			return fmt.Errorf("batch %d/%d via router A: %w", worker, b, err)
		}
		if acc, err := c.send(ctx, c.b, evs); err != nil || acc != 0 {
			return fmt.Errorf("batch %d/%d resent via router B: accepted %d again (%v)", worker, b, acc, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// addRouterB adds the arguments of a second router process, "router-b",
// and returns its gRPC address.
func (c *faultCluster) addRouterB() string {
	addr := porttest.Addr(c.t)
	c.args["router-b"] = []string{"router", "--etcd-endpoints", c.etcdAddr, "--grpc-addr", addr, "--http-addr", "127.0.0.1:0",
		"--log-level", "warn", "--gossip-addr", "127.0.0.1:0", "--node-id", "router-b"}
	return addr
}

// dialIngest returns an ingest client of the router at addr, closed at the end of the test.
func dialIngest(t *testing.T, addr string) adclickv1.IngestServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return adclickv1.NewIngestServiceClient(conn)
}

// admin runs `adclick admin` against the cluster's etcd.
func (c *faultCluster) admin(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(c.bin, "adclick"), append(append([]string{"admin"}, args...), "--etcd-endpoints", c.etcdAddr)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("adclick admin %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// TestElasticRingExactlyOnce changes the cluster's shape under a client
// that sends every batch through one router and again through a second:
// an aggregator joins, one drains and is removed, one is killed with
// SIGKILL mid-drain and restarted; afterwards old batches are resent. Every
// count equals the truth, every resend is a duplicate, and every range is
// complete.
func TestElasticRingExactlyOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("changes the shape of a cluster of processes for about five minutes")
	}
	c := newFaultCluster(t)
	for i := 1; i <= 3; i++ {
		id := fmt.Sprintf("aggregator-%d", i)
		c.args[id] = append(c.args[id], "--ring-view-ttl", "5s")
	}
	c.node("aggregator", "aggregator-4", "--ring-view-ttl", "5s", "--allowed-lateness", "2s")
	routerB := c.addRouterB()
	c.startAll()
	c.start("router-b")
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	cl := &twoRouterClient{a: dialIngest(t, c.router), b: dialIngest(t, routerB), truth: truth{}}
	start := time.Now()
	stop := make(chan struct{})
	errs := make(chan error, 2)
	for w := 0; w < 2; w++ {
		go func() { errs <- cl.run(ctx, w, stop) }()
	}
	pollUntil(t, time.Minute, "the first batches are acknowledged", func() bool {
		cl.mu.Lock()
		defer cl.mu.Unlock()
		return len(cl.batches) > 10
	})
	t.Logf("%5.1fs (a) aggregator-4 joins", time.Since(start).Seconds())
	c.start("aggregator-4")
	pollUntil(t, time.Minute, "aggregator-4 on the ring", func() bool {
		return strings.Contains(c.admin(t, "status"), "join aggregator-4")
	})
	t.Logf("%5.1fs (b) drain aggregator-1; (c) drain aggregator-2", time.Since(start).Seconds())
	t.Log(c.admin(t, "drain", "aggregator-1"))
	t.Log(c.admin(t, "drain", "aggregator-2"))
	var drainTook time.Duration
	var wg sync.WaitGroup
	wg.Go(func() {
		began := time.Now()
		c.admin(t, "drain", "aggregator-1", "--wait", "--timeout", "8m")
		drainTook = time.Since(began)
	})
	// Kill aggregator-2 just before its cut-over, then restart it: it
	// finishes the drain by itself.
	pollUntil(t, 5*time.Minute, "aggregator-2 near its cut-over", func() bool { return c.nearCutover(t, "aggregator-2") })
	t.Logf("%5.1fs kill -9 aggregator-2 mid-drain, restart", time.Since(start).Seconds())
	c.kill("aggregator-2")
	c.start("aggregator-2")
	c.admin(t, "drain", "aggregator-2", "--wait", "--timeout", "8m")
	wg.Wait()
	t.Logf("%5.1fs both drained (aggregator-1's drain took %s from the command); stop and remove aggregator-1", time.Since(start).Seconds(), drainTook.Round(time.Second))
	c.procs["aggregator-1"].stop(t)
	t.Log(c.admin(t, "remove", "aggregator-1"))
	time.Sleep(3 * time.Second)
	close(stop)
	for w := 0; w < 2; w++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// (d) old batches again, through both routers: all duplicates, now
	// owned by the heirs for the drained nodes' minutes.
	cl.mu.Lock()
	old := cl.batches
	cl.mu.Unlock()
	for i := 0; i < len(old); i += 7 {
		for _, ing := range []adclickv1.IngestServiceClient{cl.a, cl.b} {
			if acc, err := cl.send(ctx, ing, old[i]); err != nil || acc != 0 {
				t.Fatalf("old batch %d resent: accepted %d (%v)", i, acc, err)
			}
		}
	}
	t.Logf("%d batches, %d retries; every resend a duplicate", len(old), cl.retries)
	from, to := clock.Minute(start), clock.Minute(time.Now())+60
	wait := time.Until(time.Unix(to, 0)) + 45*time.Second
	c.checkReducers(ctx, t, cl.truth, from, to, wait)
	st := c.admin(t, "status")
	t.Log(st)
	for _, want := range []string{"aggregator-1", "aggregator-2  drained", "aggregator-4  active"} {
		if !strings.Contains(strings.Join(strings.Fields(st), "  "), strings.Join(strings.Fields(want), "  ")) {
			t.Errorf("status lacks %q", want)
		}
	}
}

// nearCutover tells whether node is draining and its cut-over is less than
// 10 s away (or past): killing it then interrupts its drain, whatever step
// it is at when it comes back.
func (c *faultCluster) nearCutover(t *testing.T, node string) bool {
	t.Helper()
	var st struct {
		Aggregators []struct {
			ID        string     `json:"id"`
			State     string     `json:"state"`
			OwnsUntil *time.Time `json:"owns_until"`
		} `json:"aggregators"`
	}
	if err := json.Unmarshal([]byte(c.admin(t, "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	for _, a := range st.Aggregators {
		if a.ID == node {
			if a.State != "draining" || a.OwnsUntil == nil {
				t.Fatalf("%s is %s, not draining", node, a.State)
			}
			return time.Until(*a.OwnsUntil) < 10*time.Second
		}
	}
	t.Fatalf("%s not in status", node)
	return false
}

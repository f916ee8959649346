package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
	"github.com/adclick/adclick/pkg/admin"
	"github.com/adclick/adclick/pkg/clock"
	"github.com/adclick/adclick/pkg/porttest"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const hotAd = "ad-hot"

// runSkewed is twoRouterClient.run with 60% of every batch on hotAd and
// the rest over 97 other ads.
func (c *twoRouterClient) runSkewed(ctx context.Context, worker int, stop <-chan struct{}) error {
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
			if i%5 < 3 {
				ad = hotAd
			}
			evs = append(evs, &adclickv1.ClickEvent{ClickId: fmt.Sprintf("h%d-%d-%d", worker, b, i), AdId: ad, ClickTime: timestamppb.New(now)})
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
	}
}

// pollEvery is pollUntil for conditions that cost a process or a request.
func pollEvery(t *testing.T, within, every time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for: %s", within, what)
		}
		time.Sleep(every)
	}
}

func (c *faultCluster) status(t *testing.T) *admin.Status {
	t.Helper()
	var st admin.Status
	if err := json.Unmarshal([]byte(c.admin(t, "status", "--json")), &st); err != nil {
		t.Fatalf("status --json: %v", err)
	}
	return &st
}

// grants returns every grant of hotAd in status (open or ending ahead).
func hotGrants(st *admin.Status) []admin.HotAd {
	var out []admin.HotAd
	for _, g := range st.HotAds {
		if g.AdID == hotAd {
			out = append(out, g)
		}
	}
	return out
}

// accepted reads adclick_aggregator_events_total{status="accepted"} from an
// aggregator's /metrics (-1 when it does not answer).
func accepted(addr string) float64 {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, `adclick_aggregator_events_total{status="accepted"}`) {
			v, _ := strconv.ParseFloat(strings.Fields(l)[1], 64)
			return v
		}
	}
	return -1
}

// TestHotAdSplitExactlyOnce: one ad carries 60% of the clicks, sent through
// router A then again through router B. Its owner sees it hot and takes a
// grant; from the grant's minute its clicks are spread over three
// aggregators. A helper is killed -9 while holding a piece and restarted;
// the grant's holder is killed -9 and its lease lapses, so another node
// ends the grant; the operator ends the last split; old batches are resent
// after the first split ended. Every count and the top 10 equal the truth.
func TestHotAdSplitExactlyOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a skewed load on a cluster of processes for about six minutes")
	}
	c := newFaultCluster(t)
	metricsAddr := map[string]string{}
	for i := 1; i <= 3; i++ {
		id := fmt.Sprintf("aggregator-%d", i)
		metricsAddr[id] = porttest.Addr(t)
		c.args[id] = append(c.args[id], "--ring-view-ttl", "5s", "--hot-min-rate", "150", "--hot-grant-ttl", "6s", "--http-addr", metricsAddr[id])
	}
	routerB := c.addRouterB()
	c.startAll()
	c.start("router-b")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cl := &twoRouterClient{a: dialIngest(t, c.router), b: dialIngest(t, routerB), truth: truth{}}
	start := time.Now()
	elapsed := func() string { return fmt.Sprintf("%5.1fs", time.Since(start).Seconds()) }
	stop := make(chan struct{})
	errs := make(chan error, 2)
	for w := 0; w < 2; w++ {
		go func() { errs <- cl.runSkewed(ctx, w, stop) }()
	}
	// (a) A grant appears.
	var first admin.HotAd
	pollEvery(t, 90*time.Second, time.Second, "a grant of the hot ad", func() bool {
		gs := hotGrants(c.status(t))
		if len(gs) > 0 {
			first = gs[0]
		}
		return len(gs) > 0
	})
	tookAt := time.Now()
	t.Logf("%s grant taken %s after the load began: %s over %v from %s (%s ahead), origin %s", elapsed(), tookAt.Sub(start).Round(time.Second),
		first.AdID, first.Nodes, first.EffectiveFrom.Format(time.RFC3339), time.Until(first.EffectiveFrom).Round(time.Second), first.Origin)
	if first.Fanout != 3 || len(first.Nodes) != 3 || first.Origin != "auto" || first.Until != nil {
		t.Fatalf("grant %+v, want an open auto grant over 3 nodes", first)
	}
	t.Log(c.admin(t, "owner", hotAd, "--at", first.EffectiveFrom.Format(time.RFC3339)))

	// (b) After its minute, the ad's clicks are spread: no aggregator takes
	// more than 45% of the accepted clicks.
	pollEvery(t, 4*time.Minute, time.Second, "the grant's minute", func() bool { return time.Now().After(first.EffectiveFrom.Add(2 * time.Second)) })
	before := map[string]float64{}
	for id, addr := range metricsAddr {
		before[id] = accepted(addr)
	}
	deltas := map[string]float64{}
	var total float64
	pollEvery(t, time.Minute, time.Second, "20,000 clicks accepted after the grant's minute", func() bool {
		total = 0
		for id, addr := range metricsAddr {
			deltas[id] = accepted(addr) - before[id]
			total += deltas[id]
		}
		return total >= 20000
	})
	for id, d := range deltas {
		t.Logf("%s accepted %.0f of %.0f clicks (%.0f%%) after the split took effect", id, d, total, 100*d/total)
		if d > 0.45*total {
			t.Errorf("%s took %.0f%% of the accepted clicks after the split, want at most 45%%", id, 100*d/total)
		}
	}
	t.Logf("%s spread %s after the grant was taken (%s after the load began)", elapsed(), time.Since(tookAt).Round(time.Second), time.Since(start).Round(time.Second))

	// (c) kill -9 a helper while it holds a piece: its clicks come back in
	// retry until it restarts.
	helper := first.Nodes[1]
	cl.mu.Lock()
	retries := cl.retries
	cl.mu.Unlock()
	t.Logf("%s kill -9 helper %s", elapsed(), helper)
	c.kill(helper)
	pollEvery(t, 30*time.Second, 100*time.Millisecond, "retries while the helper is down", func() bool {
		cl.mu.Lock()
		defer cl.mu.Unlock()
		return cl.retries > retries+2
	})
	c.start(helper)
	acked := func() int {
		cl.mu.Lock()
		defer cl.mu.Unlock()
		return len(cl.batches)
	}
	n := acked()
	pollEvery(t, time.Minute, 200*time.Millisecond, "batches acknowledged again after the helper's restart", func() bool { return acked() > n+4 })

	// (d) kill -9 the grant's holder and keep it down: its lease lapses and
	// another aggregator ends the grant ahead.
	holder := first.Nodes[0]
	t.Logf("%s kill -9 holder %s; its lease (6s) lapses", elapsed(), holder)
	killed := time.Now()
	c.kill(holder)
	var ended admin.HotAd
	pollEvery(t, time.Minute, time.Second, "the lapsed grant ended", func() bool {
		for _, g := range hotGrants(c.status(t)) {
			if g.EffectiveFrom.Equal(first.EffectiveFrom) && g.Until != nil {
				ended = g
				return true
			}
		}
		return false
	})
	t.Logf("%s grant ends at %s, recorded %s after the holder died", elapsed(), ended.Until.Format(time.RFC3339), time.Since(killed).Round(time.Second))
	c.start(holder)

	// (e) Stop the load, end any split by hand, and resend old batches once
	// the first split ended: every copy is a duplicate at its piece.
	pollEvery(t, 4*time.Minute, time.Second, "the first split's end", func() bool { return time.Now().After(ended.Until.Add(2 * time.Second)) })
	close(stop)
	for w := 0; w < 2; w++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for _, g := range hotGrants(c.status(t)) {
		if g.Until == nil {
			t.Log(c.admin(t, "unsplit", hotAd))
		}
	}
	cl.mu.Lock()
	old := cl.batches
	cl.mu.Unlock()
	for i := 0; i < len(old); i += 5 {
		for _, ing := range []adclickv1.IngestServiceClient{cl.a, cl.b} {
			if acc, err := cl.send(ctx, ing, old[i]); err != nil || acc != 0 {
				t.Fatalf("old batch %d resent: accepted %d (%v)", i, acc, err)
			}
		}
	}
	t.Logf("%s %d batches, %d retries; every resend a duplicate", elapsed(), len(old), cl.retries)
	t.Log(c.admin(t, "status"))
	from, to := clock.Minute(start), clock.Minute(time.Now())+60
	c.checkReducers(ctx, t, cl.truth, from, to, time.Until(time.Unix(to, 0))+45*time.Second)
}

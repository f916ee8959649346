package aggregator

import (
	"context"
	"fmt"
	"testing"
	"time"

	clusterv1 "github.com/adclick/adclick/gen/adclick/cluster/v1"
	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
	"github.com/adclick/adclick/pkg/clock"
	"github.com/adclick/adclick/pkg/ring"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const notOwner = clusterv1.EventStatus_EVENT_STATUS_NOT_OWNER

// TestForwardRefusesWhatItDoesNotOwn: by its own view of the ring history
// an aggregator counts exactly the clicks it owns and answers NOT_OWNER for
// the others, which it does not count.
func TestForwardRefusesWhatItDoesNotOwn(t *testing.T) {
	env := newTestAggregator(t, start, nil, nil)
	h := ring.Founding([]string{"agg-1", "agg-2"}, start, ring.DefaultViewTTL)
	env.ring.Set(h)
	v := ring.NewVersions(h)
	var evs []*adclickv1.ClickEvent
	want := map[countKey]int64{}
	for i := range 200 {
		ev := click(fmt.Sprintf("c%d", i), fmt.Sprintf("ad-%d", i), start)
		evs = append(evs, ev)
		if v.IDs()[v.IndexAt(ev.AdId, clock.Minute(start))] == "agg-1" {
			want[countKey{0, ev.AdId, clock.Minute(start)}]++
		}
	}
	resp := forward(t, env.agg, evs...)
	var owned int
	for i, s := range resp.Status {
		_, mine := want[countKey{0, evs[i].AdId, clock.Minute(start)}]
		switch {
		case mine && s != accepted, !mine && s != notOwner:
			t.Fatalf("event %d (%s, mine %v): %s", i, evs[i].AdId, mine, s)
		case !mine && resp.Reasons[int32(i)] == "":
			t.Fatalf("NOT_OWNER without a reason")
		}
		if mine {
			owned++
		}
	}
	if owned == 0 || owned == len(evs) {
		t.Fatalf("agg-1 owns %d of %d ads: the test needs both owners", owned, len(evs))
	}
	got := emitted(t, env.agg)
	for k, n := range want {
		if got[k] != n {
			t.Fatalf("%v counted %d, want %d", k, got[k], n)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("counted %d keys, want %d: a click it does not own was counted", len(got), len(want))
	}
}

// TestStaleViewRefusesBatch: an aggregator that could not confirm its view
// of the ring within the TTL takes nothing.
func TestStaleViewRefusesBatch(t *testing.T) {
	env := newTestAggregator(t, start, nil, nil)
	env.ring.SetStale(true)
	_, err := env.agg.Forward(context.Background(), &clusterv1.ForwardRequest{Events: []*adclickv1.ClickEvent{click("a", "ad", start)}})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("stale view: %v, want UNAVAILABLE", err)
	}
	env.ring.SetStale(false)
	forward(t, env.agg, click("a", "ad", start))
}

// TestDuplicateWaitsForFirstCopy: a retry answered "duplicate" must not be
// answered before the first copy is durable; if the log then fails (a
// crash), the retry is not acknowledged either.
func TestDuplicateWaitsForFirstCopy(t *testing.T) {
	ctl := newSyncCtl()
	env := newTestAggregator(t, start, nil, func(c *Config) { c.walSync = ctl.sync })
	ctl.set(1) // fsyncs block
	req := &clusterv1.ForwardRequest{Events: []*adclickv1.ClickEvent{click("x", "ad", start), click("y", "ad", start)}}
	first := make(chan error, 1)
	go func() { _, err := env.agg.Forward(context.Background(), req); first <- err }()
	<-ctl.blocked // the first copy is appended, its fsync is stuck
	retry := make(chan *clusterv1.ForwardResponse, 1)
	retryErr := make(chan error, 1)
	go func() {
		resp, err := env.agg.Forward(context.Background(), req)
		retryErr <- err
		retry <- resp
	}()
	select {
	case err := <-retryErr:
		t.Fatalf("the all-duplicate retry was answered (%v, %v) before the first copy was durable", <-retry, err)
	case <-time.After(300 * time.Millisecond):
	}
	ctl.set(2) // the stuck fsync fails: the first copy never became durable
	if err := <-first; err == nil {
		t.Fatal("the first send was acknowledged although its fsync failed")
	}
	if err := <-retryErr; err == nil {
		t.Fatalf("the retry was acknowledged as duplicate of a click that never became durable: %v", <-retry)
	}
}

// TestHandOverMovesLateClicksExactly: agg-1 drains with heir agg-2. After
// the hand-over the heir dedups resends of agg-1's clicks and counts new
// late clicks of agg-1's minutes; agg-1 refuses them; nothing is counted
// twice.
func TestHandOverMovesLateClicksExactly(t *testing.T) {
	e1 := newTestAggregator(t, start, nil, nil)
	e2 := newTestAggregator(t, start, nil, func(c *Config) { c.NodeID = "agg-2" })
	h := ring.Founding([]string{"agg-1", "agg-2"}, start, ring.DefaultViewTTL)
	e1.ring.Set(h)
	e2.ring.Set(h)
	v := ring.NewVersions(h)
	m := clock.Minute(start)
	var mine []*adclickv1.ClickEvent // clicks agg-1 owns in minute m
	for i := 0; len(mine) < 50; i++ {
		ad := fmt.Sprintf("ad-%d", i)
		if v.IDs()[v.IndexAt(ad, m)] == "agg-1" {
			mine = append(mine, click(fmt.Sprintf("c%d", i), ad, start))
		}
	}
	for _, s := range forward(t, e1.agg, mine[:40]...).Status {
		if s != accepted {
			t.Fatalf("agg-1 before the drain: %s", s)
		}
	}
	drained, cut, err := h.Drain("agg-1", "agg-2", start)
	if err != nil {
		t.Fatal(err)
	}
	e1.ring.Set(drained)
	e2.ring.Set(drained)
	if err := e1.agg.Freeze(cut); err == nil {
		t.Fatal("froze before its minutes before the cut-over closed")
	}
	for _, e := range []*testEnv{e1, e2} {
		e.clk.Set(clock.MinuteTime(cut).Add(e.cfg.AllowedLateness + time.Second))
	}
	heir := serveAggregator(t, e2.agg)
	if _, err := e1.agg.SendIDs(context.Background(), heir, cut); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("hand-over to a heir that has not closed the minutes: %v, want FAILED_PRECONDITION", err)
	}
	if err := e2.agg.tick(); err != nil {
		t.Fatal(err)
	}
	if err := e1.agg.Freeze(cut); err != nil {
		t.Fatal(err)
	}
	if _, err := e1.agg.Forward(context.Background(), &clusterv1.ForwardRequest{Events: mine[40:41]}); status.Code(err) != codes.Unavailable {
		t.Fatalf("frozen agg-1 took a click: %v", err)
	}
	n, err := e1.agg.SendIDs(context.Background(), heir, cut)
	if err != nil || n != 40 {
		t.Fatalf("sent %d ids (%v), want 40", n, err)
	}
	done, err := drained.HandOver("agg-1", false)
	if err != nil {
		t.Fatal(err)
	}
	e1.ring.Set(done)
	e2.ring.Set(done)
	e1.agg.Thaw()
	resp := forward(t, e2.agg, mine...)
	for i, s := range resp.Status {
		want := duplicate
		if i >= 40 {
			want = accepted // late clicks agg-1 never saw
		}
		if s != want {
			t.Fatalf("heir, click %d of agg-1's minute: %s, want %s", i, s, want)
		}
	}
	for _, s := range forward(t, e1.agg, mine[45:]...).Status {
		if s != notOwner {
			t.Fatalf("drained agg-1 after the hand-over: %s, want NOT_OWNER", s)
		}
	}
	got := emitted(t, e2.agg)
	var total int64
	for k, c := range got {
		if k.minute != m {
			t.Fatalf("heir counted minute %d", k.minute)
		}
		total += c
	}
	if total != 10 {
		t.Fatalf("heir counted %d late clicks of agg-1's minute, want 10", total)
	}
}

// staleFilters is a filter view that could not be confirmed with etcd.
type staleFilters struct{ fixedFilters }

func (staleFilters) Fresh(time.Duration) bool { return false }

// TestStaleFiltersRefuseBatch: an aggregator whose filter view is older
// than the TTL takes nothing, since a filter in effect may be missing from
// it (it would count short and still say complete).
func TestStaleFiltersRefuseBatch(t *testing.T) {
	env := newTestAggregator(t, start, nil, nil)
	env.agg.filters = staleFilters{}
	_, err := env.agg.Forward(context.Background(), &clusterv1.ForwardRequest{Events: []*adclickv1.ClickEvent{click("a", "ad", start)}})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("stale filters: %v, want UNAVAILABLE", err)
	}
}

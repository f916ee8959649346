package router

import (
	"context"
	"strings"

	"fmt"
	"google.golang.org/grpc/status"
	"io"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
	"github.com/adclick/adclick/pkg/clock"
	"github.com/adclick/adclick/pkg/ring"
	"github.com/adclick/adclick/pkg/ring/ringtest"
)

func click(clickID, adID string) *adclickv1.ClickEvent {
	return &adclickv1.ClickEvent{ClickId: clickID, AdId: adID, ClickTime: timestamppb.New(testNow), Country: "us"}
}

// outcome is the expected fate of one event, computed independently of the router.
type outcome struct {
	accepted, duplicates int64
	rejected             []int32
}

// mixedBatch builds n events over many ads with invalid events, aggregator
// rejections and in-batch duplicates, and the expected outcome.
func mixedBatch(n int) ([]*adclickv1.ClickEvent, outcome) {
	var evs []*adclickv1.ClickEvent
	var want outcome
	seen := map[string]bool{}
	for i := range n {
		ev := click(fmt.Sprintf("c-%d", i), fmt.Sprintf("ad-%d", i%37))
		switch {
		case i%11 == 3:
			ev.Ip = "1.2.3" // router rejects
		case i%13 == 5:
			ev.ClickTime = nil // router rejects
		case i%7 == 2:
			ev.UserId = lateUser // aggregator rejects
		case i%5 == 4 && i > 10:
			ev.ClickId = evs[i-10].ClickId // the click of 10 events back, again
			ev.AdId = evs[i-10].AdId
		}
		evs = append(evs, ev)
		switch {
		case ev.Ip == "1.2.3" || ev.ClickTime == nil || ev.UserId == lateUser:
			want.rejected = append(want.rejected, int32(i))
		case seen[ev.ClickId]:
			want.duplicates++
		default:
			seen[ev.ClickId] = true
			want.accepted++
		}
	}
	return evs, want
}

func rejectedIndexes(resp *adclickv1.IngestResponse) []int32 {
	var out []int32
	for _, r := range resp.Rejected {
		out = append(out, r.Index)
	}
	return out
}

func TestIngestSplitsAcrossAggregators(t *testing.T) {
	a1, a2 := startAggregator(t, "agg-1"), startAggregator(t, "agg-2")
	e := newEnv(t, DefaultConfig(), []*aggNode{a1, a2}, nil)
	evs, want := mixedBatch(500)
	if want.duplicates == 0 || want.accepted == 0 || len(want.rejected) == 0 {
		t.Fatalf("test batch lacks a case: %+v", want)
	}

	resp, err := e.ingest.Ingest(ctxT(t), &adclickv1.IngestRequest{Events: evs})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Accepted != want.accepted || resp.Duplicates != want.duplicates {
		t.Fatalf("accepted %d duplicates %d, want %d %d", resp.Accepted, resp.Duplicates, want.accepted, want.duplicates)
	}
	if got := rejectedIndexes(resp); !slices.Equal(got, want.rejected) {
		t.Fatalf("rejected indexes %v\nwant %v", got, want.rejected)
	}
	reasons := map[int32]string{}
	for _, r := range resp.Rejected {
		reasons[r.Index] = r.Reason
	}
	if reasons[3] != `ip "1.2.3" is not an IPv4 or IPv6 address` || reasons[5] != "click_time is missing" || reasons[2] != lateReason {
		t.Fatalf("reasons: 3=%q 5=%q 2=%q", reasons[3], reasons[5], reasons[2])
	}

	// Every valid event reached exactly its owner on the ring, in one batch per owner.
	rg := ring.New([]string{a1.member.ID, a2.member.ID})
	wantAds := map[string][]string{}
	for _, ev := range evs {
		if ev.Ip == "1.2.3" || ev.ClickTime == nil {
			continue
		}
		o, _ := rg.Owner(ev.AdId)
		wantAds[o] = append(wantAds[o], ev.AdId)
	}
	for _, a := range []*aggNode{a1, a2} {
		if len(wantAds[a.member.ID]) == 0 {
			t.Fatalf("%s owns none of the test ads", a.member.ID)
		}
		if got := a.fake.received(); !slices.Equal(got, wantAds[a.member.ID]) {
			t.Fatalf("%s received %d ads, want %d (or other order)", a.member.ID, len(got), len(wantAds[a.member.ID]))
		}
		if n := a.fake.batchCount(); n != 1 {
			t.Fatalf("%s got %d batches, want 1", a.member.ID, n)
		}
	}

	for name, want := range map[string]float64{
		"adclick_router_events_received_total":   float64(len(evs)),
		"adclick_router_events_accepted_total":   float64(want.accepted),
		"adclick_router_events_duplicate_total":  float64(want.duplicates),
		"adclick_router_events_rejected_total":   float64(len(want.rejected)), // summed over "by"
		"adclick_router_ring_members":            2,
		"adclick_router_ingest_requests_total":   1,
		"adclick_router_ingest_duration_seconds": 1, // observations
	} {
		if got := metricValue(t, e.reg, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}

	// The same batch again: everything valid is now a duplicate.
	resp, err = e.ingest.Ingest(ctxT(t), &adclickv1.IngestRequest{Events: evs})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Accepted != 0 || resp.Duplicates != want.accepted+want.duplicates || !slices.Equal(rejectedIndexes(resp), want.rejected) {
		t.Fatalf("retry: accepted %d duplicates %d rejected %v", resp.Accepted, resp.Duplicates, rejectedIndexes(resp))
	}
}

func TestIngestErrors(t *testing.T) {
	tests := []struct {
		name    string
		cfg     func(*Config)
		setup   func(a1, a2 *aggNode, e *env)
		events  int
		code    codes.Code
		message string
	}{
		{name: "oversize batch", cfg: func(c *Config) { c.MaxBatch = 3 }, events: 4, code: codes.InvalidArgument,
			message: "batch has 4 events; at most 3 per request (--max-batch): split it"},
		{name: "every aggregator down", setup: func(a1, a2 *aggNode, _ *env) { a1.stop(); a2.stop() }, events: 100, code: codes.Unavailable,
			message: "no event of the batch could be processed: aggregator agg-"},
		{name: "every aggregator failing", setup: func(a1, a2 *aggNode, _ *env) {
			a1.fake.fail.Store(int32(codes.Internal))
			a2.fake.fail.Store(int32(codes.Internal))
		}, events: 100, code: codes.Unavailable, message: "retry the same batch (duplicates are safe)"},
		{name: "every aggregator too slow", cfg: func(c *Config) { c.ForwardTimeout = 100 * time.Millisecond },
			setup: func(a1, a2 *aggNode, _ *env) { a1.fake.hang.Store(true); a2.fake.hang.Store(true) }, events: 100,
			code: codes.Unavailable, message: "DeadlineExceeded"},
		{name: "every aggregator overloaded", setup: func(a1, a2 *aggNode, _ *env) {
			a1.fake.fail.Store(int32(codes.ResourceExhausted))
			a2.fake.fail.Store(int32(codes.ResourceExhausted))
		}, events: 100, code: codes.ResourceExhausted, message: "fake aggregator agg-"},
		{name: "no ring history", setup: func(_, _ *aggNode, e *env) {
			e.ring.Set(&ring.History{})
			eventually(t, "empty ring", func() bool { return e.router.table.Load().ring.Len() == 0 })
		}, events: 1, code: codes.Unavailable, message: "no aggregator owns the minute yet"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a1, a2 := startAggregator(t, "agg-1"), startAggregator(t, "agg-2")
			cfg := DefaultConfig()
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			e := newEnv(t, cfg, []*aggNode{a1, a2}, nil)
			if tt.setup != nil {
				tt.setup(a1, a2, e)
			}
			evs, _ := mixedBatch(tt.events)
			_, err := e.ingest.Ingest(ctxT(t), &adclickv1.IngestRequest{Events: evs})
			wantCode(t, err, tt.code, tt.message)
		})
	}
}

// TestIngestAnswersPerEvent: with one of two aggregators down (or
// overloaded, or too slow), the batch is counted where it can be and the
// events of the unreachable owner come back in retry; resending exactly
// those once the owner is back makes every count exact.
func TestIngestAnswersPerEvent(t *testing.T) {
	for _, fault := range []string{"down", "overloaded", "slow"} {
		t.Run(fault, func(t *testing.T) {
			a1, a2 := startAggregator(t, "agg-1"), startAggregator(t, "agg-2")
			cfg := DefaultConfig()
			cfg.ForwardTimeout = 200 * time.Millisecond
			e := newEnv(t, cfg, []*aggNode{a1, a2}, nil)
			switch fault {
			case "down":
				a1.fake.fail.Store(int32(codes.Unavailable))
			case "overloaded":
				a1.fake.fail.Store(int32(codes.ResourceExhausted))
			case "slow":
				a1.fake.hang.Store(true)
			}
			evs, want := mixedBatch(300)
			resp, err := e.ingest.Ingest(ctxT(t), &adclickv1.IngestRequest{Events: evs})
			if err != nil {
				t.Fatal(err)
			}
			// The expected retry list, computed from the ring: every valid event agg-1 owns.
			v := e.ring.Current()
			var wantRetry []int32
			for i, ev := range evs {
				if ev.Ip == "1.2.3" || ev.ClickTime == nil {
					continue
				}
				if v.IDs()[v.IndexAt(ev.AdId, clock.MinuteOfUnix(ev.ClickTime.GetSeconds()))] == "agg-1" {
					wantRetry = append(wantRetry, int32(i))
				}
			}
			if len(wantRetry) == 0 || len(wantRetry) == len(evs) {
				t.Fatalf("test batch does not span both aggregators")
			}
			if !slices.Equal(resp.Retry, wantRetry) {
				t.Fatalf("retry %v, want %v", resp.Retry, wantRetry)
			}
			// Resend exactly the retry indexes once agg-1 is back.
			a1.fake.fail.Store(0)
			a1.fake.hang.Store(false)
			again := make([]*adclickv1.ClickEvent, len(resp.Retry))
			for k, i := range resp.Retry {
				again[k] = evs[i]
			}
			resp2, err := e.ingest.Ingest(ctxT(t), &adclickv1.IngestRequest{Events: again})
			if err != nil || len(resp2.Retry) != 0 {
				t.Fatalf("resend: %v %v", resp2, err)
			}
			if got := resp.Accepted + resp2.Accepted; got != want.accepted {
				t.Fatalf("accepted %d in all, want %d", got, want.accepted)
			}
			if got := resp.Duplicates + resp2.Duplicates; got != want.duplicates {
				t.Fatalf("duplicates %d in all, want %d", got, want.duplicates)
			}
		})
	}
}

// TestIngestReroutesNotOwner: a router whose view of the ring history is
// stale sends events to an aggregator that no longer owns them; it answers
// NOT_OWNER, the router re-reads the history and resends to the owner.
func TestIngestReroutesNotOwner(t *testing.T) {
	a1, a2 := startAggregator(t, "agg-1"), startAggregator(t, "agg-2")
	e := newEnv(t, DefaultConfig(), []*aggNode{a1, a2}, nil)
	truth := ringtest.New("agg-1", "agg-2").Current()
	for _, a := range []*aggNode{a1, a2} {
		id := a.member.ID
		a.fake.owns = func(ad string, minute int64) bool { return truth.IDs()[truth.IndexAt(ad, minute)] == id }
	}
	// The router believes agg-1 alone owns everything.
	e.ring.Set(ring.Founding([]string{"agg-1"}, testNow, ring.DefaultViewTTL))
	eventually(t, "stale view installed", func() bool { return e.router.table.Load().ring.Len() == 1 })
	e.ring.SetOnRefresh(truth.History())
	evs, want := mixedBatch(200)
	resp, err := e.ingest.Ingest(ctxT(t), &adclickv1.IngestRequest{Events: evs})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Accepted != want.accepted || resp.Duplicates != want.duplicates || len(resp.Retry) != 0 {
		t.Fatalf("accepted %d duplicates %d retry %v; want %d, %d, none", resp.Accepted, resp.Duplicates, resp.Retry, want.accepted, want.duplicates)
	}
	if e.ring.Refreshes() == 0 || len(a2.fake.received()) == 0 {
		t.Fatal("the router did not re-read the history and resend to agg-2")
	}
	// An aggregator that keeps answering NOT_OWNER (views that never agree)
	// leaves the events in retry after a bounded number of rounds.
	a2.fake.owns = func(string, int64) bool { return false }
	a1.fake.owns = func(string, int64) bool { return false }
	resp, err = e.ingest.Ingest(ctxT(t), &adclickv1.IngestRequest{Events: evs[:5]})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "disagree") {
		t.Fatalf("never-agreeing owners: %v %v", resp, err)
	}
}

func TestIngestAllInvalidNeedsNoAggregator(t *testing.T) {
	e := newEnv(t, DefaultConfig(), nil, nil)
	resp, err := e.ingest.Ingest(ctxT(t), &adclickv1.IngestRequest{Events: []*adclickv1.ClickEvent{{ClickId: "x"}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Rejected) != 1 || resp.Rejected[0].Reason != "ad_id is empty" {
		t.Fatalf("response %v", resp)
	}
}

func TestRingFollowsMembership(t *testing.T) {
	a1, a2 := startAggregator(t, "agg-1"), startAggregator(t, "agg-2")
	e := newEnv(t, DefaultConfig(), []*aggNode{a1}, nil)
	evs, want := mixedBatch(200)
	if _, err := e.ingest.Ingest(ctxT(t), &adclickv1.IngestRequest{Events: evs}); err != nil {
		t.Fatal(err)
	}
	// agg-2 replaces agg-1 (a new cluster's history): the routing moves and
	// agg-1's connection is closed.
	e.aggs.Set(a2.member)
	e.ring.Set(ring.Founding([]string{"agg-2"}, testNow, ring.DefaultViewTTL))
	eventually(t, "ring of agg-2", func() bool {
		m := e.router.table.Load().ring.IDs()
		return len(m) == 1 && m[0] == "agg-2"
	})
	eventually(t, "connection to agg-1 closed", func() bool {
		e.router.aggConns.mu.Lock()
		defer e.router.aggConns.mu.Unlock()
		_, ok := e.router.aggConns.conns[a1.member.Addr]
		return !ok && len(e.router.aggConns.conns) == 1
	})
	resp, err := e.ingest.Ingest(ctxT(t), &adclickv1.IngestRequest{Events: evs})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Accepted != want.accepted { // agg-2 has seen none of them
		t.Fatalf("accepted %d, want %d", resp.Accepted, want.accepted)
	}
	if n := len(a1.fake.received()); n != len(evs)-countRouterRejected(evs) {
		t.Fatalf("agg-1 got %d events after it left", n)
	}
}

func countRouterRejected(evs []*adclickv1.ClickEvent) int {
	n := 0
	for _, ev := range evs {
		if ev.Ip == "1.2.3" || ev.ClickTime == nil {
			n++
		}
	}
	return n
}

func TestIngestStreamKeepsOrder(t *testing.T) {
	a1, a2 := startAggregator(t, "agg-1"), startAggregator(t, "agg-2")
	e := newEnv(t, DefaultConfig(), []*aggNode{a1, a2}, nil)
	stream, err := e.ingest.IngestStream(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	const requests = 3 * streamInFlight
	go func() {
		for k := range requests {
			var evs []*adclickv1.ClickEvent
			for i := range k + 1 { // request k has k+1 new clicks: its accepted count names it
				ev := click(fmt.Sprintf("s-%d-%d", k, i), fmt.Sprintf("ad-%d", i))
				if k%3 == 0 {
					ev.UserId = slowUser // answered later than the requests behind it
				}
				evs = append(evs, ev)
			}
			evs = append(evs, click("", "ad-1")) // one invalid event, index k+1
			if err := stream.Send(&adclickv1.IngestRequest{Events: evs}); err != nil {
				t.Errorf("send: %v", err)
				return
			}
		}
		_ = stream.CloseSend()
	}()
	for k := range requests {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("response %d: %v", k, err)
		}
		if resp.Accepted != int64(k+1) || len(resp.Rejected) != 1 || resp.Rejected[0].Index != int32(k+1) {
			t.Fatalf("response %d: accepted %d rejected %v", k, resp.Accepted, resp.Rejected)
		}
	}
	if _, err := stream.Recv(); err != io.EOF {
		t.Fatalf("after the last response: %v, want EOF", err)
	}
	// Each request of the stream is timed as a request of its own.
	if got := metricValue(t, e.reg, "adclick_router_ingest_duration_seconds"); got != requests {
		t.Fatalf("ingest durations observed: %v, want %d", got, requests)
	}
}

func TestIngestStreamEndsOnFailure(t *testing.T) {
	a1 := startAggregator(t, "agg-1")
	e := newEnv(t, DefaultConfig(), []*aggNode{a1}, nil)
	stream, err := e.ingest.IngestStream(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	send := func(id string) {
		t.Helper()
		if err := stream.Send(&adclickv1.IngestRequest{Events: []*adclickv1.ClickEvent{click(id, "ad")}}); err != nil {
			t.Fatal(err)
		}
	}
	send("a")
	if resp, err := stream.Recv(); err != nil || resp.Accepted != 1 {
		t.Fatalf("first: %v %v", resp, err)
	}
	a1.fake.fail.Store(int32(codes.Unavailable))
	send("b")
	_, err = stream.Recv()
	wantCode(t, err, codes.Unavailable, "aggregator agg-1")
}

// TestIngestConcurrent runs many requests at once, so the race detector
// sees the pooled scratch space shared across requests.
func TestIngestConcurrent(t *testing.T) {
	a1, a2, a3 := startAggregator(t, "agg-1"), startAggregator(t, "agg-2"), startAggregator(t, "agg-3")
	e := newEnv(t, DefaultConfig(), []*aggNode{a1, a2, a3}, nil)
	const workers, perWorker = 8, 20
	errs := make(chan error, workers)
	for w := range workers {
		go func() {
			var sum int64
			for j := range perWorker {
				evs := []*adclickv1.ClickEvent{}
				for i := range 50 {
					evs = append(evs, click(fmt.Sprintf("w%d-%d-%d", w, j, i), fmt.Sprintf("ad-%d", i)))
				}
				resp, err := e.ingest.Ingest(ctxT(t), &adclickv1.IngestRequest{Events: evs})
				if err != nil {
					errs <- err
					return
				}
				sum += resp.Accepted
			}
			if sum != perWorker*50 {
				errs <- fmt.Errorf("worker %d: accepted %d", w, sum)
				return
			}
			errs <- nil
		}()
	}
	for range workers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	got := len(a1.fake.received()) + len(a2.fake.received()) + len(a3.fake.received())
	if got != workers*perWorker*50 {
		t.Fatalf("aggregators got %d events, want %d", got, workers*perWorker*50)
	}
}

func TestIngestOverloadIsResourceExhausted(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxBatch, cfg.MaxInflight = 10, 10
	r := &Router{cfg: cfg, m: newMetrics(nil)}
	r.inflight.Store(5)
	evs, _ := mixedBatch(10)
	_, err := r.ingestMessage(context.Background(), &adclickv1.IngestRequest{Events: evs})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "--max-inflight-events") {
		t.Fatalf("got %v, want RESOURCE_EXHAUSTED naming the flag", err)
	}
	if r.inflight.Load() != 5 {
		t.Fatalf("in-flight count leaked: %d", r.inflight.Load())
	}
}

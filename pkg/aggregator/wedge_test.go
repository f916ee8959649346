package aggregator

import (
	"context"
	"fmt"
	"maps"
	"net"
	"sync/atomic"
	"testing"
	"time"

	clusterv1 "github.com/adclick/adclick/gen/adclick/cluster/v1"
	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
	"github.com/adclick/adclick/pkg/clock"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// pickyReducer is a fakeReducer that refuses, with INVALID_ARGUMENT, every
// Apply holding the partial of sequence refuse (0: none).
type pickyReducer struct {
	*fakeReducer
	refuse atomic.Uint64
}

func (p *pickyReducer) Apply(ctx context.Context, req *clusterv1.ApplyRequest) (*clusterv1.ApplyResponse, error) {
	for _, pt := range req.Partials {
		if pt.Sequence == p.refuse.Load() {
			return nil, status.Errorf(codes.InvalidArgument, "partial %d: refused on purpose", pt.Sequence)
		}
	}
	return p.fakeReducer.Apply(ctx, req)
}

func startPickyReducer(t *testing.T, refuse uint64) *pickyReducer {
	t.Helper()
	p := &pickyReducer{fakeReducer: &fakeReducer{applied: map[string]uint64{}, counts: map[countKey]int64{}, content: map[string]map[uint64]string{}}}
	p.refuse.Store(refuse)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	clusterv1.RegisterReducerServiceServer(srv, p)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	p.addr = lis.Addr().String()
	return p
}

// value reads a counter or gauge.
func value(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	return d.GetCounter().GetValue() + d.GetGauge().GetValue()
}

func (r *fakeReducer) through(agg *Aggregator) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.applied[fmt.Sprintf("%s/%d", agg.cfg.NodeID, agg.Incarnation())]
}

// TestRefusedPartialIsSurfacedNotSkipped has one of two reducers refuse the
// second partial for good. The other reducer must get everything, exactly;
// the picky one everything before the refused partial and nothing after,
// with the refusal counted, the reducer counted as wedged, the partial kept
// in the outbox (never skipped) and retried; once the reducer accepts it,
// it must catch up to the exact ground truth and the gauge fall back.
func TestRefusedPartialIsSurfacedNotSkipped(t *testing.T) {
	env := newTestAggregator(t, start, nil, func(c *Config) { c.DeliverBackoffMax = 20 * time.Millisecond })
	picky, steady := startPickyReducer(t, 2), startReducer(t, 0)
	env.members.Set(picky.member("r-picky"), steady.member("r-steady"))

	// Four minutes of clicks, all closed by one tick: partials 1..4 wait
	// in the outbox and go out in one batch.
	truth := map[countKey]int64{}
	for m := range 4 {
		at := start.Add(time.Duration(m) * time.Minute)
		env.clk.Set(at)
		var evs []*adclickv1.ClickEvent
		for i := range 3 + m {
			ev := click(fmt.Sprintf("m%d-%d", m, i), fmt.Sprint("ad-", i%2), at)
			evs = append(evs, ev)
			truth[countKey{0, ev.AdId, clock.Minute(at)}]++
		}
		forward(t, env.agg, evs...)
	}
	env.clk.Add(3 * time.Minute)
	if err := env.agg.tick(); err != nil {
		t.Fatal(err)
	}
	last := env.agg.ob.next - 1
	if last < 4 {
		t.Fatalf("%d partials emitted, want at least 4", last)
	}
	env.run(t)

	rejected := env.agg.m.partialsRejected.WithLabelValues("r-picky")
	poll(t, "the steady reducer to get everything and the picky one to be stuck, retried", func() bool {
		return steady.through(env.agg) == last && value(rejected) >= 3 &&
			value(env.agg.m.reducersWedged) == 1
	})
	if got, _ := steady.snapshot(); !maps.Equal(got, truth) {
		t.Fatalf("steady reducer counted %v, want %v", got, truth)
	}
	if got := picky.through(env.agg); got != 1 {
		t.Fatalf("picky reducer applied through %d; want 1, everything before the refused partial 2", got)
	}
	if n := env.agg.ob.retained(); n != int(last-1) {
		t.Fatalf("outbox keeps %d partials, want the %d the picky reducer has not acknowledged", n, last-1)
	}
	if v := value(env.agg.m.partialsRejected.WithLabelValues("r-steady")); v != 0 {
		t.Fatalf("steady reducer counted %v refusals", v)
	}

	picky.refuse.Store(0) // an upgraded reducer accepts it
	poll(t, "the picky reducer to catch up and the outbox to empty", func() bool {
		return picky.through(env.agg) == last && env.agg.ob.retained() == 0 &&
			value(env.agg.m.reducersWedged) == 0
	})
	if got, _ := picky.snapshot(); !maps.Equal(got, truth) {
		t.Fatalf("picky reducer counted %v, want %v", got, truth)
	}
}

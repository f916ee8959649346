package aggregator

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	clusterv1 "github.com/adclick/adclick/gen/adclick/cluster/v1"
	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
	"github.com/adclick/adclick/pkg/clock"
	"github.com/adclick/adclick/pkg/filter"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// BenchmarkForward measures Forward's counting path (called directly, no
// gRPC) with 1000-event batches of new clicks over 100k ads; one op is one
// batch. The events are reused pass after pass, moved one minute on each
// time, so every click is new (not a duplicate) and old minutes leave the
// horizon as they would in steady state.
//
// With sync=true every batch waits for its own fsync (one caller: no group
// to share it with), which is the cost of acknowledging only durable clicks;
// sync=false still encodes and writes the log, without fsync.
func BenchmarkForward(b *testing.B) {
	for _, sync := range []bool{true, false} {
		for _, withFilters := range []bool{false, true} {
			b.Run(fmt.Sprintf("sync=%v/filters=%v", sync, withFilters), func(b *testing.B) {
				benchForward(b, withFilters, !sync)
			})
		}
	}
}

// BenchmarkForwardParallel: 16 callers at once share fsyncs (group commit).
func BenchmarkForwardParallel(b *testing.B) {
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	env := newTestAggregator(b, base.Add(30*time.Second), nil, nil)
	var n atomic.Int64
	b.SetParallelism(8) // 8 x GOMAXPROCS callers
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		evs := make([]*adclickv1.ClickEvent, 1000)
		for j := range evs {
			evs[j] = &adclickv1.ClickEvent{AdId: fmt.Sprintf("ad-%d", j%100), ClickTime: timestamppb.New(base.Add(time.Duration(j%30) * time.Second))}
		}
		req := &clusterv1.ForwardRequest{Events: evs}
		for pb.Next() {
			k := n.Add(1)
			for j, ev := range evs {
				ev.ClickId = fmt.Sprintf("%08x-%04x", k, j)
			}
			if _, err := env.agg.Forward(context.Background(), req); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	st := env.agg.wal.Stats()
	b.ReportMetric(float64(b.N)*1000/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(st.Fsyncs)/b.Elapsed().Seconds(), "fsyncs/s")
	b.ReportMetric(float64(st.Appends)/float64(max(st.Fsyncs, 1)), "batches/fsync")
}

// BenchmarkRecovery measures New over a log of 1M accepted clicks (1000
// batches of 1000, over 2 open minutes) that nothing closed yet: the
// worst case, every click is replayed into memory.
func BenchmarkRecovery(b *testing.B) {
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	env := newTestAggregator(b, base.Add(30*time.Second), nil, func(c *Config) { c.WAL.NoSync = true })
	evs := make([]*adclickv1.ClickEvent, 1000)
	for j := range evs {
		evs[j] = &adclickv1.ClickEvent{AdId: fmt.Sprintf("ad-%d", j%1000), ClickTime: timestamppb.New(base.Add(time.Duration(j%90) * time.Second))}
	}
	req := &clusterv1.ForwardRequest{Events: evs}
	for i := range 1000 {
		for j, ev := range evs {
			ev.ClickId = fmt.Sprintf("%08x-0000-4000-8000-%012x", i, j)
		}
		if _, err := env.agg.Forward(context.Background(), req); err != nil {
			b.Fatal(err)
		}
	}
	if err := env.agg.wal.Sync(); err != nil {
		b.Fatal(err)
	}
	env.crash()
	b.ResetTimer()
	for range b.N {
		env.open(b)
		b.StopTimer()
		if got := env.agg.seen.Len(); got != 1000000 {
			b.Fatalf("recovered %d clicks, want 1000000", got)
		}
		env.crash()
		b.StartTimer()
	}
}
func benchForward(b *testing.B, withFilters, noSync bool) {

	const batchSize, batches = 1000, 200
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	var set *filter.Set
	if withFilters {
		set = testFilters(b, 0)
	}
	env := newTestAggregator(b, base.Add(30*time.Second), set, func(c *Config) { c.LateHorizon = 5 * time.Minute; c.WAL.NoSync = noSync })
	a := env.agg
	rng := rand.New(rand.NewPCG(3, 4))
	countries := []string{"US", "DE", "FR", "GB", ""}
	reqs := make([]*clusterv1.ForwardRequest, batches)
	for i := range reqs {
		evs := make([]*adclickv1.ClickEvent, batchSize)
		for j := range evs {
			evs[j] = &adclickv1.ClickEvent{
				ClickId:   fmt.Sprintf("%08x-0000-4000-8000-%012x", i, j),
				AdId:      fmt.Sprintf("ad-%d", rng.IntN(100000)),
				ClickTime: timestamppb.New(base.Add(time.Duration(rng.IntN(30)) * time.Second)),
				Country:   countries[rng.IntN(len(countries))],
				Ip:        fmt.Sprintf("10.0.%d.%d", rng.IntN(256), rng.IntN(256)),
				UserId:    fmt.Sprintf("u%d", rng.IntN(1000)),
			}
		}
		reqs[i] = &clusterv1.ForwardRequest{Events: evs}
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if i%batches == 0 && i > 0 {
			b.StopTimer()
			nextPass(a, env.clk, reqs)
			b.StartTimer()
		}
		resp, err := a.Forward(ctx, reqs[i%batches])
		if err != nil {
			b.Fatal(err)
		}
		if resp.Status[0] != accepted {
			b.Fatalf("status %v: %v", resp.Status[0], resp.Reasons[0])
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)*batchSize/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/batchSize, "ns/event")
}

// nextPass moves every event one minute on, advances the clock, closes
// minutes and empties the outbox (no reducer in a benchmark).
func nextPass(a *Aggregator, clk *clock.Fake, reqs []*clusterv1.ForwardRequest) {
	for _, r := range reqs {
		for _, ev := range r.Events {
			ev.ClickTime.Seconds += 60
		}
	}
	clk.Add(time.Minute)
	a.tick()
	a.ob.mu.Lock()
	a.ob.parts, a.ob.first = nil, a.ob.next
	a.ob.mu.Unlock()
}

package aggregator

import (
	"context"
	"fmt"
	"math/rand/v2"
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
func BenchmarkForward(b *testing.B) {
	for _, withFilters := range []bool{false, true} {
		b.Run(fmt.Sprintf("filters=%v", withFilters), func(b *testing.B) {
			benchForward(b, withFilters)
		})
	}
}

func benchForward(b *testing.B, withFilters bool) {
	const batchSize, batches = 1000, 200
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	var set *filter.Set
	if withFilters {
		set = testFilters(b, 0)
	}
	env := newTestAggregator(b, base.Add(30*time.Second), set, func(c *Config) { c.LateHorizon = 5 * time.Minute })
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

package reducer

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
	"github.com/adclick/adclick/pkg/membership"
	"github.com/adclick/adclick/pkg/ring/ringtest"
)

const (
	benchMinutes   = 60
	benchActiveAds = 200_000
	benchAllAds    = 2_000_000
)

var (
	benchOnce sync.Once
	benchAds  []string
)

func adName(i int) string { return benchAds[i] }

// fillBench loads benchMinutes minutes of 200k active ads each, straight
// into memory (Pebble is not what these benchmarks measure): per minute the
// 20k most popular ads of a 2M universe plus 180k drawn at random, with
// Zipf-like counts (count ~ 100000/rank, +-50% noise), many ties in the tail.
func fillBench(b *testing.B) (*Reducer, int64) {
	b.Helper()
	benchOnce.Do(func() {
		benchAds = make([]string, benchAllAds)
		for i := range benchAds {
			benchAds[i] = fmt.Sprintf("ad-%07d", i)
		}
	})
	e := &env{dir: b.TempDir(), clk: nil, members: &fakeMembers{}, ring: ringtest.New(), retain: 1440}
	e.setMembers(membership.Member{ID: "agg", Incarnation: 1, FirstMinute: m0})
	cfg := DefaultConfig()
	cfg.NodeID, cfg.DataDir = "bench", e.dir
	r, err := Open(cfg, Deps{Clock: fixedClock{}, Aggregators: e.members, Ring: e.ring, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = r.Close() })
	rng := rand.New(rand.NewPCG(1, 1))
	const hot = 20_000
	to := m0 + benchMinutes*60
	for m := m0; m < to; m += 60 {
		picked := make(map[int]struct{}, benchActiveAds)
		for i := 0; i < hot; i++ {
			picked[i] = struct{}{}
		}
		for len(picked) < benchActiveAds {
			picked[hot+rng.IntN(benchAllAds-hot)] = struct{}{}
		}
		for rank := range picked {
			c := int64(math.Max(1, 100000/float64(rank+1)*(0.5+rng.Float64())))
			r.idx.Add(0, m, adName(rank), c)
		}
	}
	return r, to
}

type fixedClock struct{}

func (fixedClock) Now() time.Time { return t0.Add(benchMinutes * time.Minute) }

func BenchmarkPopularAds(b *testing.B) {
	r, to := fillBench(b)
	req := &adclickv1.PopularAdsRequest{Count: 100, Window: 60, To: ts(to)}
	ctx := context.Background()
	start := time.Now()
	if _, err := r.PopularAds(ctx, req); err != nil { // builds the sorted lists once
		b.Fatal(err)
	}
	first := time.Since(start)
	lat := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		resp, err := r.PopularAds(ctx, req)
		lat = append(lat, time.Since(start))
		if err != nil || len(resp.GetAds()) != 100 {
			b.Fatalf("PopularAds = %d ads, %v", len(resp.GetAds()), err)
		}
	}
	b.StopTimer()
	reportP99(b, lat)
	b.ReportMetric(float64(first.Milliseconds()), "first-query-ms")
}

// reportP99 adds the 99th percentile latency to the benchmark's output.
func reportP99(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-us")
}

// BenchmarkPopularAdsAfterChange measures a query that follows a late
// correction of every minute (sorted lists used with a delta).
func BenchmarkPopularAdsAfterChange(b *testing.B) {
	r, to := fillBench(b)
	req := &adclickv1.PopularAdsRequest{Count: 100, Window: 60, To: ts(to)}
	ctx := context.Background()
	if _, err := r.PopularAds(ctx, req); err != nil {
		b.Fatal(err)
	}
	lat := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		r.mu.Lock()
		for m := to - benchMinutes*60; m < to; m += 60 {
			for j := 0; j < 10; j++ {
				r.idx.Add(0, m, adName((i*10+j)%benchAllAds), 1)
			}
		}
		r.mu.Unlock()
		b.StartTimer()
		start := time.Now()
		if _, err := r.PopularAds(ctx, req); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	reportP99(b, lat)
}

func BenchmarkAggregatedCount60(b *testing.B) {
	r, to := fillBench(b)
	ctx := context.Background()
	reqs := make([]*adclickv1.AggregatedCountRequest, 1024)
	for i := range reqs {
		reqs[i] = &adclickv1.AggregatedCountRequest{AdId: adName(i * 97 % benchAllAds), From: ts(to - 3600), To: ts(to)}
	}
	b.ReportAllocs()
	b.ResetTimer()
	lat := make([]time.Duration, 0, b.N)
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if _, err := r.AggregatedCount(ctx, reqs[i%len(reqs)]); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	reportP99(b, lat)
}

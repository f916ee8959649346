package reducer

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	clusterv1 "github.com/adclick/adclick/gen/adclick/cluster/v1"
	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
	"github.com/adclick/adclick/pkg/clock"
	"github.com/adclick/adclick/pkg/grpcbuf"
	"github.com/adclick/adclick/pkg/membership"
	"github.com/adclick/adclick/pkg/membership/membershiptest"
	"github.com/adclick/adclick/pkg/ring"
	"github.com/adclick/adclick/pkg/ring/ringtest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// t0 is on a minute boundary.
var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

var m0 = clock.Minute(t0)

// fakeMembers is a member source the test sets by hand.
type fakeMembers = membershiptest.Source

type env struct {
	dir     string
	clk     *clock.Fake
	members *fakeMembers
	ring    *ringtest.Source
	retain  int
	bytes   int64 // --retain-bytes; 0: the default
}

// setMembers registers ms and founds the ring with them.
func (e *env) setMembers(ms ...membership.Member) {
	e.members.Set(ms...)
	var ids []string
	for _, m := range ms {
		ids = append(ids, m.ID)
	}
	if len(ids) == 0 {
		e.ring.Set(&ring.History{})
		return
	}
	e.ring.Set(ring.Founding(ids, t0, ring.DefaultViewTTL))
}

func newEnv(t *testing.T, retain int) *env {
	t.Helper()
	return &env{dir: t.TempDir(), clk: clock.NewFake(t0), members: &fakeMembers{}, ring: ringtest.New(), retain: retain}
}

func (e *env) open(t *testing.T) *Reducer {
	t.Helper()
	cfg := DefaultConfig()
	cfg.NodeID, cfg.DataDir, cfg.RetainMinutes = "reducer-1", e.dir, e.retain
	if e.bytes != 0 {
		cfg.RetainBytes = e.bytes
	}
	r, err := Open(cfg, Deps{Clock: e.clk, Aggregators: e.members, Ring: e.ring, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func partial(seq uint64, minute int64, closes bool, counts ...*clusterv1.Count) *clusterv1.Partial {
	return &clusterv1.Partial{Sequence: seq, Minute: minute, ClosesMinute: closes, Counts: counts}
}

func cnt(filter int64, ad string, n int64) *clusterv1.Count {
	return &clusterv1.Count{Filter: filter, AdId: ad, Count: n}
}

// apply sends the request as gRPC hands it to the reducer, in its encoding
// (ApplyFrame), then overwrites those bytes: the reducer reads them in
// place, and nothing it keeps may still point into them.
func apply(t *testing.T, r *Reducer, agg string, inc int64, ps ...*clusterv1.Partial) (uint64, error) {
	t.Helper()
	b, err := proto.Marshal(&clusterv1.ApplyRequest{AggregatorId: agg, Incarnation: inc, Partials: ps})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := r.ApplyFrame(context.Background(), &grpcbuf.Frame{B: b})
	for i := range b {
		b[i] = 'X'
	}
	return resp.GetAppliedThrough(), err
}

func mustApply(t *testing.T, r *Reducer, agg string, inc int64, want uint64, ps ...*clusterv1.Partial) {
	t.Helper()
	got, err := apply(t, r, agg, inc, ps...)
	if err != nil || got != want {
		t.Fatalf("Apply(%s, inc %d) = %d, %v; want %d, nil", agg, inc, got, err, want)
	}
}

func ts(m int64) *timestamppb.Timestamp { return timestamppb.New(clock.MinuteTime(m)) }

func countOf(t *testing.T, r *Reducer, filter int64, ad string, from, to int64) (int64, bool) {
	t.Helper()
	resp, err := r.AggregatedCount(context.Background(), &adclickv1.AggregatedCountRequest{AdId: ad, From: ts(from), To: ts(to), Filter: filter})
	if err != nil {
		t.Fatalf("AggregatedCount: %v", err)
	}
	if resp.GetFrom().AsTime().Unix() != from || resp.GetTo().AsTime().Unix() != to || resp.GetAdId() != ad {
		t.Fatalf("AggregatedCount echoed %v..%v %q; want %d..%d %q", resp.GetFrom(), resp.GetTo(), resp.GetAdId(), from, to, ad)
	}
	return resp.GetCount(), resp.GetComplete()
}

func popular(t *testing.T, r *Reducer, filter int64, n, window int32, to int64) ([]string, bool) {
	t.Helper()
	resp, err := r.PopularAds(context.Background(), &adclickv1.PopularAdsRequest{Count: n, Window: window, Filter: filter, To: ts(to)})
	if err != nil {
		t.Fatalf("PopularAds: %v", err)
	}
	if resp.GetFrom().AsTime().Unix() != to-int64(window)*60 || resp.GetTo().AsTime().Unix() != to {
		t.Fatalf("PopularAds window %v..%v; want %d minutes before %d", resp.GetFrom(), resp.GetTo(), window, to)
	}
	out := make([]string, len(resp.GetAds()))
	for i, a := range resp.GetAds() {
		out[i] = fmt.Sprintf("%s=%d", a.GetAdId(), a.GetCount())
	}
	return out, resp.GetComplete()
}

func TestApplyIsIdempotent(t *testing.T) {
	e := newEnv(t, 1440)
	r := e.open(t)
	p1 := partial(1, m0, false, cnt(0, "a", 2), cnt(1, "a", 1))
	p2 := partial(2, m0, true, cnt(0, "b", 5))
	p3 := partial(3, m0+60, false, cnt(0, "a", 7))
	mustApply(t, r, "agg", 1, 2, p1, p2)
	mustApply(t, r, "agg", 1, 2, p1, p2)     // full resend
	mustApply(t, r, "agg", 1, 2, p2)         // partial resend
	mustApply(t, r, "agg", 1, 3, p1, p2, p3) // overlap: only 3 is new
	mustApply(t, r, "agg", 1, 3)             // empty request reports the mark
	for _, tc := range []struct {
		filter int64
		ad     string
		want   int64
	}{{0, "a", 9}, {1, "a", 1}, {0, "b", 5}, {1, "b", 0}, {0, "zzz", 0}} {
		if got, _ := countOf(t, r, tc.filter, tc.ad, m0, m0+120); got != tc.want {
			t.Errorf("count(filter %d, %s) = %d, want %d", tc.filter, tc.ad, got, tc.want)
		}
	}
}

func TestApplyRefusesGapsAndStaleIncarnations(t *testing.T) {
	e := newEnv(t, 1440)
	r := e.open(t)
	mustApply(t, r, "agg", 5, 2, partial(1, m0, false, cnt(0, "a", 1)), partial(2, m0, false, cnt(0, "a", 1)))

	_, err := apply(t, r, "agg", 5, partial(4, m0, false, cnt(0, "a", 100)))
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("gap: err = %v, want FailedPrecondition", err)
	}
	if at, ok := AppliedThrough(err); !ok || at != 2 {
		t.Fatalf("AppliedThrough(gap error) = %d, %v; want 2, true", at, ok)
	}

	// A newer incarnation starts over at sequence 1; the first must be 1.
	if _, err := apply(t, r, "agg", 6, partial(2, m0, false, cnt(0, "a", 100))); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("newer incarnation starting at 2: err = %v, want FailedPrecondition", err)
	}
	mustApply(t, r, "agg", 6, 1, partial(1, m0, false, cnt(0, "a", 10)))

	// The replaced incarnation is refused, even for new sequences.
	_, err = apply(t, r, "agg", 5, partial(3, m0, false, cnt(0, "a", 100)))
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("stale incarnation: err = %v, want FailedPrecondition", err)
	}
	// Other aggregators are independent.
	mustApply(t, r, "other", 1, 1, partial(1, m0, false, cnt(0, "a", 1000)))
	if got, _ := countOf(t, r, 0, "a", m0, m0+60); got != 1012 {
		t.Fatalf("count = %d, want 1012 (refused requests must apply nothing)", got)
	}
}

func TestApplyRejectsInvalidRequests(t *testing.T) {
	e := newEnv(t, 1440)
	r := e.open(t)
	tests := []struct {
		name string
		req  *clusterv1.ApplyRequest
	}{
		{"no aggregator", &clusterv1.ApplyRequest{Incarnation: 1, Partials: []*clusterv1.Partial{partial(1, m0, false)}}},
		{"sequence zero", &clusterv1.ApplyRequest{AggregatorId: "a", Partials: []*clusterv1.Partial{partial(0, m0, false)}}},
		{"not consecutive", &clusterv1.ApplyRequest{AggregatorId: "a", Partials: []*clusterv1.Partial{partial(1, m0, false), partial(3, m0, false)}}},
		{"descending", &clusterv1.ApplyRequest{AggregatorId: "a", Partials: []*clusterv1.Partial{partial(2, m0, false), partial(1, m0, false)}}},
		{"minute not on boundary", &clusterv1.ApplyRequest{AggregatorId: "a", Partials: []*clusterv1.Partial{partial(1, m0+1, false)}}},
		{"empty ad", &clusterv1.ApplyRequest{AggregatorId: "a", Partials: []*clusterv1.Partial{partial(1, m0, false, cnt(0, "", 1))}}},
		{"negative count", &clusterv1.ApplyRequest{AggregatorId: "a", Partials: []*clusterv1.Partial{partial(1, m0, false, cnt(0, "x", -1))}}},
		{"negative filter", &clusterv1.ApplyRequest{AggregatorId: "a", Partials: []*clusterv1.Partial{partial(1, m0, false, cnt(-1, "x", 1))}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := r.Apply(context.Background(), tc.req); status.Code(err) != codes.InvalidArgument {
				t.Fatalf("err = %v, want InvalidArgument", err)
			}
		})
	}
	if got, _ := countOf(t, r, 0, "x", m0-60, m0+60); got != 0 {
		t.Fatalf("invalid requests applied counts: %d", got)
	}
}

func TestRestartKeepsCountsMarksAndTopN(t *testing.T) {
	e := newEnv(t, 10)
	r := e.open(t)
	e.setMembers(membership.Member{ID: "agg", Incarnation: 3, FirstMinute: m0 - 3600})
	old := m0 - 3600 // outside the 10 in-memory minutes: Pebble only
	mustApply(t, r, "agg", 3, 3,
		partial(1, old, true, cnt(0, "a", 4), cnt(0, "b", 9)),
		partial(2, m0-60, true, cnt(0, "a", 3), cnt(0, "c", 3), cnt(2, "c", 1)),
		partial(3, m0, false, cnt(0, "b", 1)))
	wantTop, _ := popular(t, r, 0, 10, 2, m0+60)
	if want := []string{"a=3", "c=3", "b=1"}; !slices.Equal(wantTop, want) {
		t.Fatalf("top before restart = %v, want %v", wantTop, want)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := apply(t, r, "agg", 3, partial(4, m0, false)); status.Code(err) != codes.Unavailable {
		t.Fatalf("Apply after Close: err = %v, want Unavailable", err)
	}

	r = e.open(t)
	if got, _ := popular(t, r, 0, 10, 2, m0+60); !slices.Equal(got, wantTop) {
		t.Fatalf("top after restart = %v, want %v", got, wantTop)
	}
	if got, _ := popular(t, r, 0, 10, 100, m0+60); !slices.Equal(got, []string{"b=10", "a=7", "c=3"}) {
		t.Fatalf("top over a window reaching Pebble = %v", got)
	}
	if got, complete := countOf(t, r, 0, "a", old, m0); got != 7 || !complete {
		t.Fatalf("count(a) after restart = %d complete=%v; want 7, true", got, complete)
	}
	mustApply(t, r, "agg", 3, 3, partial(3, m0, false, cnt(0, "b", 1))) // resend: no-op
	if _, err := apply(t, r, "agg", 3, partial(5, m0, false)); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("gap after restart: err = %v, want FailedPrecondition", err)
	}
	if _, err := apply(t, r, "agg", 2, partial(4, m0, false)); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("stale incarnation after restart: err = %v, want FailedPrecondition", err)
	}
	if got, _ := countOf(t, r, 0, "b", m0, m0+60); got != 1 {
		t.Fatalf("count(b) = %d, want 1", got)
	}
}

func TestCompleteness(t *testing.T) {
	e := newEnv(t, 1440)
	r := e.open(t)
	// agg-1 (incarnation 1) closed m0-120 .. m0; agg-2 (incarnation 7)
	// started at m0 and closed nothing yet.
	mustApply(t, r, "agg-1", 1, 3, partial(1, m0-120, true), partial(2, m0-60, true), partial(3, m0, true, cnt(0, "a", 1)))
	agg1 := membership.Member{ID: "agg-1", Incarnation: 1, FirstMinute: m0 - 120}
	agg2 := membership.Member{ID: "agg-2", Incarnation: 7, FirstMinute: m0}
	tests := []struct {
		name     string
		members  []membership.Member
		from, to int64
		want     bool
	}{
		{"no members", nil, m0 - 120, m0 + 60, false},
		{"empty range without members", nil, m0, m0, true},
		{"all closed", []membership.Member{agg1}, m0 - 120, m0 + 60, true},
		{"next minute open", []membership.Member{agg1}, m0, m0 + 120, false},
		{"before FirstMinute counts as closed", []membership.Member{agg1}, m0 - 600, m0 - 60, true},
		{"new member has closed nothing", []membership.Member{agg1, agg2}, m0 - 60, m0 + 60, false},
		{"new member not yet started", []membership.Member{agg1, agg2}, m0 - 120, m0, true},
		{"other incarnation registered", []membership.Member{{ID: "agg-1", Incarnation: 2, FirstMinute: m0 - 120}}, m0 - 120, m0, false},
		{"unknown member", []membership.Member{{ID: "agg-9", Incarnation: 1, FirstMinute: m0 - 60}}, m0 - 60, m0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.setMembers(tc.members...)
			if _, got := countOf(t, r, 0, "a", tc.from, tc.to); got != tc.want {
				t.Errorf("AggregatedCount complete = %v, want %v", got, tc.want)
			}
			if tc.to > tc.from {
				if _, got := popular(t, r, 0, 5, int32((tc.to-tc.from)/60), tc.to); got != tc.want {
					t.Errorf("PopularAds complete = %v, want %v", got, tc.want)
				}
			}
		})
	}
	// agg-2 closes m0: the mixed window becomes complete.
	mustApply(t, r, "agg-2", 7, 1, partial(1, m0, true))
	e.setMembers(agg1, agg2)
	if _, got := countOf(t, r, 0, "a", m0-60, m0+60); !got {
		t.Error("window not complete after agg-2 closed m0")
	}
}

// TestCompletenessFollowsEras: only the aggregators that owned a minute
// must have closed it; a drained one counts for its minutes before its
// cut-over, also once its record is removed.
func TestCompletenessFollowsEras(t *testing.T) {
	e := newEnv(t, 1440)
	r := e.open(t)
	agg1 := membership.Member{ID: "agg-1", Incarnation: 1, FirstMinute: m0 - 600}
	agg2 := membership.Member{ID: "agg-2", Incarnation: 2, FirstMinute: m0 - 600}
	e.members.Set(agg1, agg2)
	h := ring.Founding([]string{"agg-1"}, t0, ring.DefaultViewTTL)
	h, join, err := h.Join("agg-2", t0.Add(-5*time.Minute)) // agg-2 owns from m0-120+...
	if err != nil {
		t.Fatal(err)
	}
	h, cut, err := h.Drain("agg-1", "agg-2", time.Unix(join, 0))
	if err != nil {
		t.Fatal(err)
	}
	e.ring.Set(h)
	if cut != join+120 {
		t.Fatalf("cut-over %d minutes after the join; the checks below assume 2", (cut-join)/60)
	}
	// agg-1 closed everything up to its cut-over; agg-2 its first minute.
	mustApply(t, r, "agg-1", 1, 1, partial(1, cut-60, true, cnt(0, "a", 1)))
	mustApply(t, r, "agg-2", 2, 1, partial(1, join, true))
	check := func(what string, from, to int64, want bool) {
		t.Helper()
		if _, got := countOf(t, r, 0, "a", from, to); got != want {
			t.Errorf("%s [%d, %d): complete = %v, want %v", what, from-m0, to-m0, got, want)
		}
	}
	check("before the join, agg-1 alone", join-300, join, true)
	check("across the join, agg-2 closed its first", join-120, join+60, true)
	check("drained agg-1's last minutes, agg-2's second open", cut-120, cut, false)
	mustApply(t, r, "agg-2", 2, 2, partial(2, cut+60, true))
	check("after the cut-over, agg-2 alone", cut-120, cut+120, true)
	// agg-1 removed: its stored watermark still answers for its minutes.
	e.members.Set(agg2)
	check("removed drained agg-1", join-300, cut, true)
}

func TestQueryValidation(t *testing.T) {
	e := newEnv(t, 1440)
	r := e.open(t)
	ctx := context.Background()
	countReqs := []*adclickv1.AggregatedCountRequest{
		{AdId: "a", To: ts(m0)},
		{AdId: "a", From: ts(m0)},
		{AdId: "a", From: ts(m0 + 60), To: ts(m0)},
		{AdId: "a", From: ts(m0), To: ts(m0), Filter: -1},
	}
	for i, req := range countReqs {
		if _, err := r.AggregatedCount(ctx, req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("AggregatedCount case %d: err = %v, want InvalidArgument", i, err)
		}
	}
	popReqs := []*adclickv1.PopularAdsRequest{
		{Count: 1, Window: 1},
		{Count: 0, Window: 1, To: ts(m0)},
		{Count: 1, Window: 0, To: ts(m0)},
		{Count: 1, Window: 1, To: ts(m0), Filter: -2},
	}
	for i, req := range popReqs {
		if _, err := r.PopularAds(ctx, req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("PopularAds case %d: err = %v, want InvalidArgument", i, err)
		}
	}
}

// groundTruth is an independent model of what was applied.
type groundTruth map[[2]int64]map[string]int64 // (filter, minute) -> ad -> count

func (g groundTruth) count(filter int64, ad string, from, to int64) int64 {
	var n int64
	for k, ads := range g {
		if k[0] == filter && k[1] >= from && k[1] < to {
			n += ads[ad]
		}
	}
	return n
}

func (g groundTruth) top(filter int64, from, to int64, n int) []string {
	sums := map[string]int64{}
	for k, ads := range g {
		if k[0] == filter && k[1] >= from && k[1] < to {
			for ad, c := range ads {
				sums[ad] += c
			}
		}
	}
	ads := make([]string, 0, len(sums))
	for ad := range sums {
		ads = append(ads, ad)
	}
	slices.SortFunc(ads, func(a, b string) int {
		if c := cmp.Compare(sums[b], sums[a]); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	if len(ads) > n {
		ads = ads[:n]
	}
	out := make([]string, len(ads))
	for i, ad := range ads {
		out[i] = fmt.Sprintf("%s=%d", ad, sums[ad])
	}
	return out
}

// TestQueriesMatchGroundTruth checks every query against the truth while
// minutes leave memory, by --retain-minutes or by --retain-bytes (room for
// ~200 counts, of the ~1,000 sent): windows reaching before the memory floor
// are answered from Pebble, exactly the same.
func TestQueriesMatchGroundTruth(t *testing.T) {
	for _, tc := range []struct {
		name   string
		retain int
		bytes  int64
	}{
		{"retain-minutes", 8, 0},
		{"retain-bytes", 1440, 200 * 28}, // topn estimates 28 bytes a count
	} {
		t.Run(tc.name, func(t *testing.T) { testQueriesMatchGroundTruth(t, tc.retain, tc.bytes) })
	}
}

func testQueriesMatchGroundTruth(t *testing.T, retain int, bytes int64) {
	e := newEnv(t, retain)
	e.bytes = bytes
	r := e.open(t)
	rng := rand.New(rand.NewPCG(42, 1))
	truth := groundTruth{}
	seqs := map[string]uint64{}
	const minutes = 20 // more than retain: some windows are answered from Pebble
	first := m0 - minutes*60
	randomPartials := func(agg string, k int) []*clusterv1.Partial {
		var ps []*clusterv1.Partial
		for i := 0; i < k; i++ {
			seqs[agg]++
			m := first + 60*int64(rng.IntN(minutes+1))
			p := partial(seqs[agg], m, rng.IntN(2) == 0)
			for j := rng.IntN(30); j > 0; j-- {
				f, ad, n := int64(rng.IntN(2)), fmt.Sprintf("ad-%02d", rng.IntN(40)), int64(1+rng.IntN(3))
				p.Counts = append(p.Counts, cnt(f, ad, n))
				key := [2]int64{f, m}
				if truth[key] == nil {
					truth[key] = map[string]int64{}
				}
				truth[key][ad] += n
			}
			ps = append(ps, p)
		}
		return ps
	}
	evicted := false
	check := func(t *testing.T, r *Reducer) {
		t.Helper()
		if bytes > 0 {
			r.mu.RLock()
			held, floor := r.idx.CountBytes(), r.floor
			oldest, _ := r.idx.OldestMinute()
			r.mu.RUnlock()
			if held > bytes && oldest < clock.Minute(e.clk.Now()) {
				t.Fatalf("counts in memory take %d bytes, over --retain-bytes %d, holding minute %d before the current one", held, bytes, oldest)
			}
			evicted = evicted || floor > first
		}
		for f := int64(0); f < 2; f++ {
			for to := first; to <= m0+120; to += 60 * int64(1+rng.IntN(3)) {
				for _, w := range []int32{1, 3, 7, 15, minutes + 2} {
					n := int32(1 + rng.IntN(12))
					got, _ := popular(t, r, f, n, w, to)
					if want := truth.top(f, to-int64(w)*60, to, int(n)); !slices.Equal(got, want) {
						t.Fatalf("PopularAds(filter %d, n %d, window %d, to %d)\n got %v\nwant %v", f, n, w, to, got, want)
					}
					ad := fmt.Sprintf("ad-%02d", rng.IntN(42))
					if got, _ := countOf(t, r, f, ad, to-int64(w)*60, to); got != truth.count(f, ad, to-int64(w)*60, to) {
						t.Fatalf("AggregatedCount(filter %d, %s, window %d, to %d) = %d, want %d", f, ad, w, to, got, truth.count(f, ad, to-int64(w)*60, to))
					}
				}
			}
		}
	}
	for round := 0; round < 4; round++ {
		for _, agg := range []string{"agg-1", "agg-2"} {
			mustApply(t, r, agg, 1, seqs[agg]) // empty request: reports the mark
			ps := randomPartials(agg, 5)
			mustApply(t, r, agg, 1, seqs[agg], ps...)
		}
		check(t, r)
		e.clk.Add(2 * time.Minute) // minutes fall out of memory
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	check(t, e.open(t))
	if bytes > 0 && !evicted {
		t.Fatalf("no minute left memory for --retain-bytes %d: the test did not exercise the bound", bytes)
	}
}

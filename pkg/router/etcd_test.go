package router

import (
	"context"
	"google.golang.org/protobuf/types/known/timestamppb"
	"io"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
	"github.com/adclick/adclick/pkg/clock"
	"github.com/adclick/adclick/pkg/etcdembed"
	"github.com/adclick/adclick/pkg/filter"
	"github.com/adclick/adclick/pkg/membership"
	"github.com/adclick/adclick/pkg/ring"
)

// TestWithEtcd wires the router to the real etcd-backed watchers and store:
// aggregators joining and leaving through membership registrations, and a
// filter created through the API becoming queryable from its effective minute.
func TestWithEtcd(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := etcdembed.Start(t.TempDir(), "127.0.0.1:0", quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	cli, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	ctx, cancel := context.WithCancel(ctxT(t))
	t.Cleanup(cancel)

	a1, a2 := startAggregator(t, "agg-1"), startAggregator(t, "agg-2")
	red := startReducer(t, "red-1", 5)
	register := func(kind membership.Kind, m membership.Member) *membership.Registration {
		t.Helper()
		reg, err := membership.Register(ctx, cli, kind, m, time.Minute, quiet)
		if err != nil {
			t.Fatal(err)
		}
		return reg
	}
	reg1 := register(membership.Aggregators, a1.member)
	register(membership.Reducers, red.member)

	aggW, err := membership.Watch(ctx, cli, membership.Aggregators, quiet)
	if err != nil {
		t.Fatal(err)
	}
	redW, err := membership.Watch(ctx, cli, membership.Reducers, quiet)
	if err != nil {
		t.Fatal(err)
	}
	filterW, err := filter.Watch(ctx, cli, quiet)
	if err != nil {
		t.Fatal(err)
	}
	clk := clock.NewFake(testNow)
	if _, _, err := ring.Update(ctx, cli, clk, func(*ring.History, time.Time) (*ring.History, error) {
		return ring.Founding([]string{"agg-1"}, testNow, ring.DefaultViewTTL), nil
	}); err != nil {
		t.Fatal(err)
	}
	ringW, err := ring.Watch(ctx, cli, clk, quiet)
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(DefaultConfig(), Deps{Clock: clk, Log: quiet, Aggregators: aggW, Reducers: redW, Ring: ringW,
		Filters: filterW, FilterStore: filter.NewStore(cli, clk)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	go r.Run(ctx)
	addr, _ := serve(t, func(s *grpc.Server) { r.Register(s) })
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ingest, query, filters := adclickv1.NewIngestServiceClient(conn), adclickv1.NewQueryServiceClient(conn), adclickv1.NewFilterServiceClient(conn)

	evs, want := mixedBatch(100)
	resp, err := ingest.Ingest(ctx, &adclickv1.IngestRequest{Events: evs})
	if err != nil || resp.Accepted != want.accepted {
		t.Fatalf("ingest with agg-1: %v %v", resp, err)
	}
	if len(a1.fake.received()) == 0 {
		t.Fatal("agg-1 got nothing")
	}

	// agg-2 joins at a minute ahead: clicks of this minute still go to
	// agg-1 only, clicks of the join minute are shared.
	register(membership.Aggregators, a2.member)
	var from int64
	if _, _, err := ring.Update(ctx, cli, clk, func(h *ring.History, now time.Time) (*ring.History, error) {
		next, f, err := h.Join("agg-2", now)
		from = f
		return next, err
	}); err != nil {
		t.Fatal(err)
	}
	joinAt := time.Unix(from, 0)
	eventually(t, "ring of agg-1 and agg-2", func() bool { return r.table.Load().ring.Len() == 2 })
	before := len(a1.fake.received())
	if _, err := ingest.Ingest(ctx, &adclickv1.IngestRequest{Events: evs}); err != nil {
		t.Fatal(err)
	}
	if len(a2.fake.received()) != 0 || len(a1.fake.received()) == before {
		t.Fatalf("clicks before the join minute: agg-1 got %d more, agg-2 %d", len(a1.fake.received())-before, len(a2.fake.received()))
	}
	next, _ := mixedBatch(100)
	for _, ev := range next {
		ev.ClickId += "-next"
		if ev.ClickTime != nil {
			ev.ClickTime = timestamppb.New(joinAt.Add(5 * time.Second))
		}
	}
	if _, err := ingest.Ingest(ctx, &adclickv1.IngestRequest{Events: next}); err != nil {
		t.Fatal(err)
	}
	if len(a2.fake.received()) == 0 {
		t.Fatal("agg-2 got nothing of the minute it owns from")
	}

	// agg-1 stops: it stays on the ring (its ads are not moved to another
	// aggregator, which could count a retried click twice), known as not live.
	if err := reg1.Close(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "agg-1 not live", func() bool { return len(aggW.Live()) == 1 && r.table.Load().ring.Len() == 2 })

	// A filter counts from a minute in the future.
	f, err := filters.CreateFilter(ctx, &adclickv1.CreateFilterRequest{Filter: &adclickv1.Filter{Countries: []string{"US"}}})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "filter visible to the watcher", func() bool { _, ok := filterW.Current().Get(f.Id); return ok })
	_, err = query.AggregatedCount(ctx, &adclickv1.AggregatedCountRequest{AdId: "ad", Filter: f.Id})
	wantCode(t, err, codes.FailedPrecondition, "counts from "+f.EffectiveFrom.AsTime().Format(time.RFC3339))
	got, err := query.AggregatedCount(ctx, &adclickv1.AggregatedCountRequest{AdId: "ad", Filter: f.Id, From: f.EffectiveFrom,
		To: ts(f.EffectiveFrom.AsTime().Add(time.Minute).Format(time.RFC3339))})
	if err != nil || got.Count != 5 {
		t.Fatalf("query from the effective minute: %v %v", got, err)
	}
}

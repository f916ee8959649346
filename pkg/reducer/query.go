package reducer

import (
	"cmp"
	"context"
	"errors"
	"math"
	"slices"
	"time"

	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
	"github.com/adclick/adclick/pkg/clock"
	"github.com/adclick/adclick/pkg/membership"
	"github.com/adclick/adclick/pkg/ring"
	"github.com/adclick/adclick/pkg/store"
	"github.com/adclick/adclick/pkg/topn"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// AggregatedCount answers the clicks of one ad over minutes [from, to).
// The router fills defaults; this checks only what it relies on.
func (r *Reducer) AggregatedCount(ctx context.Context, req *adclickv1.AggregatedCountRequest) (*adclickv1.AggregatedCountResponse, error) {
	start := time.Now()
	if req.GetFrom() == nil || req.GetTo() == nil {
		return nil, status.Error(codes.InvalidArgument, "from and to must both be set (the router fills defaults)")
	}
	from, to := clock.Minute(req.GetFrom().AsTime()), clock.Minute(req.GetTo().AsTime())
	if from > to {
		return nil, status.Errorf(codes.InvalidArgument, "from %s is after to %s", clock.MinuteTime(from), clock.MinuteTime(to))
	}
	if req.GetFilter() < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "filter %d is negative; 0 means all clicks", req.GetFilter())
	}
	members, hist := r.aggs.Members(), r.ring.Current().History()

	r.mu.RLock()
	inMemory := from >= r.floor
	var n int64
	if inMemory {
		n = r.idx.Count(req.GetFilter(), req.GetAdId(), from, to)
	}
	complete := completeLocked(hist, members, r.meta, from, to)
	r.mu.RUnlock()

	if !inMemory {
		r.m.queriesFromDisk.WithLabelValues("aggregated_count").Inc()
		var err error
		if n, err = r.diskAdCount(req.GetFilter(), req.GetAdId(), from, to); err != nil {
			return nil, err
		}
	}
	r.m.queryDuration.WithLabelValues("aggregated_count").Observe(time.Since(start).Seconds())
	return &adclickv1.AggregatedCountResponse{
		AdId: req.GetAdId(), Count: n,
		From: timestamppb.New(clock.MinuteTime(from)), To: timestamppb.New(clock.MinuteTime(to)),
		Complete: complete,
	}, nil
}

// MaxPopularCount bounds PopularAds count: a longer top list is an export,
// not a query (the router refuses it first).
const MaxPopularCount = 10000

// PopularAds answers the count ads with the most clicks over the window
// minutes before to, exactly.
func (r *Reducer) PopularAds(ctx context.Context, req *adclickv1.PopularAdsRequest) (*adclickv1.PopularAdsResponse, error) {
	start := time.Now()
	switch {
	case req.GetTo() == nil:
		return nil, status.Error(codes.InvalidArgument, "to must be set (the router fills defaults)")
	case req.GetCount() < 1 || req.GetCount() > MaxPopularCount:
		return nil, status.Errorf(codes.InvalidArgument, "count is %d; want 1..%d", req.GetCount(), MaxPopularCount)
	case req.GetWindow() < 1:
		return nil, status.Errorf(codes.InvalidArgument, "window is %d minutes; want >= 1", req.GetWindow())
	case req.GetFilter() < 0:
		return nil, status.Errorf(codes.InvalidArgument, "filter %d is negative; 0 means all clicks", req.GetFilter())
	}
	to := clock.Minute(req.GetTo().AsTime())
	from := to - int64(req.GetWindow())*60
	n := int(req.GetCount())
	members, hist := r.aggs.Members(), r.ring.Current().History()

	r.mu.RLock()
	inMemory := from >= r.floor
	var top []topn.AdCount
	var err error
	if inMemory {
		// Stops soon after ctx ends (the router's --query-timeout, a
		// client gone): the read lock held here delays every Apply.
		top, err = r.idx.TopContext(ctx, req.GetFilter(), from, to, n)
	}
	complete := completeLocked(hist, members, r.meta, from, to)
	r.mu.RUnlock()
	if err != nil {
		return nil, status.FromContextError(err).Err()
	}

	if !inMemory {
		r.m.queriesFromDisk.WithLabelValues("popular_ads").Inc()
		if top, err = r.diskTop(ctx, req.GetFilter(), from, to, n); err != nil {
			return nil, err
		}
	}
	resp := &adclickv1.PopularAdsResponse{
		Ads:  make([]*adclickv1.AdCount, len(top)),
		From: timestamppb.New(clock.MinuteTime(from)), To: timestamppb.New(clock.MinuteTime(to)),
		Complete: complete,
	}
	for i, a := range top {
		resp.Ads[i] = &adclickv1.AdCount{AdId: a.Ad, Count: a.Count}
	}
	r.m.queryDuration.WithLabelValues("popular_ads").Observe(time.Since(start).Seconds())
	return resp, nil
}

// completeLocked tells whether every minute in [from, to) is complete:
// a ring history exists and, era by era, every aggregator that owned part
// of the range (drained ones included) has closed its last minute in the
// range, in its registered incarnation (minutes close in order, so the
// watermark covers the earlier ones). Minutes before an aggregator's first
// minute were never open there and need nothing. An empty range is
// complete. Caller holds mu (shared).
func completeLocked(h *ring.History, members []membership.Member, meta map[string]store.AggMeta, from, to int64) bool {
	if from >= to {
		return true
	}
	if h == nil || len(h.Eras) == 0 {
		return false
	}
	records := make(map[string]*membership.Member, len(members))
	for i := range members {
		records[members[i].ID] = &members[i]
	}
	for k, e := range h.Eras {
		lo, hi := e.From, int64(math.MaxInt64)
		if k == 0 {
			lo = math.MinInt64
		}
		if k+1 < len(h.Eras) {
			hi = h.Eras[k+1].From
		}
		lo, hi = max(lo, from), min(hi, to)
		if lo >= hi {
			continue
		}
		last := hi - 60
		for _, id := range e.Aggregators {
			m := records[id] // nil once removed: its stored watermark decides
			if m != nil && last < m.FirstMinute {
				continue
			}
			am, ok := meta[id]
			if !ok || am.Watermark == store.NoWatermark || am.Watermark < last || m != nil && am.Incarnation != m.Incarnation {
				return false
			}
		}
	}
	return true
}

// errClosed answers queries that need Pebble after Close.
var errClosed = status.Error(codes.Unavailable, "reducer is shutting down; ask another reducer")

func (r *Reducer) diskAdCount(filter int64, ad string, from, to int64) (int64, error) {
	r.dbMu.RLock()
	defer r.dbMu.RUnlock()
	if r.closed {
		return 0, errClosed
	}
	n, err := r.db.AdCount(filter, ad, from, to)
	if err != nil {
		r.log.Error("aggregated count: store read failed", "err", err)
		return 0, status.Errorf(codes.Internal, "reducer could not read its store: %v", err)
	}
	return n, nil
}

// diskTop sums the window from Pebble and selects the top n: exact, and
// proportional to the window's stored counts.
func (r *Reducer) diskTop(ctx context.Context, filter, from, to int64, n int) ([]topn.AdCount, error) {
	r.dbMu.RLock()
	defer r.dbMu.RUnlock()
	if r.closed {
		return nil, errClosed
	}
	sums := make(map[string]int64)
	var seen int
	errCanceled := errors.New("canceled")
	err := r.db.ScanMinutes(filter, from, to, func(_, _ int64, ad []byte, c int64) error {
		if seen++; seen%4096 == 0 && ctx.Err() != nil {
			return errCanceled
		}
		sums[string(ad)] += c
		return nil
	})
	switch {
	case errors.Is(err, errCanceled):
		return nil, status.FromContextError(ctx.Err()).Err()
	case err != nil:
		r.log.Error("popular ads: store read failed", "err", err)
		return nil, status.Errorf(codes.Internal, "reducer could not read its store: %v", err)
	}
	all := make([]topn.AdCount, 0, len(sums))
	for ad, c := range sums {
		if c > 0 {
			all = append(all, topn.AdCount{Ad: ad, Count: c})
		}
	}
	slices.SortFunc(all, func(a, b topn.AdCount) int {
		if c := cmp.Compare(b.Count, a.Count); c != 0 {
			return c
		}
		return cmp.Compare(a.Ad, b.Ad)
	})
	if len(all) > n {
		all = all[:n]
	}
	return all, nil
}

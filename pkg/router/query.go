package router

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	clusterv1 "github.com/adclick/adclick/gen/adclick/cluster/v1"
	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
	"github.com/adclick/adclick/pkg/clock"
	"github.com/adclick/adclick/pkg/event"
	"github.com/adclick/adclick/pkg/membership"
)

// AggregatedCount answers the clicks of one ad over a range of minutes.
func (r *Router) AggregatedCount(ctx context.Context, req *adclickv1.AggregatedCountRequest) (*adclickv1.AggregatedCountResponse, error) {
	resp, err := r.aggregatedCount(ctx, req)
	r.m.queries.WithLabelValues("AggregatedCount", status.Code(err).String()).Inc()
	return resp, err
}

// PopularAds answers the most clicked ads over the last window minutes.
func (r *Router) PopularAds(ctx context.Context, req *adclickv1.PopularAdsRequest) (*adclickv1.PopularAdsResponse, error) {
	resp, err := r.popularAds(ctx, req)
	r.m.queries.WithLabelValues("PopularAds", status.Code(err).String()).Inc()
	return resp, err
}

func (r *Router) aggregatedCount(ctx context.Context, req *adclickv1.AggregatedCountRequest) (*adclickv1.AggregatedCountResponse, error) {
	switch {
	case req.GetAdId() == "":
		return nil, status.Error(codes.InvalidArgument, "ad_id is required (GET /v1/ads/{ad_id}/aggregated_count)")
	case len(req.GetAdId()) > event.MaxIDBytes:
		return nil, status.Errorf(codes.InvalidArgument, "ad_id is %d bytes; at most %d allowed", len(req.GetAdId()), event.MaxIDBytes)
	}
	to, err := r.minuteOr(req.GetTo(), "to", clock.Minute(r.clock.Now()))
	if err != nil {
		return nil, err
	}
	from, err := r.minuteOr(req.GetFrom(), "from", to-60)
	if err != nil {
		return nil, err
	}
	if from < firstMinute {
		return nil, status.Errorf(codes.InvalidArgument, "the range starts before %s (from defaults to one minute before to), the earliest time a timestamp holds: ask for a later range", formatMinute(firstMinute))
	}
	if from > to {
		return nil, status.Errorf(codes.InvalidArgument, "from %s is after to %s; from is the first minute, to the end (exclusive)",
			formatMinute(from), formatMinute(to))
	}
	if err := r.checkFilter(req.GetFilter(), from); err != nil {
		return nil, err
	}
	out := &adclickv1.AggregatedCountRequest{AdId: req.GetAdId(), From: minuteProto(from), To: minuteProto(to), Filter: req.GetFilter()}
	var resp *adclickv1.AggregatedCountResponse
	err = r.askReducer(ctx, func(ctx context.Context, c clusterv1.ReducerServiceClient) error {
		var err error
		resp, err = c.AggregatedCount(ctx, out)
		return err
	})
	return resp, err
}

func (r *Router) popularAds(ctx context.Context, req *adclickv1.PopularAdsRequest) (*adclickv1.PopularAdsResponse, error) {
	count := req.GetCount()
	switch {
	case count == 0:
		count = defaultPopularCount
	case count < 0 || count > maxPopularCount:
		return nil, status.Errorf(codes.InvalidArgument, "count is %d; want 1..%d (0 means %d)", count, maxPopularCount, defaultPopularCount)
	}
	window := req.GetWindow()
	switch {
	case window == 0:
		window = defaultWindow
	case window < 0 || int(window) > r.cfg.MaxWindow:
		return nil, status.Errorf(codes.InvalidArgument, "window is %d minutes; want 1..%d (--max-window)", window, r.cfg.MaxWindow)
	}
	to, err := r.minuteOr(req.GetTo(), "to", clock.Minute(r.clock.Now()))
	if err != nil {
		return nil, err
	}
	from := to - int64(window)*60
	if from < firstMinute {
		return nil, status.Errorf(codes.InvalidArgument, "the window of %d minutes before to %s starts before %s, the earliest time a timestamp holds: ask for a later to or a shorter window", window, formatMinute(to), formatMinute(firstMinute))
	}
	if err := r.checkFilter(req.GetFilter(), from); err != nil {
		return nil, err
	}
	out := &adclickv1.PopularAdsRequest{Count: count, Window: window, Filter: req.GetFilter(), To: minuteProto(to)}
	var resp *adclickv1.PopularAdsResponse
	err = r.askReducer(ctx, func(ctx context.Context, c clusterv1.ReducerServiceClient) error {
		var err error
		resp, err = c.PopularAds(ctx, out)
		return err
	})
	return resp, err
}

// minuteOr returns the minute of ts, or def when ts is unset.
func (r *Router) minuteOr(ts *timestamppb.Timestamp, name string, def int64) (int64, error) {
	if ts == nil {
		return def, nil
	}
	if err := ts.CheckValid(); err != nil {
		return 0, status.Errorf(codes.InvalidArgument, "%s is not a valid timestamp: %v", name, err)
	}
	return clock.Minute(ts.AsTime()), nil
}

// checkFilter checks that filter id exists and counts from minute from on.
func (r *Router) checkFilter(id, from int64) error {
	switch {
	case id == 0:
		return nil
	case id < 0:
		return status.Errorf(codes.InvalidArgument, "filter is %d; want 0 (all clicks) or the id of a filter", id)
	}
	f, ok := r.filters.Current().Get(id)
	if !ok {
		return status.Errorf(codes.NotFound, "filter %d does not exist (list them with GET /v1/filters)", id)
	}
	if from < f.EffectiveFrom {
		return status.Errorf(codes.FailedPrecondition, "filter %d counts from %s; ask from that minute on", id, formatMinute(f.EffectiveFrom))
	}
	return nil
}

// askReducer runs call against the registered reducers, starting at a
// rotating one and failing over to the next when one is unreachable or too
// slow. Other errors are the reducer's answer and pass through.
func (r *Router) askReducer(ctx context.Context, call func(context.Context, clusterv1.ReducerServiceClient) error) error {
	members := r.reducerOrder()
	if len(members) == 0 {
		return status.Error(codes.Unavailable, "no reducer registered; retry later")
	}
	var failures []string
	for _, m := range members {
		conn, err := r.redConns.get(m.Addr)
		if err != nil {
			err = status.Error(codes.Unavailable, err.Error())
		} else {
			actx, cancel := context.WithTimeout(ctx, r.cfg.QueryTimeout)
			err = call(actx, clusterv1.NewReducerServiceClient(conn))
			cancel()
		}
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return status.FromContextError(ctx.Err()).Err()
		}
		st := status.Convert(err)
		switch st.Code() {
		case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
			// Unreachable, too slow, or its connection closed under us
			// (Canceled while our own ctx is live).
			r.log.Warn("reducer failed, trying the next", "reducer", m.ID, "addr", m.Addr, "code", st.Code(), "err", st.Message())
			failures = append(failures, fmt.Sprintf("reducer %s at %s: %s: %s", m.ID, m.Addr, st.Code(), st.Message()))
			continue
		}
		return err
	}
	return status.Errorf(codes.Unavailable, "no reducer answered (%s); retry later", strings.Join(failures, "; "))
}

// reducerOrder lists the reducers to ask: the live ones first, starting at
// a rotating one to spread queries, then those not known to be live (a
// reducer whose lease lapsed may still answer).
func (r *Router) reducerOrder() []membership.Member {
	all := r.reds.Members()
	out := make([]membership.Member, 0, len(all))
	for _, m := range all {
		if m.Live {
			out = append(out, m)
		}
	}
	if n := len(out); n > 1 {
		start := int(r.nextRed.Add(1) % uint64(n))
		out = slices.Concat(out[start:], out[:start])
	}
	for _, m := range all {
		if !m.Live {
			out = append(out, m)
		}
	}
	return out
}

// firstMinute is the earliest minute a protobuf Timestamp holds
// (0001-01-01T00:00:00Z): an answer's from before it could not be encoded
// (REST answered HTTP 500 "Timestamp: seconds out of range").
var firstMinute = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC).Unix()

func minuteProto(m int64) *timestamppb.Timestamp { return timestamppb.New(clock.MinuteTime(m)) }

func formatMinute(m int64) string { return clock.MinuteTime(m).Format(time.RFC3339) }

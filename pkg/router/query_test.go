package router

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
	"github.com/adclick/adclick/pkg/clock"
	"github.com/adclick/adclick/pkg/filter"
)

func ts(s string) *timestamppb.Timestamp {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return timestamppb.New(t)
}

func TestAggregatedCount(t *testing.T) {
	// testNow is 03:04:35: the current minute starts at 03:04.
	tests := []struct {
		name     string
		req      *adclickv1.AggregatedCountRequest
		code     codes.Code
		message  string
		from, to string // what the reducer is asked
	}{
		{name: "defaults", req: &adclickv1.AggregatedCountRequest{AdId: "ad"},
			from: "2025-01-02T03:03:00Z", to: "2025-01-02T03:04:00Z"},
		{name: "truncated to minutes", req: &adclickv1.AggregatedCountRequest{AdId: "ad",
			From: ts("2025-01-02T01:00:59Z"), To: ts("2025-01-02T02:30:01Z")},
			from: "2025-01-02T01:00:00Z", to: "2025-01-02T02:30:00Z"},
		{name: "from defaults to to minus one minute", req: &adclickv1.AggregatedCountRequest{AdId: "ad", To: ts("2025-01-01T00:00:10Z")},
			from: "2024-12-31T23:59:00Z", to: "2025-01-01T00:00:00Z"},
		{name: "empty range", req: &adclickv1.AggregatedCountRequest{AdId: "ad", From: ts("2025-01-02T01:00:00Z"), To: ts("2025-01-02T01:00:30Z")},
			from: "2025-01-02T01:00:00Z", to: "2025-01-02T01:00:00Z"},
		{name: "filter in effect", req: &adclickv1.AggregatedCountRequest{AdId: "ad", Filter: 1, From: ts("2025-01-02T03:00:00Z")},
			from: "2025-01-02T03:00:00Z", to: "2025-01-02T03:04:00Z"},
		{name: "no ad", req: &adclickv1.AggregatedCountRequest{}, code: codes.InvalidArgument, message: "ad_id is required"},
		{name: "from after to", req: &adclickv1.AggregatedCountRequest{AdId: "ad", From: ts("2025-01-02T03:00:00Z"), To: ts("2025-01-02T02:00:00Z")},
			code: codes.InvalidArgument, message: "from 2025-01-02T03:00:00Z is after to 2025-01-02T02:00:00Z"},
		{name: "negative filter", req: &adclickv1.AggregatedCountRequest{AdId: "ad", Filter: -1}, code: codes.InvalidArgument, message: "filter is -1"},
		{name: "unknown filter", req: &adclickv1.AggregatedCountRequest{AdId: "ad", Filter: 7}, code: codes.NotFound,
			message: "filter 7 does not exist (list them with GET /v1/filters)"},
		{name: "before the filter counts", req: &adclickv1.AggregatedCountRequest{AdId: "ad", Filter: 1, From: ts("2025-01-02T02:59:00Z")},
			code: codes.FailedPrecondition, message: "filter 1 counts from 2025-01-02T03:00:00Z; ask from that minute on"},
		{name: "invalid timestamp", req: &adclickv1.AggregatedCountRequest{AdId: "ad", To: &timestamppb.Timestamp{Nanos: -1}},
			code: codes.InvalidArgument, message: "to is not a valid timestamp"},
	}
	red := startReducer(t, "red-1", 42)
	e := newEnv(t, DefaultConfig(), nil, []*redNode{red})
	e.filters.Set(t, filter.Filter{ID: 1, Countries: []string{"US"}, EffectiveFrom: clock.Minute(ts("2025-01-02T03:00:00Z").AsTime())})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := red.fake.calls.Load()
			resp, err := e.query.AggregatedCount(ctxT(t), tt.req)
			if tt.code != codes.OK {
				wantCode(t, err, tt.code, tt.message)
				if red.fake.calls.Load() != calls {
					t.Fatal("an invalid query reached the reducer")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			red.fake.mu.Lock()
			got := red.fake.lastAC
			red.fake.mu.Unlock()
			if got.AdId != tt.req.AdId || got.Filter != tt.req.Filter ||
				!got.From.AsTime().Equal(ts(tt.from).AsTime()) || !got.To.AsTime().Equal(ts(tt.to).AsTime()) {
				t.Fatalf("reducer asked %v, want from %s to %s", got, tt.from, tt.to)
			}
			if resp.Count != 42 {
				t.Fatalf("count %d, want the reducer's 42", resp.Count)
			}
		})
	}
}

func TestPopularAds(t *testing.T) {
	tests := []struct {
		name    string
		req     *adclickv1.PopularAdsRequest
		code    codes.Code
		message string
		want    *adclickv1.PopularAdsRequest // what the reducer is asked
	}{
		{name: "defaults", req: &adclickv1.PopularAdsRequest{},
			want: &adclickv1.PopularAdsRequest{Count: 100, Window: 1, To: ts("2025-01-02T03:04:00Z")}},
		{name: "given", req: &adclickv1.PopularAdsRequest{Count: 5, Window: 60, To: ts("2025-01-02T02:00:01Z")},
			want: &adclickv1.PopularAdsRequest{Count: 5, Window: 60, To: ts("2025-01-02T02:00:00Z")}},
		{name: "limits", req: &adclickv1.PopularAdsRequest{Count: 10000, Window: 1440},
			want: &adclickv1.PopularAdsRequest{Count: 10000, Window: 1440, To: ts("2025-01-02T03:04:00Z")}},
		{name: "filter window inside", req: &adclickv1.PopularAdsRequest{Filter: 1, Window: 4},
			want: &adclickv1.PopularAdsRequest{Count: 100, Window: 4, Filter: 1, To: ts("2025-01-02T03:04:00Z")}},
		{name: "negative count", req: &adclickv1.PopularAdsRequest{Count: -1}, code: codes.InvalidArgument, message: "count is -1"},
		{name: "count too large", req: &adclickv1.PopularAdsRequest{Count: 10001}, code: codes.InvalidArgument, message: "want 1..10000"},
		{name: "negative window", req: &adclickv1.PopularAdsRequest{Window: -2}, code: codes.InvalidArgument, message: "window is -2 minutes"},
		{name: "window too long", req: &adclickv1.PopularAdsRequest{Window: 1441}, code: codes.InvalidArgument, message: "want 1..1440 (--max-window)"},
		{name: "negative filter", req: &adclickv1.PopularAdsRequest{Filter: -3}, code: codes.InvalidArgument, message: "filter is -3"},
		{name: "unknown filter", req: &adclickv1.PopularAdsRequest{Filter: 9}, code: codes.NotFound, message: "filter 9 does not exist"},
		{name: "window starts before the filter", req: &adclickv1.PopularAdsRequest{Filter: 1, Window: 5},
			code: codes.FailedPrecondition, message: "filter 1 counts from 2025-01-02T03:00:00Z"},
	}
	red := startReducer(t, "red-1", 7)
	e := newEnv(t, DefaultConfig(), nil, []*redNode{red})
	e.filters.Set(t, filter.Filter{ID: 1, Countries: []string{"US"}, EffectiveFrom: clock.Minute(ts("2025-01-02T03:00:00Z").AsTime())})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := e.query.PopularAds(ctxT(t), tt.req)
			if tt.code != codes.OK {
				wantCode(t, err, tt.code, tt.message)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			red.fake.mu.Lock()
			got := red.fake.lastPopl
			red.fake.mu.Unlock()
			if got.Count != tt.want.Count || got.Window != tt.want.Window || got.Filter != tt.want.Filter || !got.To.AsTime().Equal(tt.want.To.AsTime()) {
				t.Fatalf("reducer asked %v, want %v", got, tt.want)
			}
			if len(resp.Ads) != 1 || resp.Ads[0].Count != 7 {
				t.Fatalf("response %v", resp)
			}
		})
	}
}

func TestReducerFailover(t *testing.T) {
	t.Run("unavailable and down reducers are skipped", func(t *testing.T) {
		r1, r2, r3 := startReducer(t, "red-1", 1), startReducer(t, "red-2", 2), startReducer(t, "red-3", 3)
		e := newEnv(t, DefaultConfig(), nil, []*redNode{r1, r2, r3})
		r1.fake.fail.Store(int32(codes.Unavailable))
		r3.stop()
		for i := range 6 { // every start index of the rotation
			resp, err := e.query.AggregatedCount(ctxT(t), &adclickv1.AggregatedCountRequest{AdId: "ad"})
			if err != nil {
				t.Fatalf("query %d: %v", i, err)
			}
			if resp.Count != 2 {
				t.Fatalf("query %d answered by reducer %d, want red-2", i, resp.Count)
			}
		}
	})
	t.Run("slow reducer is skipped after the query timeout", func(t *testing.T) {
		r1, r2 := startReducer(t, "red-1", 1), startReducer(t, "red-2", 2)
		cfg := DefaultConfig()
		cfg.QueryTimeout = 200 * time.Millisecond
		e := newEnv(t, cfg, nil, []*redNode{r1, r2})
		r1.fake.hang.Store(true)
		for i := range 4 {
			resp, err := e.query.PopularAds(ctxT(t), &adclickv1.PopularAdsRequest{})
			if err != nil || resp.Ads[0].Count != 2 {
				t.Fatalf("query %d: %v %v", i, resp, err)
			}
		}
	})
	t.Run("other errors pass through", func(t *testing.T) {
		r1, r2 := startReducer(t, "red-1", 1), startReducer(t, "red-2", 2)
		e := newEnv(t, DefaultConfig(), nil, []*redNode{r1, r2})
		r1.fake.fail.Store(int32(codes.Internal))
		r2.fake.fail.Store(int32(codes.Internal))
		_, err := e.query.AggregatedCount(ctxT(t), &adclickv1.AggregatedCountRequest{AdId: "ad"})
		wantCode(t, err, codes.Internal, "fake reducer")
		if n := r1.fake.calls.Load() + r2.fake.calls.Load(); n != 1 {
			t.Fatalf("%d reducers asked, want 1", n)
		}
	})
	t.Run("all down", func(t *testing.T) {
		r1, r2 := startReducer(t, "red-1", 1), startReducer(t, "red-2", 2)
		e := newEnv(t, DefaultConfig(), nil, []*redNode{r1, r2})
		r1.stop()
		r2.fake.fail.Store(int32(codes.Unavailable))
		_, err := e.query.AggregatedCount(ctxT(t), &adclickv1.AggregatedCountRequest{AdId: "ad"})
		wantCode(t, err, codes.Unavailable, "reducer red-2")
	})
	t.Run("none registered", func(t *testing.T) {
		e := newEnv(t, DefaultConfig(), nil, nil)
		_, err := e.query.PopularAds(ctxT(t), &adclickv1.PopularAdsRequest{})
		wantCode(t, err, codes.Unavailable, "no reducer registered")
	})
}

func TestFilterService(t *testing.T) {
	e := newEnv(t, DefaultConfig(), nil, nil)
	ctx := ctxT(t)
	f, err := e.filterC.CreateFilter(ctx, &adclickv1.CreateFilterRequest{Filter: &adclickv1.Filter{Countries: []string{"us"}, Id: 99}})
	if err != nil {
		t.Fatal(err)
	}
	wantFrom := filter.EffectiveFrom(testNow, filter.DefaultLead)
	if f.Id != 1 || f.Countries[0] != "US" || clock.Minute(f.EffectiveFrom.AsTime()) != wantFrom {
		t.Fatalf("created %v", f)
	}
	_, err = e.filterC.CreateFilter(ctx, &adclickv1.CreateFilterRequest{Filter: &adclickv1.Filter{Countries: []string{"USA"}}})
	wantCode(t, err, codes.InvalidArgument, `country "USA" is not an ISO 3166-1 alpha-2 code`)
	_, err = e.filterC.CreateFilter(ctx, &adclickv1.CreateFilterRequest{})
	wantCode(t, err, codes.InvalidArgument, "filter is required")

	list, err := e.filterC.ListFilters(ctx, &adclickv1.ListFiltersRequest{})
	if err != nil || len(list.Filters) != 1 || list.Filters[0].Id != 1 {
		t.Fatalf("list %v %v", list, err)
	}
	_, err = e.filterC.DeleteFilter(ctx, &adclickv1.DeleteFilterRequest{Id: 0})
	wantCode(t, err, codes.InvalidArgument, "filter id is 0")
	_, err = e.filterC.DeleteFilter(ctx, &adclickv1.DeleteFilterRequest{Id: 5})
	wantCode(t, err, codes.NotFound, "filter 5 does not exist")
	if _, err := e.filterC.DeleteFilter(ctx, &adclickv1.DeleteFilterRequest{Id: 1}); err != nil {
		t.Fatal(err)
	}
	list, err = e.filterC.ListFilters(ctx, &adclickv1.ListFiltersRequest{})
	if err != nil || len(list.Filters) != 0 {
		t.Fatalf("list after delete %v %v", list, err)
	}
}

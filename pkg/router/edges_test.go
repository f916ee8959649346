package router

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
	"github.com/adclick/adclick/pkg/etcdembed"
	"github.com/adclick/adclick/pkg/filter"
)

// TestQueryBeforeYearOne asks for ranges that reach before 0001-01-01, the
// earliest time a protobuf Timestamp holds: REST answered HTTP 500
// ("Timestamp: seconds out of range"); it must be a 400 saying why.
func TestQueryBeforeYearOne(t *testing.T) {
	e := newEnv(t, DefaultConfig(), nil, []*redNode{startReducer(t, "red-1", 0)})
	srv := startGateway(t, e)
	for _, path := range []string{
		"/v1/ads/popular_ads?to=0001-01-01T00:30:00Z&window=60",
		"/v1/ads/ad-1/aggregated_count?to=0001-01-01T00:00:00Z",
	} {
		got := doJSON(t, "GET", srv.URL+path, "", http.StatusBadRequest)
		if msg, _ := got["message"].(string); !strings.Contains(msg, "0001-01-01T00:00:00Z") {
			t.Fatalf("GET %s: %v; want a message naming the earliest time", path, got)
		}
	}
	_, err := e.query.PopularAds(ctxT(t), &adclickv1.PopularAdsRequest{Window: 2, To: minuteProto(firstMinute + 60)})
	wantCode(t, err, codes.InvalidArgument, "shorter window")
	// The earliest range that fits is answered.
	doJSON(t, "GET", srv.URL+"/v1/ads/popular_ads?to=0001-01-01T01:00:00Z&window=60", "", http.StatusOK)
	doJSON(t, "GET", srv.URL+"/v1/ads/ad-1/aggregated_count?from=0001-01-01T00:00:00Z&to=0001-01-01T00:01:00Z", "", http.StatusOK)
}

// TestFiltersWithEtcdDown stops etcd under a router using the real filter
// store: CreateFilter, ListFilters and DeleteFilter must answer UNAVAILABLE
// within --filter-timeout, not hang until the client's deadline.
func TestFiltersWithEtcdDown(t *testing.T) {
	srv, err := etcdembed.Start(t.TempDir(), "127.0.0.1:0", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stopEtcd := func() { once.Do(srv.Close) }
	t.Cleanup(stopEtcd)
	cli, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	cfg := DefaultConfig()
	if cfg.FilterTimeout != 5*time.Second {
		t.Fatalf("--filter-timeout defaults to %s, want 5s", cfg.FilterTimeout)
	}
	cfg.FilterTimeout = 300 * time.Millisecond
	e := newEnv(t, cfg, nil, nil)
	e.router.store = filter.NewStore(cli, e.clock)
	if _, err := e.filterC.CreateFilter(ctxT(t), &adclickv1.CreateFilterRequest{Filter: &adclickv1.Filter{Countries: []string{"us"}}}); err != nil {
		t.Fatalf("create with etcd up: %v", err)
	}
	stopEtcd()
	calls := map[string]func(context.Context) error{
		"CreateFilter": func(ctx context.Context) error {
			_, err := e.filterC.CreateFilter(ctx, &adclickv1.CreateFilterRequest{Filter: &adclickv1.Filter{Countries: []string{"de"}}})
			return err
		},
		"ListFilters": func(ctx context.Context) error {
			_, err := e.filterC.ListFilters(ctx, &adclickv1.ListFiltersRequest{})
			return err
		},
		"DeleteFilter": func(ctx context.Context) error {
			_, err := e.filterC.DeleteFilter(ctx, &adclickv1.DeleteFilterRequest{Id: 1})
			return err
		},
	}
	for name, call := range calls {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		start := time.Now()
		err := call(ctx)
		took := time.Since(start)
		cancel()
		wantCode(t, err, codes.Unavailable, "--filter-timeout")
		if took > 5*time.Second {
			t.Fatalf("%s took %v with etcd down; want about --filter-timeout (300ms)", name, took)
		}
	}
}

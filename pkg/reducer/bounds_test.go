package reducer

import (
	"context"
	"fmt"
	"strings"
	"testing"

	clusterv1 "github.com/adclick/adclick/gen/adclick/cluster/v1"
	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestPopularAdsBoundsAndCancel checks that PopularAds refuses a count over
// MaxPopularCount naming the limit, and that a canceled query answers
// Canceled instead of running to its end under the reducer's read lock.
func TestPopularAdsBoundsAndCancel(t *testing.T) {
	e := newEnv(t, 1440)
	r := e.open(t)
	var ps []*clusterv1.Partial
	for m := range int64(30) {
		var cs []*clusterv1.Count
		for a := range 500 {
			cs = append(cs, cnt(0, fmt.Sprint("ad-", a), 1+(m+int64(a))%3))
		}
		ps = append(ps, partial(uint64(m+1), m0-1800+m*60, true, cs...))
	}
	mustApply(t, r, "agg-1", 1, 30, ps...)

	_, err := r.PopularAds(context.Background(), &adclickv1.PopularAdsRequest{Count: MaxPopularCount + 1, Window: 30, To: ts(m0)})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "10000") {
		t.Fatalf("count over the limit: %v; want InvalidArgument naming 10000", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = r.PopularAds(ctx, &adclickv1.PopularAdsRequest{Count: MaxPopularCount, Window: 30, To: ts(m0)})
	if status.Code(err) != codes.Canceled {
		t.Fatalf("canceled query: %v; want Canceled", err)
	}
	top, _ := popular(t, r, 0, 3, 30, m0)
	if len(top) != 3 {
		t.Fatalf("live query answered %v", top)
	}
}

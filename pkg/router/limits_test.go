package router

import (
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"

	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
)

// TestCreateFilterLimits checks that CreateFilter refuses a filter beyond
// --max-filters (FAILED_PRECONDITION naming the flag) and one with too many
// values (INVALID_ARGUMENT naming the limit), and that PopularAds refuses a
// count over its bound naming it.
func TestCreateFilterLimits(t *testing.T) {
	cfg := DefaultConfig()
	if cfg.MaxFilters != 100 {
		t.Fatalf("--max-filters defaults to %d, want 100", cfg.MaxFilters)
	}
	cfg.MaxFilters = 3
	e := newEnv(t, cfg, nil, []*redNode{startReducer(t, "red-1", 0)})
	for i := range 3 {
		if _, err := e.filterC.CreateFilter(ctxT(t), &adclickv1.CreateFilterRequest{Filter: &adclickv1.Filter{UserIds: []string{fmt.Sprint("u", i)}}}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := e.filterC.CreateFilter(ctxT(t), &adclickv1.CreateFilterRequest{Filter: &adclickv1.Filter{Countries: []string{"us"}}})
	wantCode(t, err, codes.FailedPrecondition, "--max-filters")
	if _, err := e.filterC.DeleteFilter(ctxT(t), &adclickv1.DeleteFilterRequest{Id: 1}); err != nil {
		t.Fatal(err)
	}
	many := make([]string, 1001)
	for i := range many {
		many[i] = fmt.Sprint("10.0.", i/256, ".", i%256)
	}
	_, err = e.filterC.CreateFilter(ctxT(t), &adclickv1.CreateFilterRequest{Filter: &adclickv1.Filter{Ips: many}})
	wantCode(t, err, codes.InvalidArgument, "at most 1000")
	if _, err := e.filterC.CreateFilter(ctxT(t), &adclickv1.CreateFilterRequest{Filter: &adclickv1.Filter{Ips: many[:1000]}}); err != nil {
		t.Fatalf("a filter of 1000 ips after a delete: %v", err)
	}
	_, err = e.query.PopularAds(ctxT(t), &adclickv1.PopularAdsRequest{Count: 10001})
	wantCode(t, err, codes.InvalidArgument, "10000")
}

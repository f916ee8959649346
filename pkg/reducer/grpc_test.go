package reducer

import (
	"context"
	"net"
	"testing"

	clusterv1 "github.com/adclick/adclick/gen/adclick/cluster/v1"
	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
	"github.com/adclick/adclick/pkg/membership"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
)

func serve(t *testing.T, r *Reducer) clusterv1.ReducerServiceClient {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	r.Register(srv) // Apply reads requests in place, as in production
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return clusterv1.NewReducerServiceClient(conn)
}

func TestOverGRPC(t *testing.T) {
	e := newEnv(t, 1440)
	e.setMembers(membership.Member{ID: "agg", Incarnation: 1, FirstMinute: m0})
	cli := serve(t, e.open(t))
	ctx := context.Background()

	req := &clusterv1.ApplyRequest{AggregatorId: "agg", Incarnation: 1, Partials: []*clusterv1.Partial{
		partial(1, m0, true, cnt(0, "x", 3), cnt(0, "y", 5), cnt(0, "z", 3), cnt(4, "x", 3)),
		partial(2, m0+60, false, cnt(0, "x", 1)),
	}}
	for i := 0; i < 2; i++ { // the second send is a resend
		resp, err := cli.Apply(ctx, req)
		if err != nil || resp.GetAppliedThrough() != 2 {
			t.Fatalf("Apply #%d = %v, %v; want applied_through 2", i, resp, err)
		}
	}
	_, err := cli.Apply(ctx, &clusterv1.ApplyRequest{AggregatorId: "agg", Incarnation: 1, Partials: []*clusterv1.Partial{partial(7, m0, false)}})
	if at, ok := AppliedThrough(err); status.Code(err) != codes.FailedPrecondition || !ok || at != 2 {
		t.Fatalf("gap over gRPC: err = %v, AppliedThrough = %d, %v; want FailedPrecondition carrying 2", err, at, ok)
	}

	cr, err := cli.AggregatedCount(ctx, &adclickv1.AggregatedCountRequest{AdId: "x", From: ts(m0), To: ts(m0 + 120)})
	if err != nil || cr.GetCount() != 4 || cr.GetComplete() {
		t.Fatalf("AggregatedCount = %v, %v; want 4, incomplete (m0+60 open)", cr, err)
	}
	cr, err = cli.AggregatedCount(ctx, &adclickv1.AggregatedCountRequest{AdId: "x", From: ts(m0), To: ts(m0 + 60), Filter: 4})
	if err != nil || cr.GetCount() != 3 || !cr.GetComplete() {
		t.Fatalf("AggregatedCount(filter 4) = %v, %v; want 3, complete", cr, err)
	}
	pr, err := cli.PopularAds(ctx, &adclickv1.PopularAdsRequest{Count: 2, Window: 2, To: ts(m0 + 120)})
	if err != nil {
		t.Fatalf("PopularAds: %v", err)
	}
	want := []*adclickv1.AdCount{{AdId: "y", Count: 5}, {AdId: "x", Count: 4}}
	if len(pr.GetAds()) != len(want) || pr.GetComplete() {
		t.Fatalf("PopularAds = %v; want %v, incomplete", pr.GetAds(), want)
	}
	for i, a := range pr.GetAds() {
		if a.GetAdId() != want[i].GetAdId() || a.GetCount() != want[i].GetCount() {
			t.Fatalf("PopularAds[%d] = %v, want %v", i, a, want[i])
		}
	}
	if _, err := cli.PopularAds(ctx, &adclickv1.PopularAdsRequest{Count: 2, Window: 0, To: ts(m0)}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("PopularAds(window 0): err = %v, want InvalidArgument", err)
	}
}

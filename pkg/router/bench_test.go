package router

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	clusterv1 "github.com/adclick/adclick/gen/adclick/cluster/v1"
	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
	"github.com/adclick/adclick/pkg/membership"
	"github.com/adclick/adclick/pkg/ring/ringtest"
)

// acceptAll is an in-process aggregator client that accepts everything, so
// the benchmark measures the router's own per-event work.
type acceptAll struct {
	clusterv1.AggregatorServiceClient // HandOver: not called
	statuses                          []clusterv1.EventStatus
}

func (a *acceptAll) Forward(_ context.Context, req *clusterv1.ForwardRequest, _ ...grpc.CallOption) (*clusterv1.ForwardResponse, error) {
	return &clusterv1.ForwardResponse{Status: a.statuses[:len(req.Events)]}, nil
}

// BenchmarkIngestRouting measures validation, routing, grouping and merging
// of a 1000-event batch over 4 aggregators, without the network.
func BenchmarkIngestRouting(b *testing.B) {
	const batchSize, aggs = 1000, 4
	var ids []string
	var ms []membership.Member
	for i := range aggs {
		ids = append(ids, fmt.Sprintf("agg-%d", i))
		ms = append(ms, membership.Member{ID: ids[i], Addr: "unused"})
	}
	r, err := New(DefaultConfig(), Deps{Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Aggregators: &fakeMembers{}, Reducers: &fakeMembers{}, Ring: ringtest.New(), Filters: &fakeFilters{}, FilterStore: &fakeStore{}})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	t := &table{ring: ringtest.New(ids...).Current(), members: ms, clients: make([]clusterv1.AggregatorServiceClient, aggs), errs: make([]error, aggs)}
	for i := range t.clients {
		t.clients[i] = &acceptAll{statuses: make([]clusterv1.EventStatus, batchSize)}
	}
	r.table.Store(t)
	req := &adclickv1.IngestRequest{}
	for i := range batchSize {
		req.Events = append(req.Events, &adclickv1.ClickEvent{ClickId: fmt.Sprintf("c-%d", i), AdId: fmt.Sprintf("ad-%d", i),
			ClickTime: timestamppb.Now(), Ip: "192.0.2.1", Country: "US", UserId: "u"})
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		resp, err := r.Ingest(ctx, req)
		if err != nil || resp.Accepted != batchSize {
			b.Fatal(resp, err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batchSize), "ns/event")
}

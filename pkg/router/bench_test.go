package router

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	clusterv1 "github.com/adclick/adclick/gen/adclick/cluster/v1"
	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
	"github.com/adclick/adclick/pkg/event"
	"github.com/adclick/adclick/pkg/grpcbuf"
	"github.com/adclick/adclick/pkg/membership"
	"github.com/adclick/adclick/pkg/ring/ringtest"
)

// acceptAll is an in-process aggregator connection that accepts every
// forwarded event, so the benchmark measures the router's own per-event work.
type acceptAll struct {
	grpc.ClientConnInterface // NewStream: not called
	statuses                 []clusterv1.EventStatus
	mu                       sync.Mutex
	evs                      [][]byte
}

func (a *acceptAll) Invoke(_ context.Context, _ string, args, reply any, _ ...grpc.CallOption) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	var err error
	if a.evs, err = event.SplitEvents(args.(*grpcbuf.Frame).B, a.evs[:0]); err != nil {
		return err
	}
	reply.(*clusterv1.ForwardResponse).Status = a.statuses[:len(a.evs)]
	return nil
}

// BenchmarkIngestRouting measures decoding, validation, routing, grouping
// and merging of an encoded 1000-event batch over 4 aggregators, without
// the network (the aggregators' requests are still built).
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
	t := &table{ring: ringtest.New(ids...).Current(), members: ms, conns: make([]grpc.ClientConnInterface, aggs), errs: make([]error, aggs)}
	for i := range t.conns {
		t.conns[i] = &acceptAll{statuses: make([]clusterv1.EventStatus, batchSize)}
	}
	r.table.Store(t)
	req := &adclickv1.IngestRequest{}
	for i := range batchSize {
		req.Events = append(req.Events, &adclickv1.ClickEvent{ClickId: fmt.Sprintf("c-%d", i), AdId: fmt.Sprintf("ad-%d", i),
			ClickTime: timestamppb.Now(), Ip: "192.0.2.1", Country: "US", UserId: "u"})
	}
	enc, err := proto.Marshal(req)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		resp, err := r.IngestFrame(ctx, &grpcbuf.Frame{B: enc})
		if err != nil || resp.Accepted != batchSize {
			b.Fatal(resp, err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batchSize), "ns/event")
}

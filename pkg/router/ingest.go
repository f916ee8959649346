package router

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	clusterv1 "github.com/adclick/adclick/gen/adclick/cluster/v1"
	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
	"github.com/adclick/adclick/pkg/clock"
	"github.com/adclick/adclick/pkg/event"
)

// Ingest validates the batch, forwards its valid events to their owning
// aggregators and answers once every owner has made them durable.
func (r *Router) Ingest(ctx context.Context, req *adclickv1.IngestRequest) (*adclickv1.IngestResponse, error) {
	resp, err := r.ingest(ctx, req)
	r.m.ingestRequests.WithLabelValues(status.Code(err).String()).Inc()
	return resp, err
}

// IngestStream answers each request of the stream as Ingest would, in
// request order. Up to streamInFlight requests are forwarded at once. The
// first request that fails ends the stream with its status; the client
// resends the requests it has no response for (duplicates are safe).
func (r *Router) IngestStream(stream adclickv1.IngestService_IngestStreamServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	type result struct {
		resp *adclickv1.IngestResponse
		err  error
	}
	// pending holds the result channels in request order; its capacity
	// bounds the requests in flight.
	pending := make(chan chan result, streamInFlight-1)
	recvErr := make(chan error, 1)
	go func() {
		defer close(pending)
		for {
			req, err := stream.Recv()
			if err != nil {
				if err != io.EOF {
					recvErr <- err
				}
				return
			}
			ch := make(chan result, 1)
			select {
			case pending <- ch:
			case <-ctx.Done():
				return
			}
			go func() {
				resp, err := r.Ingest(ctx, req)
				ch <- result{resp, err}
			}()
		}
	}()
	for ch := range pending {
		res := <-ch
		if res.err != nil {
			return res.err
		}
		if err := stream.Send(res.resp); err != nil {
			return err
		}
	}
	select {
	case err := <-recvErr:
		return err
	default:
		return nil
	}
}

// batch is the reusable scratch space of one ingest request.
type batch struct {
	groups   [][]int32 // by ring index: indexes into the request's events
	owners   []int     // ring indexes with a non-empty group, ascending
	reqs     []*clusterv1.ForwardRequest
	results  []forwardResult // by position in owners
	rejected []*adclickv1.Rejection
}

type forwardResult struct {
	resp *clusterv1.ForwardResponse
	err  error
}

var batchPool = sync.Pool{New: func() any { return new(batch) }}

func getBatch(members int) *batch {
	b := batchPool.Get().(*batch)
	for len(b.groups) < members {
		b.groups = append(b.groups, nil)
	}
	for i := range b.groups {
		b.groups[i] = b.groups[i][:0]
	}
	b.owners = b.owners[:0]
	b.rejected = nil // handed to the response
	return b
}

func putBatch(b *batch) {
	for _, req := range b.reqs {
		clear(req.Events) // let the events be collected
		req.Events = req.Events[:0]
	}
	clear(b.results)
	batchPool.Put(b)
}

func (r *Router) ingest(ctx context.Context, req *adclickv1.IngestRequest) (*adclickv1.IngestResponse, error) {
	events := req.GetEvents()
	if len(events) > r.cfg.MaxBatch {
		return nil, status.Errorf(codes.InvalidArgument,
			"batch has %d events; at most %d per request (--max-batch): split it", len(events), r.cfg.MaxBatch)
	}
	r.m.received.Add(float64(len(events)))
	if n := r.inflight.Add(int64(len(events))); n > int64(r.cfg.MaxInflight) {
		r.inflight.Add(-int64(len(events)))
		return nil, status.Errorf(codes.ResourceExhausted,
			"router is forwarding %d events (--max-inflight-events=%d): aggregators are not keeping up; retry later", n-int64(len(events)), r.cfg.MaxInflight)
	}
	defer r.inflight.Add(-int64(len(events)))
	t := r.table.Load()
	b := getBatch(t.ring.Len())
	defer putBatch(b)

	for i, ev := range events {
		if reason := event.Validate(ev); reason != "" {
			b.rejected = append(b.rejected, &adclickv1.Rejection{Index: int32(i), Reason: reason})
			continue
		}
		minute := clock.MinuteOfUnix(ev.ClickTime.GetSeconds())
		o := t.ring.IndexAt(ev.AdId, minute)
		if o < 0 {
			if t.ring.Len() == 0 {
				return nil, status.Error(codes.Unavailable, "no aggregator registered; retry later")
			}
			return nil, status.Errorf(codes.Unavailable, "no aggregator owns minute %s yet; retry later", clock.MinuteTime(minute).Format(time.RFC3339))
		}
		if len(b.groups[o]) == 0 {
			b.owners = append(b.owners, o)
		}
		b.groups[o] = append(b.groups[o], int32(i))
	}
	r.m.rejectedRouter.Add(float64(len(b.rejected)))
	slices.Sort(b.owners)

	r.forwardAll(ctx, t, b, events)
	if err := ctx.Err(); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	return r.merge(t, b)
}

// forwardAll sends one ForwardRequest per owner, in parallel, and waits for
// every answer.
func (r *Router) forwardAll(ctx context.Context, t *table, b *batch, events []*adclickv1.ClickEvent) {
	for len(b.reqs) < len(b.owners) {
		b.reqs = append(b.reqs, &clusterv1.ForwardRequest{})
	}
	b.results = slices.Grow(b.results[:0], len(b.owners))[:len(b.owners)]
	for k, o := range b.owners {
		fr := b.reqs[k]
		for _, i := range b.groups[o] {
			fr.Events = append(fr.Events, events[i])
		}
	}
	var wg sync.WaitGroup
	for k := 1; k < len(b.owners); k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.results[k] = r.forward(ctx, t, b.owners[k], b.reqs[k])
		}()
	}
	if len(b.owners) > 0 {
		b.results[0] = r.forward(ctx, t, b.owners[0], b.reqs[0])
	}
	wg.Wait()
}

func (r *Router) forward(ctx context.Context, t *table, o int, fr *clusterv1.ForwardRequest) forwardResult {
	if err := t.errs[o]; err != nil {
		return forwardResult{err: err}
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.ForwardTimeout)
	defer cancel()
	start := time.Now()
	resp, err := t.clients[o].Forward(ctx, fr)
	r.m.forwardDuration.Observe(time.Since(start).Seconds())
	if err == nil && len(resp.GetStatus()) != len(fr.Events) {
		err = status.Errorf(codes.Internal, "answered %d statuses for %d events", len(resp.GetStatus()), len(fr.Events))
	}
	if err != nil {
		r.m.forwardErrors.WithLabelValues(status.Code(err).String()).Inc()
	}
	return forwardResult{resp: resp, err: err}
}

// merge folds the owners' answers into one response, mapping aggregator
// rejections back to request indexes.
func (r *Router) merge(t *table, b *batch) (*adclickv1.IngestResponse, error) {
	for k, o := range b.owners {
		if err := b.results[k].err; err != nil {
			m := t.ring.Members()[o]
			st := status.Convert(err)
			if st.Code() == codes.ResourceExhausted {
				return nil, status.Errorf(codes.ResourceExhausted,
					"aggregator %s at %s is overloaded: %s; retry the same batch later (duplicates are safe)", m.ID, m.Addr, st.Message())
			}
			return nil, status.Errorf(codes.Unavailable,
				"aggregator %s at %s unavailable: %s: %s; retry the same batch (duplicates are safe)", m.ID, m.Addr, st.Code(), st.Message())
		}
	}
	resp := &adclickv1.IngestResponse{}
	routerRejected := len(b.rejected)
	for k, o := range b.owners {
		fr := b.results[k].resp
		group := b.groups[o]
		for j, s := range fr.Status {
			switch s {
			case clusterv1.EventStatus_EVENT_STATUS_ACCEPTED:
				resp.Accepted++
			case clusterv1.EventStatus_EVENT_STATUS_DUPLICATE:
				resp.Duplicates++
			default:
				reason := fr.Reasons[int32(j)]
				if reason == "" {
					reason = fmt.Sprintf("rejected by aggregator %s (status %s)", t.ring.Members()[o].ID, s)
				}
				b.rejected = append(b.rejected, &adclickv1.Rejection{Index: group[j], Reason: reason})
			}
		}
	}
	if len(b.rejected) > routerRejected {
		slices.SortFunc(b.rejected, func(x, y *adclickv1.Rejection) int { return cmp.Compare(x.Index, y.Index) })
	}
	resp.Rejected = b.rejected
	r.m.accepted.Add(float64(resp.Accepted))
	r.m.duplicate.Add(float64(resp.Duplicates))
	r.m.rejectedAgg.Add(float64(len(b.rejected) - routerRejected))
	return resp, nil
}

package router

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/adclick/adclick/gen/adclick/cluster/v1"
	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
	"github.com/adclick/adclick/pkg/clock"
	"github.com/adclick/adclick/pkg/event"
	"github.com/adclick/adclick/pkg/grpcbuf"
)

// Ingest validates the batch, forwards its valid events to their owning
// aggregators and answers once every owner has made them durable. It is
// the path of the REST gateway and of in-process callers; gRPC clients
// take IngestFrame (see Register), which answers the same.
func (r *Router) Ingest(ctx context.Context, req *adclickv1.IngestRequest) (*adclickv1.IngestResponse, error) {
	start := time.Now()
	resp, err := r.ingestMessage(ctx, req)
	r.observeIngest(start, err)
	return resp, err
}

// observeIngest counts an ingest request that arrived at start and was
// answered err.
func (r *Router) observeIngest(start time.Time, err error) {
	r.m.ingestDuration.Observe(time.Since(start).Seconds())
	r.m.ingestRequests.WithLabelValues(status.Code(err).String()).Inc()
}

func (r *Router) ingestMessage(ctx context.Context, req *adclickv1.IngestRequest) (*adclickv1.IngestResponse, error) {
	events := req.GetEvents()
	if err := r.checkBatchLen(len(events)); err != nil {
		return nil, err
	}
	evs := make([][]byte, len(events))
	for i, ev := range events {
		if reason := event.Validate(ev); reason != "" {
			ev = event.Undecodable(reason) // rejected again, with its reason, by index
		}
		b, err := proto.Marshal(ev)
		if err != nil {
			b, _ = proto.Marshal(event.Undecodable("event could not be encoded: " + err.Error()))
		}
		evs[i] = b
	}
	return r.ingest(ctx, evs)
}

// IngestFrame is Ingest on a request in its protobuf encoding: each click
// is read in place and forwarded as the client's bytes. A request whose
// framing is broken is INVALID_ARGUMENT; an event that does not decode is
// rejected by its index, and the rest of the batch is counted.
func (r *Router) IngestFrame(ctx context.Context, f *grpcbuf.Frame) (*adclickv1.IngestResponse, error) {
	start := time.Now()
	resp, err := r.ingestFrame(ctx, f)
	r.observeIngest(start, err)
	return resp, err
}

func (r *Router) ingestFrame(ctx context.Context, f *grpcbuf.Frame) (*adclickv1.IngestResponse, error) {
	sp := splitPool.Get().(*[][]byte)
	defer func() {
		clear(*sp) // the events alias the request's buffer
		*sp = (*sp)[:0]
		splitPool.Put(sp)
	}()
	evs, err := event.SplitEvents(f.B, (*sp)[:0])
	*sp = evs
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "the request does not decode as an IngestRequest: %v", err)
	}
	if err := r.checkBatchLen(len(evs)); err != nil {
		return nil, err
	}
	return r.ingest(ctx, evs)
}

var splitPool = sync.Pool{New: func() any { return new([][]byte) }}

func (r *Router) checkBatchLen(n int) error {
	if n > r.cfg.MaxBatch {
		return status.Errorf(codes.InvalidArgument,
			"batch has %d events; at most %d per request (--max-batch): split it", n, r.cfg.MaxBatch)
	}
	return nil
}

// IngestStream answers each request of the stream as Ingest would, in
// request order. Up to streamInFlight requests are forwarded at once. The
// first request that fails ends the stream with its status; the client
// resends the requests it has no response for (duplicates are safe).
func (r *Router) IngestStream(stream adclickv1.IngestService_IngestStreamServer) error {
	return r.ingestStream(stream)
}

func (r *Router) ingestStream(stream grpc.ServerStream) error {
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
			f := new(grpcbuf.Frame)
			if err := stream.RecvMsg(f); err != nil {
				if err != io.EOF {
					recvErr <- err
				}
				return
			}
			ch := make(chan result, 1)
			select {
			case pending <- ch:
			case <-ctx.Done():
				f.Free()
				return
			}
			go func() {
				resp, err := r.IngestFrame(ctx, f)
				f.Free()
				ch <- result{resp, err}
			}()
		}
	}()
	for ch := range pending {
		res := <-ch
		if res.err != nil {
			return res.err
		}
		if err := stream.SendMsg(res.resp); err != nil {
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

// ingestServiceDesc is IngestService with handlers that take requests in
// their encoding (a grpcbuf.Frame) and read the clicks in place.
func ingestServiceDesc() *grpc.ServiceDesc {
	d := grpcbuf.WithFrameMethod(&adclickv1.IngestService_ServiceDesc, "Ingest",
		func(r *Router, ctx context.Context, f *grpcbuf.Frame) (any, error) { return r.IngestFrame(ctx, f) })
	d.Streams = []grpc.StreamDesc{{StreamName: "IngestStream", ServerStreams: true, ClientStreams: true,
		Handler: func(srv any, stream grpc.ServerStream) error { return srv.(*Router).ingestStream(stream) }}}
	return d
}

// maxRounds bounds how often one request re-routes events an aggregator
// answered NOT_OWNER for (each round re-reads the ring history first).
const maxRounds = 3

// batch is the reusable scratch space of one ingest request.
type batch struct {
	pending     []int32         // indexes of events still to be forwarded this round
	next        []int32         // NOT_OWNER answers, for the next round
	groups      [][]int32       // by aggregator index: indexes into the request's events
	owners      []int           // aggregator indexes with a non-empty group, ascending
	fields      []event.Fields  // by event index; the strings alias the request
	frames      [][]byte        // by position in owners: the encoded ForwardRequest
	results     []forwardResult // by position in owners
	rejected    []*adclickv1.Rejection
	retry       []int32
	failure     error // the first error that made events "retry", for the message
	overload    bool  // every such error was RESOURCE_EXHAUSTED
	aggRejected int
}

type forwardResult struct {
	resp *clusterv1.ForwardResponse
	err  error
}

var batchPool = sync.Pool{New: func() any { return new(batch) }}

func getBatch() *batch {
	b := batchPool.Get().(*batch)
	b.pending, b.next, b.retry = b.pending[:0], b.next[:0], nil
	b.rejected = nil // handed to the response
	b.failure, b.overload, b.aggRejected = nil, true, 0
	return b
}

func (b *batch) reset(members int) {
	for len(b.groups) < members {
		b.groups = append(b.groups, nil)
	}
	for i := range b.groups {
		b.groups[i] = b.groups[i][:0]
	}
	b.owners = b.owners[:0]
}

func putBatch(b *batch) {
	clear(b.fields) // let the request's buffer go
	clear(b.results)
	batchPool.Put(b)
}

// ingest validates the batch and forwards every valid event to the
// aggregator that owns its (ad, minute). Each event gets its own answer:
// accepted, duplicate, rejected (with a reason), or retry when its owner
// could not take it now. Only when no valid event could be processed is
// the whole call an error (UNAVAILABLE, or RESOURCE_EXHAUSTED when every
// owner was overloaded), so a client may always resend the same batch.
func (r *Router) ingest(ctx context.Context, events [][]byte) (*adclickv1.IngestResponse, error) {
	r.m.received.Add(float64(len(events)))
	if n := r.inflight.Add(int64(len(events))); n > int64(r.cfg.MaxInflight) {
		r.inflight.Add(-int64(len(events)))
		return nil, status.Errorf(codes.ResourceExhausted,
			"router is forwarding %d events (--max-inflight-events=%d): aggregators are not keeping up; retry later", n-int64(len(events)), r.cfg.MaxInflight)
	}
	defer r.inflight.Add(-int64(len(events)))
	b := getBatch()
	defer putBatch(b)

	b.fields = slices.Grow(b.fields[:0], len(events))[:len(events)]
	for i, ev := range events {
		f := &b.fields[i]
		reason := event.ParseEvent(ev, f)
		if reason == "" {
			reason = f.Validate()
		}
		if reason != "" {
			b.rejected = append(b.rejected, &adclickv1.Rejection{Index: int32(i), Reason: reason})
			continue
		}
		b.pending = append(b.pending, int32(i))
	}
	routerRejected := len(b.rejected)
	r.m.rejectedRouter.Add(float64(routerRejected))
	valid := len(b.pending)

	resp := &adclickv1.IngestResponse{}
	t := r.table.Load()
	for round := 0; len(b.pending) > 0; round++ {
		if round == maxRounds {
			b.retry = append(b.retry, b.pending...)
			b.fail(status.Error(codes.Unavailable, "aggregators still disagree about who owns these events after re-reading the ring history"))
			break
		}
		if round > 0 {
			r.m.rerouted.Add(float64(len(b.pending)))
			t = r.refreshRing(ctx, t)
		}
		r.route(ctx, t, b, events, resp)
		if err := ctx.Err(); err != nil {
			return nil, status.FromContextError(err).Err()
		}
		b.pending, b.next = b.next, b.pending[:0]
	}
	if len(b.retry) > 0 && len(b.retry) == valid {
		// Nothing could be processed: fail the call, so a client that does
		// not look at retry resends the batch all the same.
		r.m.retried.Add(float64(len(b.retry)))
		code := codes.Unavailable
		if b.overload {
			code = codes.ResourceExhausted
		}
		return nil, status.Errorf(code, "no event of the batch could be processed: %s; retry the same batch (duplicates are safe)", status.Convert(b.failure).Message())
	}
	if len(b.rejected) > routerRejected {
		slices.SortFunc(b.rejected, func(x, y *adclickv1.Rejection) int { return cmp.Compare(x.Index, y.Index) })
	}
	slices.Sort(b.retry)
	resp.Rejected = b.rejected
	resp.Retry = slices.Clone(b.retry)
	r.m.accepted.Add(float64(resp.Accepted))
	r.m.duplicate.Add(float64(resp.Duplicates))
	r.m.rejectedAgg.Add(float64(b.aggRejected))
	r.m.retried.Add(float64(len(b.retry)))
	return resp, nil
}

// fail notes why events were answered "retry".
func (b *batch) fail(err error) {
	if b.failure == nil {
		b.failure = err
	}
	if status.Code(err) != codes.ResourceExhausted {
		b.overload = false
	}
}

// route forwards b.pending by table t and folds the answers into resp and
// b: events whose owner was not reachable go to b.retry, events answered
// NOT_OWNER to b.next.
func (r *Router) route(ctx context.Context, t *table, b *batch, events [][]byte, resp *adclickv1.IngestResponse) {
	b.reset(t.ring.Len())
	for _, i := range b.pending {
		f := &b.fields[i]
		o := t.ring.OwnerAt(f.AdID, f.ClickID, clock.MinuteOfUnix(f.Seconds))
		if o < 0 {
			b.retry = append(b.retry, i)
			b.fail(status.Error(codes.Unavailable, "no aggregator owns the minute yet (no ring history in etcd: is any aggregator started?)"))
			continue
		}
		if len(b.groups[o]) == 0 {
			b.owners = append(b.owners, o)
		}
		b.groups[o] = append(b.groups[o], i)
	}
	slices.Sort(b.owners)
	r.forwardAll(ctx, t, b, events)
	for k, o := range b.owners {
		group := b.groups[o]
		res := b.results[k]
		if res.err != nil {
			m := t.members[o]
			st := status.Convert(res.err)
			b.retry = append(b.retry, group...)
			b.fail(status.Errorf(st.Code(), "aggregator %s at %s: %s: %s", m.ID, m.Addr, st.Code(), st.Message()))
			continue
		}
		for j, s := range res.resp.Status {
			switch s {
			case clusterv1.EventStatus_EVENT_STATUS_ACCEPTED:
				resp.Accepted++
			case clusterv1.EventStatus_EVENT_STATUS_DUPLICATE:
				resp.Duplicates++
			case clusterv1.EventStatus_EVENT_STATUS_NOT_OWNER:
				b.next = append(b.next, group[j])
			default:
				reason := res.resp.Reasons[int32(j)]
				if reason == "" {
					reason = fmt.Sprintf("rejected by aggregator %s (status %s)", t.members[o].ID, s)
				}
				b.rejected = append(b.rejected, &adclickv1.Rejection{Index: group[j], Reason: reason})
				b.aggRejected++
			}
		}
	}
}

// forwardAll sends one ForwardRequest per owner, in parallel, and waits for
// every answer. A request is built from the clients' bytes of its events.
func (r *Router) forwardAll(ctx context.Context, t *table, b *batch, events [][]byte) {
	for len(b.frames) < len(b.owners) {
		b.frames = append(b.frames, nil)
	}
	b.results = slices.Grow(b.results[:0], len(b.owners))[:len(b.owners)]
	for k, o := range b.owners {
		fr := b.frames[k][:0]
		for _, i := range b.groups[o] {
			fr = event.AppendEvent(fr, events[i])
		}
		b.frames[k] = fr
	}
	var wg sync.WaitGroup
	for k := 1; k < len(b.owners); k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.results[k] = r.forward(ctx, t, b.owners[k], b.frames[k], len(b.groups[b.owners[k]]))
		}()
	}
	if len(b.owners) > 0 {
		b.results[0] = r.forward(ctx, t, b.owners[0], b.frames[0], len(b.groups[b.owners[0]]))
	}
	wg.Wait()
}

// forward sends the encoded ForwardRequest fr, of n events, to aggregator o.
func (r *Router) forward(ctx context.Context, t *table, o int, fr []byte, n int) forwardResult {
	if err := t.errs[o]; err != nil {
		return forwardResult{err: err}
	}
	if r.alive != nil {
		if alive, known := r.alive.Alive("aggregator", t.members[o].ID); known && !alive {
			r.m.forwardErrors.WithLabelValues("dead_by_gossip").Inc()
			return forwardResult{err: status.Error(codes.Unavailable, "down (failure detection says so; not tried)")}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.ForwardTimeout)
	defer cancel()
	start := time.Now()
	resp := new(clusterv1.ForwardResponse)
	err := t.conns[o].Invoke(ctx, clusterv1.AggregatorService_Forward_FullMethodName, &grpcbuf.Frame{B: fr}, resp)
	r.m.forwardDuration.Observe(time.Since(start).Seconds())
	if err == nil && len(resp.GetStatus()) != n {
		err = status.Errorf(codes.Internal, "answered %d statuses for %d events", len(resp.GetStatus()), n)
	}
	if err != nil {
		r.m.forwardErrors.WithLabelValues(status.Code(err).String()).Inc()
	}
	return forwardResult{resp: resp, err: err}
}

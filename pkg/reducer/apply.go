package reducer

import (
	"context"
	"errors"
	"fmt"
	"time"

	clusterv1 "github.com/adclick/adclick/gen/adclick/cluster/v1"
	"github.com/adclick/adclick/pkg/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// maxAdIDLen bounds ad ids in partials (the public API allows 128 bytes).
const maxAdIDLen = 1024

// Apply merges consecutive partials of one aggregator incarnation. See the
// package doc for the idempotency rules. Refusals that the sender can fix by
// resending (a gap) answer FAILED_PRECONDITION with an ApplyResponse
// detail carrying applied_through; see AppliedThrough.
func (r *Reducer) Apply(_ context.Context, req *clusterv1.ApplyRequest) (*clusterv1.ApplyResponse, error) {
	start := time.Now()
	if err := validateApply(req); err != nil {
		r.m.applyRejected.WithLabelValues("invalid").Inc()
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	if r.isClosed() {
		r.m.applyRejected.WithLabelValues("closed").Inc()
		return nil, status.Error(codes.Unavailable, "reducer is shutting down; retry on another reducer or later")
	}

	id, inc := req.GetAggregatorId(), req.GetIncarnation()
	r.mu.RLock()
	meta, known := r.meta[id]
	r.mu.RUnlock()
	switch {
	case known && inc < meta.Incarnation:
		r.m.applyRejected.WithLabelValues("stale_incarnation").Inc()
		return nil, status.Errorf(codes.FailedPrecondition,
			"stale incarnation: aggregator %q incarnation %d is older than incarnation %d already applied; this process was replaced and must stop sending",
			id, inc, meta.Incarnation)
	case !known || inc > meta.Incarnation:
		meta = store.AggMeta{Incarnation: inc, HighWater: 0, Watermark: store.NoWatermark}
	}

	partials := req.GetPartials()
	skip := 0
	for skip < len(partials) && partials[skip].GetSequence() <= meta.HighWater {
		skip++
	}
	r.m.partialsSkipped.Add(float64(skip))
	partials = partials[skip:]
	if len(partials) == 0 {
		return &clusterv1.ApplyResponse{AppliedThrough: meta.HighWater}, nil
	}
	if first := partials[0].GetSequence(); first != meta.HighWater+1 {
		r.m.applyRejected.WithLabelValues("gap").Inc()
		return nil, gapError(id, inc, first, meta.HighWater)
	}

	for _, p := range partials {
		if p.GetClosesMinute() && p.GetMinute() > meta.Watermark {
			meta.Watermark = p.GetMinute()
		}
	}
	meta.HighWater = partials[len(partials)-1].GetSequence()
	expired := r.retentionFloor()
	if err := r.commit(id, meta, partials, expired); err != nil {
		r.m.applyRejected.WithLabelValues("storage").Inc()
		r.log.Error("apply: storage write failed", "aggregator", id, "err", err)
		return nil, status.Errorf(codes.Internal, "reducer could not store the partials (%v); retry, nothing was applied", err)
	}

	r.mu.Lock()
	r.advanceLocked()
	var counts, late int
	for _, p := range partials {
		m := p.GetMinute()
		if m < expired {
			r.m.expiredCounts.Add(float64(len(p.GetCounts())))
			continue // older than --retention: dropped
		}
		counts += len(p.GetCounts())
		if !p.GetClosesMinute() {
			late += len(p.GetCounts())
		}
		if m < r.floor {
			continue // only in Pebble
		}
		for _, c := range p.GetCounts() {
			r.idx.Add(c.GetFilter(), m, c.GetAdId(), c.GetCount())
		}
	}
	r.meta[id] = meta
	r.updateGauges()
	r.mu.Unlock()

	r.m.partialsApplied.Add(float64(len(partials)))
	r.m.countsApplied.Add(float64(counts))
	r.m.lateCounts.Add(float64(late))
	r.m.applyDuration.Observe(time.Since(start).Seconds())
	return &clusterv1.ApplyResponse{AppliedThrough: meta.HighWater}, nil
}

func (r *Reducer) isClosed() bool {
	r.dbMu.RLock()
	defer r.dbMu.RUnlock()
	return r.closed
}

// commit writes the partials' counts and the new meta in one synced batch;
// counts of minutes before expired (older than the retention) are dropped:
// the sequence is applied, the counts are not stored. Caller holds applyMu
// (so the store is open).
func (r *Reducer) commit(id string, meta store.AggMeta, partials []*clusterv1.Partial, expired int64) error {
	b := r.db.NewBatch()
	defer b.Close()
	for _, p := range partials {
		if p.GetMinute() < expired {
			continue
		}
		for _, c := range p.GetCounts() {
			if c.GetCount() == 0 {
				continue
			}
			if err := b.AddCount(c.GetFilter(), p.GetMinute(), c.GetAdId(), c.GetCount()); err != nil {
				return err
			}
		}
	}
	if err := b.SetAggMeta(id, meta); err != nil {
		return err
	}
	r.m.batchBytes.Observe(float64(b.Bytes()))
	return b.Commit()
}

func validateApply(req *clusterv1.ApplyRequest) error {
	if req.GetAggregatorId() == "" {
		return errors.New("aggregator_id is empty")
	}
	partials := req.GetPartials()
	for i, p := range partials {
		if p.GetSequence() == 0 {
			return fmt.Errorf("partial %d: sequence 0; sequences start at 1", i)
		}
		if i > 0 && p.GetSequence() != partials[i-1].GetSequence()+1 {
			return fmt.Errorf("partial %d: sequence %d follows %d; partials of one request must be consecutive and ascending",
				i, p.GetSequence(), partials[i-1].GetSequence())
		}
		if p.GetMinute()%60 != 0 {
			return fmt.Errorf("partial %d (sequence %d): minute %d is not on a minute boundary", i, p.GetSequence(), p.GetMinute())
		}
		for j, c := range p.GetCounts() {
			switch {
			case c.GetFilter() < 0:
				return fmt.Errorf("partial %d (sequence %d) count %d: negative filter %d", i, p.GetSequence(), j, c.GetFilter())
			case c.GetAdId() == "" || len(c.GetAdId()) > maxAdIDLen:
				return fmt.Errorf("partial %d (sequence %d) count %d: ad_id length %d; want 1..%d", i, p.GetSequence(), j, len(c.GetAdId()), maxAdIDLen)
			case c.GetCount() < 0:
				return fmt.Errorf("partial %d (sequence %d) count %d: negative count %d", i, p.GetSequence(), j, c.GetCount())
			}
		}
	}
	return nil
}

func gapError(id string, inc int64, first, highWater uint64) error {
	st := status.Newf(codes.FailedPrecondition,
		"sequence gap: aggregator %q incarnation %d sent sequence %d but applied_through is %d; resend from sequence %d",
		id, inc, first, highWater, highWater+1)
	if d, err := st.WithDetails(&clusterv1.ApplyResponse{AppliedThrough: highWater}); err == nil {
		st = d
	}
	return st.Err()
}

// AppliedThrough extracts applied_through from an Apply error that carries
// it (a sequence gap), for senders that want to resend from there.
func AppliedThrough(err error) (uint64, bool) {
	st, ok := status.FromError(err)
	if !ok {
		return 0, false
	}
	for _, d := range st.Details() {
		if ar, ok := d.(*clusterv1.ApplyResponse); ok {
			return ar.GetAppliedThrough(), true
		}
	}
	return 0, false
}

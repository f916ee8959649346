package reducer

import (
	"context"
	"errors"
	"fmt"
	"strings"
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
// detail carrying applied_through; see AppliedThrough. Over gRPC, requests
// arrive through ApplyFrame, read in place.
func (r *Reducer) Apply(ctx context.Context, req *clusterv1.ApplyRequest) (*clusterv1.ApplyResponse, error) {
	w := fromMessage(req)
	return r.apply(ctx, &w)
}

func (r *Reducer) apply(_ context.Context, req *applyReq) (*clusterv1.ApplyResponse, error) {
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

	id, inc := req.aggregator, req.incarnation
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

	partials := req.partials
	skip := 0
	for skip < len(partials) && partials[skip].seq <= meta.HighWater {
		skip++
	}
	r.m.partialsSkipped.Add(float64(skip))
	partials = partials[skip:]
	if len(partials) == 0 {
		return &clusterv1.ApplyResponse{AppliedThrough: meta.HighWater}, nil
	}
	if first := partials[0].seq; first != meta.HighWater+1 {
		r.m.applyRejected.WithLabelValues("gap").Inc()
		return nil, gapError(id, inc, first, meta.HighWater)
	}

	for _, p := range partials {
		if p.closes && p.minute > meta.Watermark {
			meta.Watermark = p.minute
		}
	}
	meta.HighWater = partials[len(partials)-1].seq
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
		m := p.minute
		if m < expired {
			r.m.expiredCounts.Add(float64(len(p.counts)))
			continue // older than --retention: dropped
		}
		counts += len(p.counts)
		if !p.closes {
			late += len(p.counts)
		}
		if m < r.floor {
			continue // only in Pebble
		}
		for _, c := range p.counts {
			r.idx.Add(c.filter, m, c.ad, c.n)
		}
	}
	r.fitLocked()
	// id may alias the request, and assigning to a string key stores the
	// new key even when it was there.
	r.meta[strings.Clone(id)] = meta
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
func (r *Reducer) commit(id string, meta store.AggMeta, partials []wirePartial, expired int64) error {
	b := r.db.NewBatch()
	defer b.Close()
	for _, p := range partials {
		if p.minute < expired {
			continue
		}
		for _, c := range p.counts {
			if c.n == 0 {
				continue
			}
			if err := b.AddCount(c.filter, p.minute, c.ad, c.n); err != nil {
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

func validateApply(req *applyReq) error {
	if req.aggregator == "" {
		return errors.New("aggregator_id is empty")
	}
	partials := req.partials
	for i := range partials {
		p := &partials[i]
		if p.seq == 0 {
			return fmt.Errorf("partial %d: sequence 0; sequences start at 1", i)
		}
		if i > 0 && p.seq != partials[i-1].seq+1 {
			return fmt.Errorf("partial %d: sequence %d follows %d; partials of one request must be consecutive and ascending",
				i, p.seq, partials[i-1].seq)
		}
		if p.minute%60 != 0 {
			return fmt.Errorf("%s: minute %d is not on a minute boundary", p.describe(i), p.minute)
		}
		for j, c := range p.counts {
			switch {
			case c.filter < 0:
				return fmt.Errorf("%s count %d: negative filter %d", p.describe(i), j, c.filter)
			case c.ad == "" || len(c.ad) > maxAdIDLen:
				return fmt.Errorf("%s count %d: ad_id length %d; want 1..%d", p.describe(i), j, len(c.ad), maxAdIDLen)
			case c.n < 0:
				return fmt.Errorf("%s count %d: negative count %d", p.describe(i), j, c.n)
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

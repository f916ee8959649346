package aggregator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	clusterv1 "github.com/adclick/adclick/gen/adclick/cluster/v1"
	"github.com/adclick/adclick/pkg/grpcbuf"
	"github.com/adclick/adclick/pkg/membership"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// minBackoff is the first retry delay towards a failing reducer.
const minBackoff = 20 * time.Millisecond

// deliver runs one sender per registered reducer, following membership
// changes, until ctx is done; it returns after every sender has stopped.
// Only one deliver runs at a time (see deliverSem).
func (a *Aggregator) deliver(ctx context.Context) {
	type running struct {
		addr   string
		cancel context.CancelFunc
		done   chan struct{}
	}
	senders := map[string]*running{}
	stop := func(id string) {
		r := senders[id]
		r.cancel()
		<-r.done
		delete(senders, id)
	}
	reconcile := func() {
		members := a.reducers.Members()
		ids := make([]string, 0, len(members))
		want := make(map[string]membership.Member, len(members))
		for _, m := range members {
			ids = append(ids, m.ID)
			want[m.ID] = m
		}
		for id, r := range senders {
			if m, ok := want[id]; !ok || m.Addr != r.addr {
				stop(id)
			}
		}
		a.ob.setMembers(ids)
		for _, m := range members {
			if _, ok := senders[m.ID]; ok {
				continue
			}
			sctx, cancel := context.WithCancel(ctx)
			r := &running{addr: m.Addr, cancel: cancel, done: make(chan struct{})}
			senders[m.ID] = r
			go func() {
				defer close(r.done)
				a.send(sctx, m)
			}()
		}
	}
	reconcile()
	for {
		select {
		case <-a.memberCh:
			reconcile()
		case <-ctx.Done():
			for id := range senders {
				stop(id)
			}
			return
		}
	}
}

// send delivers the outbox to one reducer, in order, until ctx is done. It
// never skips a partial: a failed call is retried with capped backoff.
//
// A reducer may refuse a partial for good (INVALID_ARGUMENT, say, from a
// reducer with stricter validation). Skipping it is never safe: the counts
// would be lost on that replica while its high-water mark said it had them
// all, so its answers would be short yet look exact, even complete (and the
// reducer refuses a gap anyway). So send keeps retrying it, with backoff,
// and makes the refusal loud instead: the batch is narrowed to one partial,
// so that everything before the refused one is delivered and the refused one
// is named; each refusal counts in adclick_aggregator_partials_rejected_total
// and is logged as an error (at most once a minute), and the reducer counts
// in adclick_aggregator_reducers_wedged until it accepts the partial (an
// upgraded reducer) or leaves the membership (an operator removed it).
// Senders to other reducers are separate and go on; the outbox keeps what
// the stuck reducer has not acknowledged, so once it is full ingest answers
// RESOURCE_EXHAUSTED, which is how an aggregator says a reducer is stuck
// rather than silently losing counts.
func (a *Aggregator) send(ctx context.Context, m membership.Member) {
	log := a.log.With("reducer", m.ID, "addr", m.Addr)
	conn, err := grpc.NewClient(m.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpcbuf.DialOption())
	if err != nil {
		// Only a malformed address fails here; membership must change to fix it.
		log.Error("cannot deliver partials: bad reducer address", "err", err)
		return
	}
	defer conn.Close()
	var req []byte // the encoded ApplyRequest, reused
	wake := make(chan struct{}, 1)
	a.ob.addWaker(wake)
	defer a.ob.removeWaker(wake)
	delivered := a.m.delivered.WithLabelValues(m.ID)
	errs := a.m.deliverErrors.WithLabelValues(m.ID)
	w := wedge{m: a.m, log: log, rejected: a.m.partialsRejected.WithLabelValues(m.ID)}
	defer w.clear()
	maxParts := a.cfg.DeliverBatch // 1 while narrowing down to a refused partial
	var pace pacer

	backoff := minBackoff
	wait := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for ctx.Err() == nil {
		batch, err := a.ob.batch(m.ID, maxParts, a.cfg.PartialMaxCounts)
		if err != nil {
			errs.Inc()
			log.Error("cannot deliver partials", "err", err)
			if !wait(a.cfg.DeliverBackoffMax) {
				return
			}
			continue
		}
		if len(batch) == 0 {
			select {
			case <-wake:
			case <-ctx.Done():
			}
			continue
		}
		pendingCounts, addedAt := a.ob.pending(m.ID) // this batch included
		req = appendApplyRequest(req[:0], a.cfg.NodeID, a.Incarnation(), batch)
		through, err := a.apply(ctx, conn, req)
		refused := err != nil && !through.ok && isRefusal(err)
		switch {
		case err == nil || ctx.Err() != nil:
		case refused && len(batch) > 1:
			// Find the refused partial: one at a time, at once.
			errs.Inc()
			log.Warn("reducer refused a batch of partials; resending them one by one", "from_sequence", batch[0].seq, "partials", len(batch), "err", err)
			maxParts = 1
			continue
		case refused:
			errs.Inc()
			w.refused(batch[0], backoff, err)
		default:
			errs.Inc()
			log.Warn("apply failed; retrying", "from_sequence", batch[0].seq, "partials", len(batch), "retry_in", backoff, "err", err)
		}
		progress := 0
		if through.ok {
			progress = a.ob.ack(m.ID, through.seq)
			delivered.Add(float64(progress))
		}
		if progress > 0 {
			w.clear()
			if err == nil && maxParts == 1 && len(batch) == 1 {
				maxParts = a.cfg.DeliverBatch // past the refused one: batches again
			}
			backoff = minBackoff
			now := time.Now()
			pace.rate = spreadRate(pendingCounts, now.Sub(addedAt), a.cfg.DeliverSpread, a.cfg.DeliverMaxCounts)
			if d := pace.after(countsOf(batch), now); d > 0 && !a.flushing.Load() && !a.frozen.Load() && !wait(d) {
				return
			}
			continue
		}
		// No progress: an error, or a reducer asking for a resend. Back off
		// so that a failing or confused reducer is not hammered.
		if !wait(backoff) {
			return
		}
		backoff = min(2*backoff, a.cfg.DeliverBackoffMax)
	}
}

// isRefusal tells whether a failed Apply is the reducer refusing the
// partials themselves, which no resend of the same partials fixes: invalid
// arguments, or a failed precondition that is not a sequence gap (a gap
// comes with applied_through and is resolved by resending from there).
func isRefusal(err error) bool {
	switch status.Code(err) {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange, codes.Unimplemented:
		return true
	}
	return false
}

// wedge tracks whether delivery to one reducer is stuck on a partial it
// refuses, for the sender of that reducer (not safe for concurrent use).
type wedge struct {
	m        *metrics
	log      *slog.Logger
	rejected prometheus.Counter
	stuck    bool
	logged   time.Time // when the refusal was last logged
}

// refused records that the reducer refused partial p, alone, with err.
func (w *wedge) refused(p encodedPartial, retryIn time.Duration, err error) {
	w.rejected.Inc()
	if !w.stuck {
		w.stuck = true
		w.m.reducersWedged.Inc()
	}
	if time.Since(w.logged) < wedgeLogEvery {
		return
	}
	w.logged = time.Now()
	w.log.Error("reducer refuses a partial: delivery to it is stuck on it, retrying (never skipped: skipping would lose its counts on that reducer); fix or upgrade the reducer, or remove it from the cluster",
		"sequence", p.seq, "minute", time.Unix(p.minute, 0).UTC().Format(time.RFC3339),
		"closes_minute", p.closes, "counts", p.counts, "retry_in", retryIn, "err", err)
}

// clear records that the reducer accepts partials again (or that its sender stopped).
func (w *wedge) clear() {
	if !w.stuck {
		return
	}
	w.stuck = false
	w.m.reducersWedged.Dec()
	w.log.Info("reducer accepts partials again, or delivery to it stopped")
}

// wedgeLogEvery rate-limits the error logged while a reducer refuses a partial.
const wedgeLogEvery = time.Minute

type appliedThrough struct {
	seq uint64
	ok  bool
}

// apply sends one encoded ApplyRequest and returns the reducer's
// applied_through, also when it comes with FAILED_PRECONDITION (the
// reducer is missing earlier partials; it puts an ApplyResponse in the
// status details).
func (a *Aggregator) apply(ctx context.Context, conn grpc.ClientConnInterface, req []byte) (appliedThrough, error) {
	cctx, cancel := context.WithTimeout(ctx, a.cfg.DeliverTimeout)
	defer cancel()
	resp := new(clusterv1.ApplyResponse)
	err := conn.Invoke(cctx, clusterv1.ReducerService_Apply_FullMethodName, &grpcbuf.Frame{B: req}, resp)
	if err == nil {
		return appliedThrough{seq: resp.GetAppliedThrough(), ok: true}, nil
	}
	if st, ok := status.FromError(err); ok && st.Code() == codes.FailedPrecondition {
		for _, d := range st.Details() {
			if r, ok := d.(*clusterv1.ApplyResponse); ok {
				return appliedThrough{seq: r.GetAppliedThrough(), ok: true}, err
			}
		}
	}
	return appliedThrough{}, err
}

// waitDelivered waits until the outbox is empty (every registered reducer
// acknowledged everything) or ctx ends.
func (a *Aggregator) waitDelivered(ctx context.Context) error {
	for {
		ch := a.ob.changes()
		n := a.ob.retained()
		if n == 0 {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("%d partials not yet acknowledged by every registered reducer: %w", n, ctx.Err())
		}
	}
}

var errBusy = errors.New("aggregator: Run is already running")

// sem is a one-slot semaphore that can be tried without blocking.
type sem chan struct{}

func (s sem) tryAcquire() bool {
	select {
	case s <- struct{}{}:
		return true
	default:
		return false
	}
}

func (s sem) release() { <-s }

// pacer spaces deliveries so that at most rate counts a second leave for
// one reducer, allowing a burst of pacerBurst worth; rate <= 0 is no limit.
type pacer struct {
	rate float64
	next time.Time
}

const pacerBurst = 200 * time.Millisecond

// after records that n counts were sent at now and returns how long to
// wait before the next send.
func (p *pacer) after(n int, now time.Time) time.Duration {
	if p.rate <= 0 {
		return 0
	}
	if p.next.Before(now) {
		p.next = now
	}
	p.next = p.next.Add(time.Duration(float64(n) / p.rate * float64(time.Second)))
	if d := p.next.Sub(now); d > pacerBurst {
		return d - pacerBurst
	}
	return 0
}

// deliverMinRate is the slowest pace of a spread delivery, in counts a
// second: a few late clicks' corrections are not spread over half a minute.
const deliverMinRate = 20000

// spreadRate is the pace, in counts a second, at which pending counts
// reach a reducer by the end of the spread that began when partials were
// last added (since ago): a closing minute's counts go evenly over the
// spread, and a minute closing before the last one is through spreads
// what remains of both over a new one. Never below deliverMinRate; past
// the spread (a reducer that was away) as fast as allowed; never above
// maxCounts when that is positive. 0 means no limit.
func spreadRate(pending int, since, spread time.Duration, maxCounts int) float64 {
	rate := 0.0 // no limit
	if left := spread - since; spread > 0 && left > 0 {
		rate = max(deliverMinRate, float64(pending)/left.Seconds())
	}
	if maxCounts > 0 && (rate == 0 || rate > float64(maxCounts)) {
		rate = float64(maxCounts)
	}
	return rate
}

func countsOf(batch []encodedPartial) int {
	n := 0
	for _, p := range batch {
		n += p.counts
	}
	return n
}

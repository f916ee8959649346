package aggregator

import (
	"context"
	"errors"
	"fmt"
	"io"

	clusterv1 "github.com/adclick/adclick/gen/adclick/cluster/v1"
	"github.com/adclick/adclick/pkg/clock"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Hand-over after a drain. A draining aggregator owns no minute from its
// cut-over on. Once it has closed every minute before the cut-over, it
// freezes (takes no click at all), commits what is pending, delivers its
// outbox to every reducer, and sends the click ids of its late horizon to
// its heir (HandOver); only then is the drain recorded as handed over in
// the ring history, and from that revision on late clicks of its minutes
// are routed to, and deduped by, the heir. Freezing before the copy means
// the heir's copy is complete; the heir takes late clicks of those minutes
// only once its own view of the history shows the hand-over.

// handOverChunk is how many ids one HandOver message carries.
const handOverChunk = 4096

// HandOver stores a draining aggregator's click ids, so that this
// aggregator, its heir, dedups late clicks of the drained node's minutes.
// It answers FAILED_PRECONDITION until it has itself closed every minute
// before the cut-over (a click id of an open minute is looked up in memory
// only, so an imported id must be of a closed minute).
func (a *Aggregator) HandOver(stream clusterv1.AggregatorService_HandOverServer) error {
	var n int64
	b := a.store.NewBatch()
	defer func() {
		if b != nil {
			b.Discard()
		}
	}()
	for {
		chunk, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		a.mu.Lock()
		next, horizon, closed := a.counter.Next(), a.horizon, a.closed || a.failErr != nil
		a.mu.Unlock()
		if closed {
			return status.Errorf(codes.Unavailable, "aggregator %s is stopping; retry the hand-over", a.cfg.NodeID)
		}
		if next < chunk.GetCutover() {
			return status.Errorf(codes.FailedPrecondition, "aggregator %s has not yet closed minute %s (the minute before %s's cut-over); retry in a few seconds",
				a.cfg.NodeID, clock.MinuteTime(chunk.GetCutover()-60).Format("15:04"), chunk.GetFromNode())
		}
		n += int64(len(chunk.GetClickIds()))
		if chunk.GetMinute() < horizon {
			continue // outside the late horizon: such clicks are rejected anyway
		}
		for _, id := range chunk.GetClickIds() {
			b.AddID(chunk.GetMinute(), id)
		}
		if b.IDs() >= 16*handOverChunk {
			if err := a.commitHandOver(b); err != nil {
				b = nil
				return err
			}
			b = a.store.NewBatch()
		}
	}
	err := a.commitHandOver(b)
	b = nil
	if err != nil {
		return err
	}
	a.m.handOverIDs.WithLabelValues("received").Add(float64(n))
	a.log.Info("took over click ids of a drained aggregator", "ids", n)
	return stream.SendAndClose(&clusterv1.HandOverResponse{Ids: n})
}

func (a *Aggregator) commitHandOver(b interface{ Commit() error }) error {
	if err := b.Commit(); err != nil {
		return status.Errorf(codes.Unavailable, "aggregator %s could not store handed-over click ids: %v; retry", a.cfg.NodeID, err)
	}
	return nil
}

// ErrNotClosed is returned by Freeze while minutes before the cut-over are open.
var ErrNotClosed = errors.New("aggregator: minutes before the cut-over are still open")

// Freeze prepares a hand-over: if every minute before cutover is closed,
// it stops taking clicks, commits pending corrections with their click ids,
// and syncs; Thaw undoes it. It answers ErrNotClosed while minutes before
// cutover are still open.
func (a *Aggregator) Freeze(cutover int64) error {
	if err := a.commit(a.clock.Now()); err != nil {
		return err
	}
	a.mu.Lock()
	if a.failErr != nil || a.closed {
		err := a.failErr
		a.mu.Unlock()
		if err == nil {
			err = errors.New("aggregator: closed")
		}
		return err
	}
	if next := a.counter.Next(); next < cutover {
		a.mu.Unlock()
		return fmt.Errorf("%w: next minute to close is %s, cut-over %s", ErrNotClosed,
			clock.MinuteTime(next).Format("15:04"), clock.MinuteTime(cutover).Format("15:04"))
	}
	a.handing = true
	a.mu.Unlock()
	// No ingest competes for the CPU any more, and the hand-over waits
	// for every partial to be delivered: no spreading.
	a.frozen.Store(true)
	// Corrections accepted before the freeze leave now, with their ids.
	return a.commit(a.clock.Now())
}

// Thaw lets Forward take clicks again after Freeze (the ring history now
// routes the handed-over minutes elsewhere, or the hand-over failed).
func (a *Aggregator) Thaw() {
	a.mu.Lock()
	a.handing = false
	a.mu.Unlock()
	a.frozen.Store(false)
}

// Settled tells whether everything counted for minutes due by now is
// committed and acknowledged by every registered reducer: no pending
// correction, no due minute still open, no commit in flight, nothing in
// the outbox. A reducer's
// "complete" speaks of closing partials only; a late click accepted after
// the last minute of a range closed arrives after it, and Settled is how a
// test (or an operator) knows it has.
func (a *Aggregator) Settled() bool {
	now := a.clock.Now()
	a.mu.Lock()
	// A commit in flight has taken its minutes out of the counter but not
	// yet put their partials in the outbox.
	busy := a.counter.PendingMinutes() > 0 || a.counter.Due(now) || a.commitsStarted != a.commits
	a.mu.Unlock()
	return !busy && a.ob.retained() == 0
}

// WaitDelivered waits until every registered reducer acknowledged every
// partial, or ctx ends.
func (a *Aggregator) WaitDelivered(ctx context.Context) error { return a.waitDelivered(ctx) }

// SendIDs streams the click ids of the late horizon to the heir's HandOver
// (call it while frozen). It returns how many were sent.
func (a *Aggregator) SendIDs(ctx context.Context, heir clusterv1.AggregatorServiceClient, cutover int64) (int64, error) {
	a.mu.Lock()
	horizon := a.horizon
	a.mu.Unlock()
	stream, err := heir.HandOver(ctx)
	if err != nil {
		return 0, err
	}
	var n int64
	err = a.store.EachID(horizon, handOverChunk, func(minute int64, ids []string) error {
		n += int64(len(ids))
		return stream.Send(&clusterv1.HandOverChunk{FromNode: a.cfg.NodeID, Cutover: cutover, Minute: minute, ClickIds: ids})
	})
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, fmt.Errorf("send click ids: %w", err)
	}
	if err == nil {
		// An empty store still tells the heir the cut-over, so it checks it
		// has closed the minutes before.
		err = stream.Send(&clusterv1.HandOverChunk{FromNode: a.cfg.NodeID, Cutover: cutover, Minute: horizon})
	}
	resp, cerr := stream.CloseAndRecv()
	if cerr != nil {
		return 0, cerr
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, err
	}
	a.m.handOverIDs.WithLabelValues("sent").Add(float64(n))
	if resp.GetIds() != n {
		return 0, fmt.Errorf("heir stored %d click ids of %d sent", resp.GetIds(), n)
	}
	return n, nil
}

package aggregator

import (
	"context"
	"math"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Pacing the click ids of open minutes.
//
// --max-open-ids and --max-open-id-bytes bound the ids of open minutes,
// which only a minute's close frees. Refusing every batch once a bound is
// reached turned a client faster than the node is sized for into a stall:
// at ~1.07M clicks/s on two aggregators (2 vCPUs, allowed lateness 15 s)
// each reached 40M ids 6 s before the oldest minute closed, and ingest
// fell to nothing for 10 s, every batch answered RESOURCE_EXHAUSTED, until
// the close freed 30M ids at once.
//
// At a steady rate r the ids held grow by r a second and fall by the
// oldest minute's 60 r when it closes, so they peak at r × W just before a
// close, W being a minute plus the allowed lateness: the bounds hold any
// rate up to cap/W. Pacing keeps the ids under the line
//
//	L(τ) = paceShare × cap × (1 − τ/W)
//
// where τ is the time until the oldest open minute closes (at most a
// minute): the ids a steady cap/W would hold now. Below the line a batch
// passes at once (two atomic loads). Above it, batches are admitted at
// paceShare × cap/W ids a second, the rate the line itself rises at, each
// waiting for its turn (a reservation, as a token bucket would hand them
// out) before taking the counting lock: a client faster than the node
// gets the node's sustainable rate, as a longer ack, instead of nothing,
// and the ids reach the bound only at the close, if ever. A batch whose
// turn would come later than maxPaceWait is refused with
// RESOURCE_EXHAUSTED, as at the bound itself (refuseLocked), which stays
// the hard limit.
const (
	paceShare   = 0.95
	maxPaceWait = time.Second
)

// publishOpenIDsLocked records what the ids of open minutes hold, for pace
// (read without the lock) and the dedup gauges. Caller holds a.mu.
func (a *Aggregator) publishOpenIDsLocked(n int, bytes int64) {
	a.openIDs.Store(int64(n))
	a.openIDBytes.Store(bytes)
	a.m.dedupIDs.Set(float64(n))
	a.m.dedupBytes.Set(float64(bytes))
}

// pace waits, before a batch of k clicks is counted, until the open
// minutes' ids may take it (see above), and returns how long it waited,
// or a RESOURCE_EXHAUSTED error when that would take longer than
// maxPaceWait or ctx ends first.
func (a *Aggregator) pace(ctx context.Context, k int) (time.Duration, error) {
	capN, capB := float64(a.cfg.MaxOpenIDs), float64(a.cfg.MaxOpenIDBytes)
	n, b := float64(a.openIDs.Load()), float64(a.openIDBytes.Load())
	window := time.Minute + a.cfg.AllowedLateness
	closes := time.Unix(a.nextMinute.Load()+60, 0).Add(a.cfg.AllowedLateness)
	tau := min(max(closes.Sub(a.clock.Now()), 0), time.Minute)
	line := paceShare * (1 - tau.Seconds()/window.Seconds())
	overN, overB := n >= line*capN, b >= line*capB
	if !overN && !overB {
		return 0, nil
	}
	rate := paceShare * capN / window.Seconds() // ids a second
	if b > 0 && n > 0 {
		// The byte bound in ids, at what an id costs now.
		rate = min(rate, paceShare*capB/window.Seconds()*n/b)
	}
	turn := time.Duration(math.Ceil(float64(k) / rate * float64(time.Second)))

	a.paceMu.Lock()
	now := time.Now()
	start := now
	if a.paceNext.After(now) {
		start = a.paceNext
	}
	wait := start.Sub(now)
	if wait > maxPaceWait {
		a.paceMu.Unlock()
		flag, reason := "--max-open-ids", "open_ids_pace"
		if !overN {
			flag, reason = "--max-open-id-bytes", "open_id_bytes_pace"
		}
		a.m.overload.WithLabelValues(reason).Inc()
		return 0, status.Errorf(codes.ResourceExhausted,
			"aggregator %s takes clicks faster than its open minutes' click ids can hold until they close (%s, at most %.0f clicks/s with --allowed-lateness %s): its turn would come in %s; retry later, or add aggregators",
			a.cfg.NodeID, flag, rate, a.cfg.AllowedLateness, wait.Round(time.Millisecond))
	}
	a.paceNext = start.Add(turn)
	a.paceMu.Unlock()
	if wait <= 0 {
		return 0, nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return wait, nil
	case <-ctx.Done():
		a.m.overload.WithLabelValues("open_ids_pace").Inc()
		return 0, status.Errorf(codes.ResourceExhausted,
			"aggregator %s: the request ended while its clicks waited for room among the open minutes' click ids (%v); retry later, or add aggregators",
			a.cfg.NodeID, ctx.Err())
	}
}

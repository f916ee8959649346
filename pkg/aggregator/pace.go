package aggregator

import (
	"context"
	"math"
	"time"

	"github.com/adclick/adclick/pkg/clock"

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
// At a steady rate r a minute's ids grow for its 60 s and are freed at
// its close, a minute plus the allowed lateness (W) after it began; the
// peak, just before a close, is that minute's 60 r plus the next one's
// first (W − 60 s) r = W r: the bounds hold any rate up to cap/W. Pacing
// holds the current minute (the one the clock is in) under its share of
// the bounds at its age a:
//
//	L(a) = paceShare × cap × a/W
//
// so that a full minute (a = 60 s) and the next one's first W − 60 s sum
// to paceShare × cap at most, whatever the rate was before. (A line on all
// open ids together was tried first: a burst in the lateness seconds,
// while the older minute still counts towards the total, left the newer
// one above its share after the close, and the ids then met the bound a
// few seconds before the next close.) Below the line a batch passes at
// once (three atomic loads). Above it, batches are admitted at
// paceShare × cap/W ids a second, the rate the line itself rises at, each
// waiting for its turn (a reservation, as a token bucket would hand them
// out) before taking the counting lock: a client faster than the node
// gets the node's sustainable rate, as a longer ack, instead of nothing.
// A batch whose turn would come later than maxPaceWait is refused with
// RESOURCE_EXHAUSTED, as at the bound itself (refuseLocked), which stays
// the hard limit (late clicks of older minutes are not paced).
const (
	paceShare   = 0.95
	maxPaceWait = time.Second
)

// publishPaceLocked records what the current minute's ids hold, for pace
// (read without the lock). Caller holds a.mu.
func (a *Aggregator) publishPaceLocked(now time.Time) {
	m := clock.Minute(now)
	n, b := a.seen.MinuteLen(m)
	a.paceMinute.Store(m)
	a.paceIDs.Store(int64(n))
	a.paceIDBytes.Store(b)
}

// pace waits, before a batch of k clicks is counted, until the current
// minute's ids may take it (see above), and returns how long it waited,
// or a RESOURCE_EXHAUSTED error when that would take longer than
// maxPaceWait or ctx ends first.
func (a *Aggregator) pace(ctx context.Context, k int) (time.Duration, error) {
	now := a.clock.Now()
	m := clock.Minute(now)
	if a.paceMinute.Load() != m {
		return 0, nil // nothing counted in this minute yet
	}
	capN, capB := float64(a.cfg.MaxOpenIDs), float64(a.cfg.MaxOpenIDBytes)
	n, b := float64(a.paceIDs.Load()), float64(a.paceIDBytes.Load())
	window := (time.Minute + a.cfg.AllowedLateness).Seconds()
	line := paceShare * now.Sub(clock.MinuteTime(m)).Seconds() / window
	overN, overB := n > 0 && n >= line*capN, b > 0 && b >= line*capB
	if !overN && !overB {
		return 0, nil
	}
	rate := paceShare * capN / window // ids a second
	if b > 0 && n > 0 {
		// The byte bound in ids, at what an id costs now.
		rate = min(rate, paceShare*capB/window*n/b)
	}
	turn := time.Duration(math.Ceil(float64(k) / rate * float64(time.Second)))
	flag, reason := "--max-open-ids", "open_ids_pace"
	if !overN {
		flag, reason = "--max-open-id-bytes", "open_id_bytes_pace"
	}

	a.paceMu.Lock()
	t := time.Now()
	start := t
	if a.paceNext.After(t) {
		start = a.paceNext
	}
	wait := start.Sub(t)
	if wait > maxPaceWait {
		a.paceMu.Unlock()
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
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-timer.C:
		return wait, nil
	case <-ctx.Done():
		a.m.overload.WithLabelValues(reason).Inc()
		return 0, status.Errorf(codes.ResourceExhausted,
			"aggregator %s: the request ended while its clicks waited for room among the open minutes' click ids (%s, %v); retry later, or add aggregators",
			a.cfg.NodeID, flag, ctx.Err())
	}
}

package aggregator

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	clusterv1 "github.com/adclick/adclick/gen/adclick/cluster/v1"
	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
)

// clicks returns n clicks of ad "a" at start with ids prefix-0..n-1.
func clicks(prefix string, n int) []*adclickv1.ClickEvent {
	evs := make([]*adclickv1.ClickEvent, n)
	for i := range evs {
		evs[i] = click(fmt.Sprintf("%s-%d", prefix, i), "a", start)
	}
	return evs
}

func openIDs(a *Aggregator) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.seen.Len()
}

// At start (second 30 of its minute, lateness 15 s) the current minute is
// 30 s into a window W = 75 s, so its pace line is 0.95 × 30/75 = 38 % of
// --max-open-ids, and above it batches go at 0.95 × cap / 75 s clicks a
// second.

// TestPaceRefusesATurnTooFarAhead: above the line, a batch whose turn is
// more than maxPaceWait away is refused whole with RESOURCE_EXHAUSTED
// naming the bound, and counted as an open_ids_pace overload; once the
// clock is in the next minute, that minute has a share of its own and
// batches pass at once again.
func TestPaceRefusesATurnTooFarAhead(t *testing.T) {
	env := newTestAggregator(t, start, nil, func(c *Config) { c.MaxOpenIDs = 100 })
	forward(t, env.agg, clicks("below", 40)...) // under the line (38) before it
	// Over the line now: this one goes at once, and takes the next
	// 10 / (0.95 × 100 / 75 s) = 7.9 s.
	forward(t, env.agg, clicks("first", 10)...)
	before := counterValue(t, env.agg.m.overload.WithLabelValues("open_ids_pace"))
	_, err := env.agg.Forward(context.Background(), &clusterv1.ForwardRequest{Events: clicks("refused", 10)})
	if !wantCode(err, "ResourceExhausted") || !strings.Contains(err.Error(), "--max-open-ids") || !strings.Contains(err.Error(), "its turn would come in") {
		t.Fatalf("Forward over the pace line with its turn 7.9 s away: %v, want RESOURCE_EXHAUSTED naming --max-open-ids and the turn", err)
	}
	if got := counterValue(t, env.agg.m.overload.WithLabelValues("open_ids_pace")) - before; got != 1 {
		t.Fatalf("open_ids_pace overloads: %v, want 1", got)
	}
	if got := openIDs(env.agg); got != 50 {
		t.Fatalf("open ids after the refusal: %d, want 50 (nothing of the refused batch)", got)
	}
	// In the next minute (5 s before the first one closes) nothing counts
	// against its line yet: the batch passes without its turn, 7 s away.
	env.clk.Add(35 * time.Second)
	forward(t, env.agg, clicks("near-close", 10)...)
	if got := openIDs(env.agg); got != 60 {
		t.Fatalf("open ids: %d, want 60", got)
	}
}

// TestPaceWaitsItsTurn: above the line, batches are admitted no faster
// than the pace rate: the second batch over the line is counted no sooner
// than the first one's turn after the first was admitted.
func TestPaceWaitsItsTurn(t *testing.T) {
	const capIDs = 1000
	env := newTestAggregator(t, start, nil, func(c *Config) { c.MaxOpenIDs = capIDs })
	forward(t, env.agg, clicks("below", 400)...) // the line is 380
	rate := paceShare * capIDs / (time.Minute + env.cfg.AllowedLateness).Seconds()
	turn := time.Duration(math.Ceil(8 / rate * float64(time.Second))) // ~632 ms, under maxPaceWait
	t0 := time.Now()
	forward(t, env.agg, clicks("first", 8)...)
	for _, s := range forward(t, env.agg, clicks("second", 8)...).Status {
		if s != accepted {
			t.Fatalf("paced click: %s, want accepted", s)
		}
	}
	if waited := time.Since(t0); waited < turn {
		t.Fatalf("the second batch over the pace line was counted %s after the first started, want at least its turn %s", waited, turn)
	}
	if got := openIDs(env.agg); got != 416 {
		t.Fatalf("open ids: %d, want 416", got)
	}
}

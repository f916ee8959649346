package topn

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

// cancelAfter is a context whose Err turns Canceled after it was asked
// calls times, and that counts how often it was asked.
type cancelAfter struct {
	context.Context
	calls, asked atomic.Int64
}

func (c *cancelAfter) Err() error {
	if c.asked.Add(1) > c.calls.Load() {
		return context.Canceled
	}
	return nil
}

// TestTopStopsWhenCanceled checks that a long top-N query notices its
// context inside its loops (not only before it starts), and that a query
// whose context stays live still answers exactly.
func TestTopStopsWhenCanceled(t *testing.T) {
	defer func(n int) { checkEvery = n }(checkEvery)
	checkEvery = 256
	x, tr := New(), truth{}
	rng := rand.New(rand.NewPCG(7, 8))
	// 60 minutes of 300 ads each with flat counts: the Threshold Algorithm
	// has to go deep, which is what makes a query long.
	for m := range 60 {
		for a := range 300 {
			n := int64(1 + rng.IntN(2))
			k := key{0, int64(m) * 60, fmt.Sprintf("ad%05d", a)}
			tr[k] += n
			x.Add(k.filter, k.minute, k.ad, n)
		}
	}
	for _, calls := range []int64{0, 1, 5, 20} {
		ctx := &cancelAfter{Context: context.Background()}
		ctx.calls.Store(calls)
		top, err := x.TopContext(ctx, 0, 0, 60*60, 100)
		if !errors.Is(err, context.Canceled) || top != nil {
			t.Fatalf("canceled after %d looks: top of %d, err %v; want context.Canceled", calls, len(top), err)
		}
		if got := ctx.asked.Load(); got != calls+1 {
			t.Fatalf("context asked %d times, want %d: the query went on after it was canceled", got, calls+1)
		}
	}
	live := &cancelAfter{Context: context.Background()}
	live.calls.Store(1 << 62)
	start := time.Now()
	top, err := x.TopContext(live, 0, 0, 60*60, 100)
	if err != nil || !slices.Equal(top, tr.top(0, 0, 60*60, 100)) {
		t.Fatalf("live query: %d ads, err %v; want the exact top 100", len(top), err)
	}
	if live.asked.Load() < 2 {
		t.Fatalf("a %v query looked at its context %d times; want it checked inside its loops", time.Since(start), live.asked.Load())
	}
}

package ring

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/adclick/adclick/pkg/clock"
	"github.com/adclick/adclick/pkg/etcdembed/etcdtest"
)

func startEtcd(t *testing.T) *clientv3.Client { return etcdtest.Client(t) }

func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not reached within 15s: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestUpdateSerializesConcurrentChanges: joins racing each other all land,
// each at its own later minute, and the founding happens once.
func TestUpdateSerializesConcurrentChanges(t *testing.T) {
	cli := startEtcd(t)
	ctx := context.Background()
	clk := clock.NewFake(t0)
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for i := range 6 {
		wg.Go(func() {
			id := fmt.Sprintf("agg-%d", i)
			_, _, err := Update(ctx, cli, clk, func(h *History, now time.Time) (*History, error) {
				if h == nil {
					return Founding([]string{id}, now, DefaultViewTTL), nil
				}
				next, _, err := h.Join(id, now)
				return next, err
			})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	h, rev, err := LoadHistory(ctx, cli)
	if err != nil || rev == 0 {
		t.Fatalf("load: %v", err)
	}
	if len(h.Eras) != 6 || len(h.Eras[0].Aggregators) != 1 || len(h.Latest().Aggregators) != 6 {
		t.Fatalf("history %+v", h.Eras)
	}
	// A change that would rewrite the past is refused before it is written.
	_, _, err = Update(ctx, cli, clk, func(h *History, now time.Time) (*History, error) {
		x := h.Clone()
		x.Eras[1].Aggregators = []string{"agg-x"}
		return x, nil
	})
	if err == nil {
		t.Fatal("a rewrite of an era was stored")
	}
	_, _, err = Update(ctx, cli, clk, func(*History, time.Time) (*History, error) { return nil, ErrNoChange })
	if err != nil {
		t.Fatal(err)
	}
}

// TestWatcherFreshness: the view follows changes, and stops being fresh
// once it could not be confirmed for the history's view TTL.
func TestWatcherFreshness(t *testing.T) {
	cli := startEtcd(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	clk := clock.NewFake(t0)
	w, err := Watch(ctx, cli, clk, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	if w.Fresh(t0) || w.Current().Len() != 0 {
		t.Fatal("no history yet, and yet fresh or routing")
	}
	changes := w.Subscribe()
	if _, _, err := Update(ctx, cli, clk, func(*History, time.Time) (*History, error) {
		return Founding([]string{"a", "b"}, t0, DefaultViewTTL), nil
	}); err != nil {
		t.Fatal(err)
	}
	poll(t, "the watcher applies the founding", func() bool { return w.Current().Len() == 2 })
	// The view is installed before subscribers are told, so the
	// notification may trail the poll above by a moment.
	select {
	case <-changes:
	case <-time.After(15 * time.Second):
		t.Fatal("no change notification within 15s")
	}
	if err := w.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if !w.Fresh(t0) {
		t.Fatal("a view just confirmed is not fresh")
	}
	if !w.Fresh(t0.Add(time.Hour)) {
		t.Fatal("a jump of the injected clock made the view stale: freshness is elapsed time")
	}
	if _, _, err := Update(ctx, cli, clk, func(h *History, now time.Time) (*History, error) {
		next, _, err := h.Join("c", now)
		return next, err
	}); err != nil {
		t.Fatal(err)
	}
	poll(t, "the watcher applies the join", func() bool { return w.Current().Len() == 3 })
}

// TestWatcherGoesStale: a view not confirmed for the history's TTL (etcd
// gone) is no longer fresh; a confirmation makes it fresh again.
func TestWatcherGoesStale(t *testing.T) {
	cli := startEtcd(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	clk := clock.NewFake(t0)
	if _, _, err := Update(ctx, cli, clk, func(*History, time.Time) (*History, error) {
		return Founding([]string{"a"}, t0, time.Second), nil
	}); err != nil {
		t.Fatal(err)
	}
	w, err := Watch(ctx, cli, clk, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	if !w.Fresh(t0) {
		t.Fatal("not fresh after the first read")
	}
	cancel() // no more confirmations
	poll(t, "the view goes stale after its 1s TTL", func() bool { return !w.Fresh(t0) })
	if err := w.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !w.Fresh(t0) {
		t.Fatal("not fresh after a confirmation")
	}
}

package reducer

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestRetention applies partials around the retention (48 h here) while
// the clock moves: a partial for a minute already older than the retention
// is applied (its sequence) but not stored; stored minutes that age out are
// deleted by DropExpired; every count is checked against the ground truth.
func TestRetention(t *testing.T) {
	e := newEnv(t, 60)
	cfg := DefaultConfig()
	if cfg.Retention != 400*24*time.Hour {
		t.Fatalf("--retention defaults to %s, want 400 days", cfg.Retention)
	}
	cfg.NodeID, cfg.DataDir, cfg.RetainMinutes, cfg.Retention = "reducer-1", e.dir, 60, 48*time.Hour
	r, err := Open(cfg, Deps{Clock: e.clk, Aggregators: e.members, Ring: e.ring, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })

	old, aging, recent := m0-72*3600, m0-47*3600, m0-3600
	mustApply(t, r, "agg-1", 1, 3,
		partial(1, old, true, cnt(0, "a", 5), cnt(2, "a", 1)),
		partial(2, aging, true, cnt(0, "a", 7), cnt(2, "b", 2)),
		partial(3, recent, true, cnt(0, "a", 11)))
	want := func(t *testing.T, minute int64, ad string, filter, n int64) {
		t.Helper()
		if got, _ := countOf(t, r, filter, ad, minute, minute+60); got != n {
			t.Fatalf("count of %s filter %d at minute %d = %d, want %d", ad, filter, minute, got, n)
		}
	}
	want(t, old, "a", 0, 0) // older than the retention on arrival: dropped
	want(t, old, "a", 2, 0)
	want(t, aging, "a", 0, 7)
	want(t, aging, "b", 2, 2)
	want(t, recent, "a", 0, 11)
	if got, _ := countOf(t, r, 0, "a", old-3600, m0); got != 18 {
		t.Fatalf("count over everything = %d, want 18", got)
	}

	// Two hours later the aging minute is past the retention.
	e.clk.Add(2 * time.Hour)
	n, err := r.DropExpired(context.Background())
	if err != nil || n != 2 {
		t.Fatalf("DropExpired = %d, %v; want the 2 counts of the aging minute", n, err)
	}
	want(t, aging, "a", 0, 0)
	want(t, aging, "b", 2, 0)
	want(t, recent, "a", 0, 11)
	if n, err := r.DropExpired(context.Background()); n != 0 || err != nil {
		t.Fatalf("second DropExpired = %d, %v; want 0", n, err)
	}
	// Sequences went on: a resend is a no-op, the next partial applies.
	mustApply(t, r, "agg-1", 1, 4, partial(4, recent, false, cnt(0, "a", 1)))
	want(t, recent, "a", 0, 12)
}

func TestRetentionValidate(t *testing.T) {
	cfg := DefaultConfig()
	cfg.NodeID, cfg.DataDir = "r", "d"
	for _, c := range []struct {
		retention time.Duration
		retain    int
	}{{time.Hour, 60}, {48 * time.Hour, 4000}} {
		cfg.Retention, cfg.RetainMinutes = c.retention, c.retain
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "--retention") {
			t.Errorf("--retention %s with --retain-minutes %d: %v; want an error naming --retention", c.retention, c.retain, err)
		}
	}
	cfg = DefaultConfig()
	cfg.NodeID, cfg.DataDir, cfg.RetainBytes = "r", "d", 0
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "--retain-bytes") {
		t.Errorf("--retain-bytes 0: %v; want an error naming --retain-bytes", err)
	}
}

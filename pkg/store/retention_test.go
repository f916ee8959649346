package store

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

// TestDeleteBeforeMatchesGroundTruth stores counts over many minutes and
// filters (the largest filter id included), deletes the minutes before a
// cutoff in several small batches, and checks both key spaces against the
// ground truth: nothing before the cutoff, everything after it, exactly.
func TestDeleteBeforeMatchesGroundTruth(t *testing.T) {
	defer func(n int) { deleteChunk = n }(deleteChunk)
	deleteChunk = 7
	db := openTest(t, t.TempDir())
	t.Cleanup(func() { _ = db.Close() })
	rng := rand.New(rand.NewPCG(3, 4))
	truth := map[cell]int64{}
	const base = int64(1_700_000_040)
	filters := []int64{0, 1, 7, math.MaxInt64}
	b := db.NewBatch()
	for range 2000 {
		c := cell{filter: filters[rng.IntN(len(filters))], minute: base + 60*int64(rng.IntN(40)), ad: trickyAds[rng.IntN(len(trickyAds))]}
		truth[c]++
		if err := b.AddCount(c.filter, c.minute, c.ad, 1); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	b.Close()
	cutoff := base + 60*25
	wantDeleted := 0
	for c := range truth {
		if c.minute < cutoff {
			wantDeleted++
		}
	}
	n, err := db.DeleteBefore(context.Background(), cutoff)
	if err != nil || n != wantDeleted {
		t.Fatalf("DeleteBefore = %d, %v; want %d", n, err, wantDeleted)
	}
	check := func() {
		t.Helper()
		got := map[cell]int64{}
		if err := db.ScanMinutes(-1, math.MinInt64, math.MaxInt64, func(f, m int64, ad []byte, n int64) error {
			got[cell{f, m, string(ad)}] += n
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		for c, n := range truth {
			want := n
			if c.minute < cutoff {
				want = 0
			}
			if got[c] != want {
				t.Fatalf("minute-major %v = %d, want %d", c, got[c], want)
			}
			ad, err := db.AdCount(c.filter, c.ad, c.minute, c.minute+60)
			if err != nil || ad != want {
				t.Fatalf("ad-major %v = %d, %v; want %d", c, ad, err, want)
			}
			delete(got, c)
		}
		if len(got) != 0 {
			t.Fatalf("counts not in the ground truth: %v", got)
		}
	}
	check()
	if n, err := db.DeleteBefore(context.Background(), cutoff); n != 0 || err != nil {
		t.Fatalf("second DeleteBefore = %d, %v; want 0", n, err)
	}
	// A canceled pass stops after a batch; the next one finishes the job.
	cutoff += 60 * 10
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := db.DeleteBefore(ctx, cutoff); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled DeleteBefore: %v", err)
	}
	if _, err := db.DeleteBefore(context.Background(), cutoff); err != nil {
		t.Fatal(err)
	}
	check()
}

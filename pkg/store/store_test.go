package store

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
)

func openTest(t *testing.T, dir string) *DB {
	t.Helper()
	db, err := Open(dir, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return db
}

type cell struct {
	filter, minute int64
	ad             string
}

// Ads that are prefixes of each other and contain separator-like bytes.
var trickyAds = []string{"a", "a\x00", "a\x00b", "ab", "\xff", "\xff\xff", "b", "\x00", string(make([]byte, 128))}

func TestCountsAndScansMatchGroundTruth(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	rng := rand.New(rand.NewPCG(1, 2))
	truth := map[cell]int64{}
	const base = int64(1_700_000_040)
	for batch := 0; batch < 20; batch++ {
		b := db.NewBatch()
		for i := 0; i < 50; i++ {
			c := cell{filter: int64(rng.IntN(3)), minute: base + 60*int64(rng.IntN(10)), ad: trickyAds[rng.IntN(len(trickyAds))]}
			n := int64(rng.IntN(5) + 1)
			truth[c] += n
			if err := b.AddCount(c.filter, c.minute, c.ad, n); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
		b.Close()
		if batch == 10 { // part of the data goes through a flush and reopen
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			db = openTest(t, dir)
		}
	}
	t.Cleanup(func() { _ = db.Close() })

	for f := int64(0); f < 3; f++ {
		for _, ad := range trickyAds {
			for from := base - 60; from <= base+600; from += 60 {
				for to := from; to <= base+660; to += 120 {
					var want int64
					for c, n := range truth {
						if c.filter == f && c.ad == ad && c.minute >= from && c.minute < to {
							want += n
						}
					}
					got, err := db.AdCount(f, ad, from, to)
					if err != nil || got != want {
						t.Fatalf("AdCount(%d, %q, %d, %d) = %d, %v; want %d", f, ad, from, to, got, err, want)
					}
				}
			}
		}
	}

	tests := []struct {
		name     string
		filter   int64
		from, to int64
	}{
		{"all filters all minutes", -1, base - 600, base + 6000},
		{"all filters middle", -1, base + 120, base + 300},
		{"one filter", 1, base + 60, base + 540},
		{"empty range", 0, base + 60, base + 60},
		{"filter without data", 7, base, base + 600},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := map[cell]int64{}
			for c, n := range truth {
				if (tc.filter < 0 || c.filter == tc.filter) && c.minute >= tc.from && c.minute < tc.to {
					want[c] = n
				}
			}
			got := map[cell]int64{}
			last := cell{filter: -1 << 62}
			err := db.ScanMinutes(tc.filter, tc.from, tc.to, func(f, m int64, ad []byte, n int64) error {
				c := cell{f, m, string(ad)}
				if f < last.filter || (f == last.filter && m < last.minute) {
					return fmt.Errorf("out of order: %v after %v", c, last)
				}
				last = c
				got[c] += n
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("scan returned %d cells, want %d", len(got), len(want))
			}
			for c, n := range want {
				if got[c] != n {
					t.Fatalf("cell %+v = %d, want %d", c, got[c], n)
				}
			}
		})
	}
}

func TestAggMetaPersists(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	want := map[string]AggMeta{
		"agg-1":    {Incarnation: 5, HighWater: 42, Watermark: 1_700_000_040},
		"agg-2":    {Incarnation: 1, HighWater: 0, Watermark: NoWatermark},
		"agg-\xff": {Incarnation: -3, HighWater: 1 << 63, Watermark: -60},
	}
	b := db.NewBatch()
	for id, m := range want {
		if err := b.SetAggMeta(id, AggMeta{Incarnation: 1}); err != nil {
			t.Fatal(err)
		}
		if err := b.SetAggMeta(id, m); err != nil { // the last write in a batch wins
			t.Fatal(err)
		}
	}
	if err := b.AddCount(0, 60, "x", 1); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	b.Close()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openTest(t, dir)
	t.Cleanup(func() { _ = db.Close() })
	got, err := db.AggMetas()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("got %d metas, want %d: %v", len(got), len(want), got)
	}
	for id, m := range want {
		if got[id] != m {
			t.Errorf("meta %q = %+v, want %+v", id, got[id], m)
		}
	}
}

func TestAbandonedBatchWritesNothing(t *testing.T) {
	db := openTest(t, t.TempDir())
	t.Cleanup(func() { _ = db.Close() })
	b := db.NewBatch()
	if err := b.AddCount(0, 60, "x", 3); err != nil {
		t.Fatal(err)
	}
	if b.Bytes() == 0 {
		t.Fatal("Bytes() = 0 for a non-empty batch")
	}
	b.Close()
	n, err := db.AdCount(0, "x", 0, 120)
	if err != nil || n != 0 {
		t.Fatalf("AdCount = %d, %v; want 0", n, err)
	}
	// The next batches reuse the abandoned one's working memory: none of
	// its increments may come along.
	for i := range 3 {
		b = db.NewBatch()
		if err := b.AddCount(0, 60, "y", 2); err != nil {
			t.Fatal(err)
		}
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
		b.Close()
		for ad, want := range map[string]int64{"x": 0, "y": int64(2 * (i + 1))} {
			if n, err := db.AdCount(0, ad, 0, 120); err != nil || n != want {
				t.Fatalf("after %d committed batches, AdCount(%s) = %d, %v; want %d", i+1, ad, n, err, want)
			}
		}
	}
}

// TestAdCountSparseMinutes: counts months apart, in a store that also
// holds other ads and filters; a range over years costs one seek per
// stored minute and still sums exactly.
func TestAdCountSparseMinutes(t *testing.T) {
	db := openTest(t, t.TempDir())
	t.Cleanup(func() { _ = db.Close() })
	const base = int64(1_700_000_040)
	stored := []int64{base, base + 60, base + 60*1000, base + 60*100_000, base + 60*500_000}
	b := db.NewBatch()
	for i, m := range stored {
		for _, ad := range []string{"a", "b", "c"} {
			if ad == "b" && i%2 == 1 {
				continue // b is missing from some stored minutes
			}
			if err := b.AddCount(0, m, ad, int64(i+1)); err != nil {
				t.Fatal(err)
			}
			if err := b.AddCount(7, m, ad, 100); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	b.Close()
	for _, tc := range []struct {
		ad       string
		from, to int64
		want     int64
	}{
		{"b", base - 60*1_000_000, base + 60*1_000_000, 1 + 3 + 5},
		{"a", base - 60*1_000_000, base + 60*1_000_000, 1 + 2 + 3 + 4 + 5},
		{"a", base + 60, base + 60*100_000, 2 + 3},
		{"a", base + 120, base + 60*1000, 0},
		{"b", base + 60, base + 120, 0},
		{"zz", base - 60, base + 60*1_000_000, 0},
		{"", base - 60, base + 60*1_000_000, 0},
	} {
		got, err := db.AdCount(0, tc.ad, tc.from, tc.to)
		if err != nil || got != tc.want {
			t.Errorf("AdCount(0, %q, %d, %d) = %d, %v; want %d", tc.ad, tc.from, tc.to, got, err, tc.want)
		}
	}
}

// TestLegacyAdMajorKeysAgeOut: a store written by a version that also kept
// every count ad-major answers from its minute-major keys, and retention
// deletes both copies; once none is left, passes stop looking for them.
func TestLegacyAdMajorKeysAgeOut(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, dir)
	const base = int64(1_700_000_040)
	b := db.NewBatch()
	for i := range int64(6) {
		if err := b.AddCount(0, base+60*i, "ad", 1); err != nil {
			t.Fatal(err)
		}
		// What the older version wrote besides.
		if err := b.b.Merge(adKey(nil, 0, "ad", base+60*i), countValue(nil, 1), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	b.Close()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openTest(t, dir)
	t.Cleanup(func() { _ = db.Close() })
	if !db.legacy.Load() {
		t.Fatal("legacy ad-major keys not noticed at Open")
	}
	if n, err := db.AdCount(0, "ad", base, base+360); n != 6 || err != nil {
		t.Fatalf("AdCount = %d, %v; want 6 (each count once)", n, err)
	}
	countLegacy := func() int {
		it, err := db.db.NewIter(nil)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for ok := it.First(); ok; ok = it.Next() {
			if it.Key()[0] == prefixByAd {
				n++
			}
		}
		_ = it.Close()
		return n
	}
	if n, err := db.DeleteBefore(context.Background(), base+180); n != 3 || err != nil {
		t.Fatalf("DeleteBefore = %d, %v; want 3", n, err)
	}
	if got := countLegacy(); got != 3 || !db.legacy.Load() {
		t.Fatalf("ad-major keys left %d (legacy %v), want 3 and still looking", got, db.legacy.Load())
	}
	if _, err := db.DeleteBefore(context.Background(), base+360); err != nil {
		t.Fatal(err)
	}
	if got := countLegacy(); got != 0 || db.legacy.Load() {
		t.Fatalf("ad-major keys left %d (legacy %v), want none and no more looking", got, db.legacy.Load())
	}
	if n, err := db.AdCount(0, "ad", base, base+360); n != 0 || err != nil {
		t.Fatalf("AdCount after retention = %d, %v; want 0", n, err)
	}
}

package topn

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
)

type key struct {
	filter, minute int64
	ad             string
}

// truth is the brute-force model the index is checked against.
type truth map[key]int64

func (tr truth) count(filter int64, ad string, from, to int64) int64 {
	var sum int64
	for k, n := range tr {
		if k.filter == filter && k.ad == ad && k.minute >= from && k.minute < to {
			sum += n
		}
	}
	return sum
}

func (tr truth) top(filter, from, to int64, n int) []AdCount {
	sums := map[string]int64{}
	for k, c := range tr {
		if k.filter == filter && k.minute >= from && k.minute < to {
			sums[k.ad] += c
		}
	}
	all := make([]AdCount, 0, len(sums))
	for ad, c := range sums {
		all = append(all, AdCount{ad, c})
	}
	slices.SortFunc(all, func(a, b AdCount) int {
		if c := cmp.Compare(b.Count, a.Count); c != 0 {
			return c
		}
		return cmp.Compare(a.Ad, b.Ad)
	})
	if len(all) > n {
		all = all[:n]
	}
	return all
}

func (tr truth) add(x *Index, rng *rand.Rand, adds int, filters, minutes, ads int, base int64) {
	for i := 0; i < adds; i++ {
		// Few distinct small counts: many ties.
		k := key{int64(rng.IntN(filters)), base + 60*int64(rng.IntN(minutes)), fmt.Sprintf("ad%03d", rng.IntN(ads))}
		n := int64(1 + rng.IntN(3))
		if rng.IntN(10) == 0 {
			n = int64(rng.IntN(20) + 1)
		}
		tr[k] += n
		x.Add(k.filter, k.minute, k.ad, n)
	}
}

func checkAll(t *testing.T, x *Index, tr truth, filters, minutes, ads int, base int64) {
	t.Helper()
	for f := int64(0); f < int64(filters); f++ {
		for from := base - 60; from < base+int64(minutes)*60; from += 60 {
			for to := from; to <= base+int64(minutes+1)*60; to += 60 {
				for _, n := range []int{1, 3, 10, ads + 5} {
					got, want := x.Top(f, from, to, n), tr.top(f, from, to, n)
					if !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
						t.Fatalf("Top(f=%d, [%d,%d), n=%d)\n got %v\nwant %v", f, from, to, n, got, want)
					}
				}
				ad := fmt.Sprintf("ad%03d", (from/60+to/60)%int64(ads+2))
				if got, want := x.Count(f, ad, from, to), tr.count(f, ad, from, to); got != want {
					t.Fatalf("Count(f=%d, %s, [%d,%d)) = %d, want %d", f, ad, from, to, got, want)
				}
			}
		}
	}
}

func TestTopAndCountMatchBruteForce(t *testing.T) {
	tests := []struct {
		name                  string
		seed                  uint64
		filters, minutes, ads int
		adds                  int
	}{
		{"dense ties", 1, 2, 6, 20, 600},
		{"sparse", 2, 1, 8, 300, 500},
		{"one ad", 3, 1, 4, 1, 50},
		{"many minutes", 4, 1, 30, 60, 3000},
	}
	for _, merge := range []int{256, 2} {
		for _, tc := range tests {
			t.Run(fmt.Sprintf("%s/mergeAt=%d", tc.name, merge), func(t *testing.T) {
				defer func(old int) { mergeAt = old }(mergeAt)
				mergeAt = merge
				const base = int64(1_700_000_040)
				rng := rand.New(rand.NewPCG(tc.seed, 7))
				x, tr := New(), truth{}
				tr.add(x, rng, tc.adds, tc.filters, tc.minutes, tc.ads, base)
				checkAll(t, x, tr, tc.filters, tc.minutes, tc.ads, base)
				// Changes after the sorted lists exist: a few (kept as
				// delta or merged), then many (lists rebuilt).
				for _, more := range []int{5, 40, 8, 2000} {
					tr.add(x, rng, more, tc.filters, tc.minutes, tc.ads, base)
					checkAll(t, x, tr, tc.filters, tc.minutes, tc.ads, base)
				}
			})
		}
	}
}

func TestSaturatedCounts(t *testing.T) {
	x, tr := New(), truth{}
	add := func(m int64, ad string, n int64) {
		tr[key{0, m, ad}] += n
		x.Add(0, m, ad, n)
	}
	add(0, "a", math.MaxUint32-1)
	add(0, "b", 5)
	if got := x.Top(0, 0, 60, 2); got[0] != (AdCount{"a", math.MaxUint32 - 1}) {
		t.Fatalf("Top = %v", got)
	}
	add(0, "a", 1) // crosses into the side map while a sorted list exists
	add(0, "b", math.MaxUint32)
	add(60, "b", 1<<40)
	add(60, "c", 1)
	for _, w := range [][2]int64{{0, 60}, {0, 120}, {60, 120}} {
		if got, want := x.Top(0, w[0], w[1], 5), tr.top(0, w[0], w[1], 5); !slices.Equal(got, want) {
			t.Fatalf("Top%v = %v, want %v", w, got, want)
		}
	}
	if got := x.Count(0, "b", 0, 120); got != 5+math.MaxUint32+1<<40 {
		t.Fatalf("Count(b) = %d", got)
	}
}

func TestDropBefore(t *testing.T) {
	x := New()
	for m := int64(0); m < 10*60; m += 60 {
		x.Add(0, m, "a", 1)
		x.Add(3, m, "b", 2)
	}
	if x.Minutes() != 20 || x.Entries() != 20 {
		t.Fatalf("Minutes, Entries = %d, %d; want 20, 20", x.Minutes(), x.Entries())
	}
	x.DropBefore(7 * 60)
	if x.Minutes() != 6 || x.Entries() != 6 {
		t.Fatalf("after drop: Minutes, Entries = %d, %d; want 6, 6", x.Minutes(), x.Entries())
	}
	if got := x.Count(0, "a", 0, 600); got != 3 {
		t.Fatalf("Count = %d, want 3", got)
	}
	if got := x.Top(3, 0, 600, 5); !slices.Equal(got, []AdCount{{"b", 6}}) {
		t.Fatalf("Top = %v", got)
	}
	x.DropBefore(1 << 40)
	if x.Minutes() != 0 || x.Entries() != 0 || x.Top(0, 0, 1<<41, 3) != nil {
		t.Fatal("index not empty after dropping everything")
	}
}

// Concurrent readers build, merge and rebuild the lazy sorted lists; run
// with -race.
func TestConcurrentReaders(t *testing.T) {
	x, tr := New(), truth{}
	rng := rand.New(rand.NewPCG(9, 9))
	tr.add(x, rng, 5000, 1, 10, 200, 0)
	for _, more := range []int{0, 3000, 30, 20000} { // build, merge, delta, rebuild
		tr.add(x, rng, more, 1, 10, 200, 0)
		want := tr.top(0, 0, 600, 20)
		var wg sync.WaitGroup
		errs := make(chan string, 8)
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if got := x.Top(0, 0, 600, 20); !slices.Equal(got, want) {
					errs <- fmt.Sprintf("after %d more: got %v", more, got)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Fatal(e)
		}
	}
}

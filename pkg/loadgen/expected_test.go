package loadgen

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"
	"time"
)

func TestExpectedBookkeeping(t *testing.T) {
	e := NewExpected(100)
	const m0, m1, m2 = 600, 660, 720
	e.Add(3, m0)
	e.Add(3, m0)
	e.Add(3, m1)
	e.Add(99, m2)
	clicks := []Click{
		{Ad: 5, Nanos: m1*1e9 + 5}, {Ad: 5, Nanos: m1*1e9 + 59_999_999_999}, {Ad: 5, Nanos: m2 * 1e9}, {Ad: 7, Nanos: m0 * 1e9},
	}
	e.AddClicks(clicks, func(i int) bool { return i != 3 }) // the last one rejected
	tests := []struct {
		ad       uint32
		from, to int64
		want     int64
	}{
		{3, m0, m0 + 60, 2}, {3, m0, m2 + 60, 3}, {3, m1, m2, 1}, {5, m1, m1 + 60, 2}, {5, m0, m2 + 60, 3},
		{7, m0, m2 + 60, 0}, {99, m2, m2 + 60, 1}, {99, m0, m2, 0}, {42, m0, m2 + 60, 0},
	}
	for _, tt := range tests {
		if got := e.Sum(tt.ad, tt.from, tt.to); got != tt.want {
			t.Errorf("Sum(%d, %d, %d) = %d, want %d", tt.ad, tt.from, tt.to, got, tt.want)
		}
		if tt.to-tt.from == 60 {
			if got := e.Count(tt.ad, tt.from); got != tt.want {
				t.Errorf("Count(%d, %d) = %d, want %d", tt.ad, tt.from, got, tt.want)
			}
		}
	}
	if got := e.Minutes(); fmt.Sprint(got) != "[600 660 720]" {
		t.Errorf("Minutes() = %v", got)
	}
	if got := e.Total(); got != 7 {
		t.Errorf("Total() = %d, want 7", got)
	}
	tot := e.Totals(m0, m2)
	if tot[3] != 3 || tot[5] != 2 || tot[99] != 0 {
		t.Errorf("Totals(m0, m2): ad 3 %d, ad 5 %d, ad 99 %d; want 3, 2, 0", tot[3], tot[5], tot[99])
	}
}

func TestExpectedConcurrentAdds(t *testing.T) {
	e := NewExpected(10)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cs := make([]Click, 1000)
			for i := range cs {
				cs[i] = Click{Ad: uint32(i % 10), Nanos: int64(60*(w%2)) * 1e9}
			}
			e.AddClicks(cs, func(int) bool { return true })
		}()
	}
	wg.Wait()
	if got := e.Sum(4, 0, 120); got != 800 {
		t.Errorf("Sum = %d, want 800", got)
	}
}

func TestTopNTiesByAdIDAsString(t *testing.T) {
	tests := []struct {
		name   string
		totals map[int]int64
		n      int
		want   string
	}{
		{"ties compare as strings", map[int]int64{2: 5, 10: 5, 9: 5, 100: 7}, 10, "[ad-100=7 ad-10=5 ad-2=5 ad-9=5]"},
		{"cut inside a tie", map[int]int64{2: 5, 10: 5, 9: 5, 1: 9}, 2, "[ad-1=9 ad-10=5]"},
		{"zeros never listed", map[int]int64{0: 0, 1: 1}, 5, "[ad-1=1]"},
		{"empty", map[int]int64{}, 3, "[]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			totals := make([]int64, 200)
			for ad, c := range tt.totals {
				totals[ad] = c
			}
			if got := fmtTop(TopN(totals, tt.n)); got != tt.want {
				t.Errorf("TopN = %s, want %s", got, tt.want)
			}
		})
	}
}

func fmtTop(top []AdCount) string {
	s := make([]string, len(top))
	for i, x := range top {
		s[i] = fmt.Sprintf("%s=%d", AdID(x.Ad), x.Count)
	}
	return fmt.Sprint(s)
}

// TestTopNMatchesFullSort compares TopN with a full sort on string ids.
func TestTopNMatchesFullSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 20 {
		totals := make([]int64, 3000)
		for i := range totals {
			totals[i] = int64(rng.IntN(8)) // many ties
		}
		type row struct {
			id string
			c  int64
		}
		var all []row
		for ad, c := range totals {
			if c > 0 {
				all = append(all, row{AdID(uint32(ad)), c})
			}
		}
		sort.Slice(all, func(i, j int) bool {
			if all[i].c != all[j].c {
				return all[i].c > all[j].c
			}
			return all[i].id < all[j].id
		})
		n := 1 + rng.IntN(150)
		got := TopN(totals, n)
		if len(got) != min(n, len(all)) {
			t.Fatalf("round %d: %d ads, want %d", round, len(got), min(n, len(all)))
		}
		for i, x := range got {
			if AdID(x.Ad) != all[i].id || x.Count != all[i].c {
				t.Fatalf("round %d position %d: %s=%d, want %s=%d", round, i, AdID(x.Ad), x.Count, all[i].id, all[i].c)
			}
		}
	}
}

func TestHistQuantiles(t *testing.T) {
	var h Hist
	for ms := 1; ms <= 1000; ms++ {
		h.Record(time.Duration(ms) * time.Millisecond)
	}
	s := h.Snapshot()
	for _, tt := range []struct{ q, want float64 }{{0.5, 500}, {0.99, 990}, {1, 1000}} {
		if got := s.QuantileMs(tt.q); got < tt.want*0.97 || got > tt.want*1.03 {
			t.Errorf("q%.2f = %.1f ms, want about %.0f", tt.q, got, tt.want)
		}
	}
	if got := s.Sub(s).Count(); got != 0 {
		t.Errorf("empty difference counts %d", got)
	}
}

package window

import (
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/adclick/adclick/pkg/clock"
)

const lateness = 15 * time.Second

// base is the start of a minute.
var base = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func minuteOf(t time.Time) int64 { return clock.Minute(t) }

// sum folds partials into per-minute counts and checks the closing rules:
// each minute closes at most once, in increasing order.
func sum(t *testing.T, ps []Partial, into map[int64]map[Key]int64, closed *[]int64) {
	t.Helper()
	for _, p := range ps {
		if p.Closes {
			if n := len(*closed); n > 0 && p.Minute != (*closed)[n-1]+60 {
				t.Fatalf("minute %d closed after %d: not in order", p.Minute, (*closed)[n-1])
			}
			*closed = append(*closed, p.Minute)
		}
		if into[p.Minute] == nil {
			into[p.Minute] = map[Key]int64{}
		}
		for _, c := range p.Counts {
			into[p.Minute][c.Key] += c.N
		}
	}
}

func TestClose(t *testing.T) {
	first := minuteOf(base)
	tests := []struct {
		name       string
		now        time.Time
		wantClosed []int64
	}{
		{name: "before end", now: base.Add(59 * time.Second)},
		{name: "at end, lateness not passed", now: base.Add(time.Minute + lateness - time.Nanosecond)},
		{name: "exactly end plus lateness", now: base.Add(time.Minute + lateness), wantClosed: []int64{first}},
		{name: "three minutes later, empty minutes close too", now: base.Add(3*time.Minute + lateness), wantClosed: []int64{first, first + 60, first + 120}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(first, lateness, 100)
			c.Add(first, "ad", nil)
			var closed []int64
			got := map[int64]map[Key]int64{}
			sum(t, c.Close(tt.now), got, &closed)
			if !equalInts(closed, tt.wantClosed) {
				t.Fatalf("closed %v, want %v", closed, tt.wantClosed)
			}
			if len(tt.wantClosed) > 0 && got[first][Key{Ad: "ad"}] != 1 {
				t.Fatalf("closing partial of %d has counts %v, want ad:1", first, got[first])
			}
			// Closing again at the same time closes nothing more.
			if ps := c.Close(tt.now); len(ps) != 0 {
				t.Fatalf("second Close returned %d partials", len(ps))
			}
		})
	}
}

func equalInts(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestStream drives a counter with a fake clock through on-time, late and
// future clicks and compares everything handed out with ground truth.
func TestStream(t *testing.T) {
	clk := clock.NewFake(base.Add(10 * time.Second))
	first := minuteOf(clk.Now().Add(-lateness)) // base - 1m
	c := New(first, lateness, 3)                // small partials: splitting is exercised
	truth := map[int64]map[Key]int64{}
	got := map[int64]map[Key]int64{}
	var closed []int64
	var lateSeen, lateWant int

	add := func(at time.Time, ad string, filters ...int64) {
		m := minuteOf(at)
		if truth[m] == nil {
			truth[m] = map[Key]int64{}
		}
		truth[m][Key{Ad: ad}]++
		for _, f := range filters {
			truth[m][Key{Filter: f, Ad: ad}]++
		}
		if m < c.Next() {
			lateWant++
		}
		if c.Add(m, ad, filters) {
			lateSeen++
		}
	}
	step := func() {
		sum(t, c.Close(clk.Now()), got, &closed)
		sum(t, c.Corrections(), got, &closed)
	}

	add(base.Add(-70*time.Second), "a")  // before first: late
	add(base.Add(-30*time.Second), "a")  // first minute, open
	add(base.Add(5*time.Second), "b", 7) // current minute
	add(base.Add(65*time.Second), "c")   // next minute (future within 1m)
	for _, ad := range []string{"d", "e", "f", "g"} {
		add(base.Add(20*time.Second), ad, 1, 2)
	}
	step()
	if len(closed) != 0 {
		t.Fatalf("closed %v before any minute was due", closed)
	}
	clk.Add(20 * time.Second) // base+30s: first (base-1m) is due at base+15s
	step()
	if !equalInts(closed, []int64{first}) {
		t.Fatalf("closed %v, want [%d]", closed, first)
	}
	add(base.Add(-10*time.Second), "a", 3) // first is closed now: late
	add(base.Add(50*time.Second), "b")     // still open
	clk.Add(5 * time.Minute)
	step()
	add(base.Add(10*time.Second), "z") // late after its minute closed
	step()
	clk.Add(10 * time.Minute)
	step()

	if n := c.OpenMinutes() + c.PendingMinutes(); n != 0 {
		t.Fatalf("%d minutes still hold counts", n)
	}
	for m := first; m <= minuteOf(clk.Now().Add(-time.Minute-lateness)); m += 60 {
		if i := int((m - first) / 60); i >= len(closed) || closed[i] != m {
			t.Fatalf("minute %d not closed in order; closed %v", m, closed)
		}
	}
	for m := range truth {
		if !maps.Equal(truth[m], got[m]) {
			t.Errorf("minute %d: got %v, want %v", m, got[m], truth[m])
		}
	}
	for m := range got {
		if truth[m] == nil && len(got[m]) > 0 {
			t.Errorf("minute %d: unexpected counts %v", m, got[m])
		}
	}
	if lateSeen != lateWant || lateWant != 3 {
		t.Errorf("late clicks: Add reported %d, expected %d (want 3)", lateSeen, lateWant)
	}
}

func TestSplitPartials(t *testing.T) {
	first := minuteOf(base)
	c := New(first, 0, 2)
	for _, ad := range []string{"a", "b", "c", "d", "e"} {
		c.Add(first, ad, nil)
	}
	ps := c.Close(base.Add(time.Minute))
	if len(ps) != 3 {
		t.Fatalf("got %d partials, want 3 (2+2+1 counts)", len(ps))
	}
	for i, p := range ps {
		if p.Closes != (i == len(ps)-1) {
			t.Errorf("partial %d Closes = %v", i, p.Closes)
		}
		if len(p.Counts) > 2 {
			t.Errorf("partial %d has %d counts, max 2", i, len(p.Counts))
		}
	}
}

// TestTaken checks that a taken minute is a snapshot (clicks counted after
// the take go to a correction, not into it) and that NumPartials, which an
// owner uses to number partials before building them, is exact.
func TestTaken(t *testing.T) {
	first := minuteOf(base)
	for _, tt := range []struct {
		ads, filters, max int
	}{{0, 0, 3}, {1, 0, 3}, {3, 0, 3}, {4, 0, 3}, {5, 1, 3}, {7, 2, 4}, {10, 0, 1}} {
		c := New(first, 0, tt.max)
		var filters []int64
		for f := 1; f <= tt.filters; f++ {
			filters = append(filters, int64(f))
		}
		for i := range tt.ads {
			c.Add(first, fmt.Sprintf("ad-%d", i), filters)
		}
		taken := c.TakeDue(base.Add(time.Minute))
		if len(taken) != 1 || !taken[0].Closes || taken[0].Minute != first {
			t.Fatalf("%+v: TakeDue = %+v; want minute %d, closing", tt, taken, first)
		}
		c.Add(first, "ad-0", filters) // late: must not change the taken minute
		ps := taken[0].Partials()
		if len(ps) != taken[0].NumPartials() {
			t.Errorf("%+v: NumPartials = %d, Partials gave %d", tt, taken[0].NumPartials(), len(ps))
		}
		counts := 0
		for i, p := range ps {
			counts += len(p.Counts)
			if p.Closes != (i == len(ps)-1) {
				t.Errorf("%+v: partial %d Closes = %v", tt, i, p.Closes)
			}
			for _, c := range p.Counts {
				if c.N != 1 {
					t.Errorf("%+v: %v counted %d, want 1 (the late click went into the taken minute)", tt, c.Key, c.N)
				}
			}
		}
		if want := tt.ads * (1 + tt.filters); counts != want {
			t.Errorf("%+v: %d counts taken, want %d", tt, counts, want)
		}
		corr := c.TakeCorrections()
		if len(corr) != 1 || corr[0].Closes || corr[0].NumPartials() != (1+tt.filters+tt.max-1)/tt.max {
			t.Errorf("%+v: corrections %+v", tt, corr)
		}
	}
}

func TestDrain(t *testing.T) {
	first := minuteOf(base)
	c := New(first, lateness, 100)
	c.Add(first, "a", nil)
	c.Add(first+60, "b", nil)
	c.Close(base.Add(time.Minute + lateness))
	c.Add(first, "late", nil)
	ps := c.Drain()
	if len(ps) != 2 {
		t.Fatalf("Drain gave %d partials, want 2 (correction, open minute)", len(ps))
	}
	for _, p := range ps {
		if p.Closes {
			t.Errorf("Drain closed minute %d", p.Minute)
		}
	}
	if ps[0].Minute != first || ps[1].Minute != first+60 {
		t.Errorf("Drain minutes %d, %d; want %d, %d", ps[0].Minute, ps[1].Minute, first, first+60)
	}
	// The drained minute is still open and closes later, empty.
	ps = c.Close(base.Add(2*time.Minute + lateness))
	if len(ps) != 1 || !ps[0].Closes || ps[0].Minute != first+60 || len(ps[0].Counts) != 0 {
		t.Fatalf("after Drain, Close gave %+v; want one empty closing partial of %d", ps, first+60)
	}
}

func BenchmarkAdd(b *testing.B) {
	c := New(0, lateness, 1000)
	ads := []string{"ad-1", "ad-2", "ad-3", "ad-4"}
	filters := []int64{1, 2}
	b.ReportAllocs()
	for i := range b.N {
		c.Add(60, ads[i%len(ads)], filters)
	}
}

// TestManyAds counts a minute with rows over several blocks (and a
// correction minute with few) against counts kept independently.
func TestManyAds(t *testing.T) {
	c := New(minuteOf(base), lateness, 1000)
	m := minuteOf(base)
	want := map[Key]int64{}
	ads := 3*rowsBlock + 5
	buf := make([]byte, 0, 16)
	for round := range 3 {
		for i := range ads {
			if i%(round+1) != 0 {
				continue
			}
			buf = fmt.Appendf(buf[:0], "ad-%d", i) // reused: Add must copy
			var filters []int64
			if i%7 == 0 {
				filters = []int64{int64(1 + i%3)}
			}
			c.Add(m, string(buf), filters)
			want[Key{Ad: string(buf)}]++
			for _, f := range filters {
				want[Key{Filter: f, Ad: string(buf)}]++
			}
		}
	}
	if late := c.Add(m-60, "late-ad", nil); !late {
		t.Fatal("a click of the minute before the first open one is not late")
	}
	got := map[int64]map[Key]int64{}
	var closed []int64
	sum(t, c.Close(base.Add(time.Minute+lateness)), got, &closed)
	if len(closed) != 1 || closed[0] != m {
		t.Fatalf("closed %v, want [%d]", closed, m)
	}
	if !maps.Equal(got[m], want) {
		t.Fatalf("minute counts differ: %d keys, want %d", len(got[m]), len(want))
	}
	corr := map[int64]map[Key]int64{}
	var none []int64
	sum(t, c.Corrections(), corr, &none)
	if !maps.Equal(corr[m-60], map[Key]int64{{Ad: "late-ad"}: 1}) {
		t.Fatalf("corrections %v", corr)
	}
}

// TestEachPartial checks that EachPartial hands out the partials Partials
// returns, in order, for minutes whose counts fill the last partial
// exactly, leave it part full, or are empty.
func TestEachPartial(t *testing.T) {
	for _, ads := range []int{0, 1, 10, 11, 25} {
		c := New(minuteOf(base), lateness, 5)
		for i := range ads {
			var filters []int64
			if i%2 == 0 {
				filters = []int64{7}
			}
			c.Add(minuteOf(base), fmt.Sprintf("ad-%d", i), filters)
		}
		taken := c.TakeDue(base.Add(time.Minute + lateness))
		if len(taken) != 1 {
			t.Fatalf("%d ads: took %d minutes", ads, len(taken))
		}
		want := taken[0].Partials()
		var got []Partial
		taken[0].EachPartial(func(p Partial) {
			p.Counts = append([]Count(nil), p.Counts...) // the buffer is reused
			got = append(got, p)
		})
		if len(got) != taken[0].NumPartials() || len(got) != len(want) {
			t.Fatalf("%d ads: %d partials, want %d (NumPartials %d)", ads, len(got), len(want), taken[0].NumPartials())
		}
		for i := range want {
			if got[i].Minute != want[i].Minute || got[i].Closes != want[i].Closes || !slices.Equal(got[i].Counts, want[i].Counts) {
				t.Fatalf("%d ads: partial %d = %+v, want %+v", ads, i, got[i], want[i])
			}
			if len(got[i].Counts) > 5 || got[i].Closes != (i == len(want)-1) {
				t.Fatalf("%d ads: partial %d has %d counts, closes %v", ads, i, len(got[i].Counts), got[i].Closes)
			}
		}
	}
}

// TestIndexCollisions gives every ad of a minute the same hash (and then
// one of two): the index must stay exact, ads told apart by their bytes.
func TestIndexCollisions(t *testing.T) {
	for _, hash := range []func(i int) uint64{
		func(int) uint64 { return 42 },
		func(i int) uint64 { return uint64(i%2) << 40 },
	} {
		c := New(minuteOf(base), lateness, 1<<20)
		m := minuteOf(base)
		want := map[Key]int64{}
		for round := range 3 {
			for i := range 300 {
				if i%(round+1) != 0 {
					continue
				}
				ad := fmt.Sprint("ad-", i)
				c.AddHashed(m, ad, hash(i), nil)
				want[Key{Ad: ad}]++
			}
		}
		got := map[int64]map[Key]int64{}
		var closed []int64
		sum(t, c.Close(base.Add(time.Minute+lateness)), got, &closed)
		if !maps.Equal(got[m], want) {
			t.Fatalf("colliding ads: %d keys counted, want %d", len(got[m]), len(want))
		}
	}
}

// TestAddAfterTake: a minute taken out (closed, or its corrections) must
// not keep receiving clicks through the Counter's last-minute shortcut:
// the click after the take is a correction of its own.
func TestAddAfterTake(t *testing.T) {
	m := minuteOf(base)
	c := New(m, lateness, 1000)
	c.Add(m, "ad-1", nil)
	taken := c.TakeDue(base.Add(time.Minute + lateness))
	if len(taken) != 1 {
		t.Fatalf("took %d minutes, want 1", len(taken))
	}
	if late := c.Add(m, "ad-1", nil); !late {
		t.Fatal("a click of a closed minute is not late")
	}
	got := map[int64]map[Key]int64{}
	var closed []int64
	sum(t, taken[0].Partials(), got, &closed)
	if got[m][Key{Ad: "ad-1"}] != 1 {
		t.Fatalf("closed minute counted %d, want 1", got[m][Key{Ad: "ad-1"}])
	}
	corr := c.TakeCorrections()
	c.Add(m, "ad-1", nil)
	next := c.TakeCorrections()
	if len(corr) != 1 || len(next) != 1 || corr[0].cs == next[0].cs {
		t.Fatalf("corrections taken twice share counts or are missing: %d, %d", len(corr), len(next))
	}
	for _, tk := range [][]Taken{corr, next} {
		got := map[int64]map[Key]int64{}
		var none []int64
		sum(t, tk[0].Partials(), got, &none)
		if got[m][Key{Ad: "ad-1"}] != 1 {
			t.Fatalf("correction counted %d, want 1", got[m][Key{Ad: "ad-1"}])
		}
	}
}

// TestPrefetch: the prefetches read a known ad's slot and row, read
// nothing for a minute without counts, and create no minute.
func TestPrefetch(t *testing.T) {
	m := minuteOf(base)
	c := New(m, lateness, 1000)
	if c.PrefetchIndex(m, HashAd("ad-1")) != 0 || c.PrefetchRow(m, HashAd("ad-1")) != 0 || c.OpenMinutes() != 0 {
		t.Fatal("prefetch on an empty counter read something or created a minute")
	}
	for i := range 1000 {
		c.Add(m, fmt.Sprint("ad-", i), nil)
	}
	for i := range 1000 {
		h := HashAd(fmt.Sprint("ad-", i))
		if c.PrefetchIndex(m, h) == 0 {
			t.Fatalf("ad %d: index slot read empty", i)
		}
		if c.PrefetchRow(m, h) == 0 {
			t.Fatalf("ad %d: no row read", i)
		}
	}
	if c.PrefetchIndex(m+60, HashAd("ad-1")) != 0 || c.OpenMinutes() != 1 {
		t.Fatal("prefetch of another minute read something or created it")
	}
}

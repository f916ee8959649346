package hotad

import (
	"fmt"
	"testing"
	"time"
)

var t0 = time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)

// feed observes rate clicks/s for secs seconds, hotShare of them on "hot"
// and the rest spread over 1,000 ads, and returns the last window then.
func feed(d *Detector, from time.Time, secs int, rate int, hotShare float64) (time.Time, Window) {
	step := time.Second / time.Duration(rate)
	now := from
	hotEvery := int(1 / hotShare)
	for i := 0; i < secs*rate; i++ {
		ad := fmt.Sprintf("ad-%d", i%1000)
		if hotShare > 0 && i%hotEvery == 0 {
			ad = "hot"
		}
		d.Observe(ad, mix(uint64(i)), now)
		now = now.Add(step)
	}
	return now, d.Last(now)
}

// mix is splitmix64's finalizer: a click id's hash, for tests.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// TestDetectorFindsTheHeavyHitter: an ad with half the clicks tops the
// window with about half its total, among 1,000 other ads in 64 counters.
func TestDetectorFindsTheHeavyHitter(t *testing.T) {
	var d Detector
	_, w := feed(&d, t0, 11, 2000, 0.5)
	if len(w.Top) == 0 || w.Top[0].Ad != "hot" {
		t.Fatalf("top %v", w.Top)
	}
	if share := float64(w.Top[0].Count) / float64(w.Total); share < 0.45 || share > 0.55 {
		t.Fatalf("hot share %.2f (count %d of %d), want about 0.5", share, w.Top[0].Count, w.Total)
	}
	if w.Length != DefaultWindow || w.Total < 9000 || w.Total > 11000 {
		t.Fatalf("window %s with %d clicks, want 5s with ~10000", w.Length, w.Total)
	}
	// A quiet spell: the windows after it are empty.
	w = d.Last(t0.Add(time.Minute))
	if w.Total != 0 || len(w.Top) != 0 {
		t.Fatalf("window after a quiet minute: %+v", w)
	}
}

func TestDetectorObserveDoesNotAllocate(t *testing.T) {
	var d Detector
	ads := make([]string, 500)
	for i := range ads {
		ads[i] = fmt.Sprintf("ad-%d", i)
	}
	now := t0
	for i, ad := range ads {
		d.Observe(ad, mix(uint64(i)), now)
	}
	i := 0
	allocs := testing.AllocsPerRun(10000, func() {
		d.Observe(ads[i%len(ads)], mix(uint64(i)), now)
		i++
	})
	if allocs > 0.01 {
		t.Fatalf("Observe allocates %.3f times per click", allocs)
	}
}

// TestDetectorSamplesBusyWindows: after a window of SampleFrom clicks and
// more, a window follows one click in 1<<SampleShift and scales its
// counts back up: the total stays exact, the hot ad's share is still
// known to within a few percent, and a window that is quiet again
// follows every click.
func TestDetectorSamplesBusyWindows(t *testing.T) {
	var d Detector
	rate := 2 * SampleFrom / int(DefaultWindow/time.Second) // two SampleFrom a window
	now, w := feed(&d, t0, 11, rate, 0.25)
	if d.shift != SampleShift {
		t.Fatalf("after windows of %d clicks the detector follows every click (shift %d)", w.Total, d.shift)
	}
	if want := int64(rate) * 5; w.Total < want-10 || w.Total > want+10 {
		t.Fatalf("sampled window total %d, want %d (every click counts in the total)", w.Total, want)
	}
	if len(w.Top) == 0 || w.Top[0].Ad != "hot" {
		t.Fatalf("top %v", w.Top)
	}
	if share := float64(w.Top[0].Count) / float64(w.Total); share < 0.23 || share > 0.27 {
		t.Fatalf("sampled hot share %.3f (count %d of %d), want about 0.25", share, w.Top[0].Count, w.Total)
	}
	if w.Top[0].Count%(1<<SampleShift) != 0 {
		t.Fatalf("sampled count %d is not scaled by %d", w.Top[0].Count, 1<<SampleShift)
	}
	// Quiet again: a window of 10,000 clicks is followed click by click.
	_, w = feed(&d, now, 11, 2000, 0.5)
	if d.shift != 0 {
		t.Fatalf("after a window of %d clicks the detector still samples (shift %d)", w.Total, d.shift)
	}
	if c := w.Top[0].Count; w.Top[0].Ad != "hot" || c < w.Total/2-1 || c > w.Total/2+1 {
		t.Fatalf("unsampled window: top %v of %d, want hot with every other click", w.Top[:1], w.Total)
	}
}

// TestTrackerHysteresis: hot above the share and the rate; stays hot while
// above half of them; cools after CoolWindows windows below; a split ad's
// piece counts for the whole ad.
func TestTrackerHysteresis(t *testing.T) {
	tr := NewTracker(Params{Share: 0.3, MinRate: 500})
	none := func(string) int { return 1 }
	win := func(i int, total, hot int64) Window {
		return Window{Start: t0.Add(time.Duration(i) * DefaultWindow), Length: DefaultWindow, Total: total, Top: []Count{{"hot", hot}, {"ad-1", 10}}}
	}
	steps := []struct {
		total, hot int64
		fanout     int
		want       bool
	}{
		{10000, 2000, 1, false}, // 20%: not hot
		{10000, 4000, 1, true},  // 40%, 800/s: hot
		{10000, 2000, 1, true},  // 20%: above half the share, still hot
		{10000, 1000, 1, true},  // 10%: cool 1
		{10000, 1000, 1, true},  // cool 2
		{10000, 2000, 1, true},  // back above half: the count restarts
		{10000, 1000, 1, true},  // cool 1
		{10000, 1000, 3, true},  // split in 3: 3000 of 12000 = 25%, warm
		{10000, 500, 1, true},   // cool 1
		{10000, 500, 1, true},   // cool 2
		{10000, 500, 1, false},  // cool 3: cool
		{2000, 1000, 1, false},  // 50% but 200/s: below the rate
	}
	for i, s := range steps {
		f := none
		if s.fanout > 1 {
			f = func(ad string) int {
				if ad == "hot" {
					return s.fanout
				}
				return 1
			}
		}
		tr.Update(win(i, s.total, s.hot), f)
		if got := tr.IsHot("hot"); got != s.want {
			t.Fatalf("window %d (%d of %d, fan-out %d): hot %v, want %v", i, s.hot, s.total, s.fanout, got, s.want)
		}
		if tr.IsHot("ad-1") {
			t.Fatal("ad-1 hot")
		}
	}
	// The same window fed twice counts once.
	tr.MarkHot("hot")
	w := win(100, 10000, 0)
	for range 5 {
		tr.Update(w, none)
	}
	if !tr.IsHot("hot") {
		t.Fatal("one cool window fed five times cooled the ad")
	}
}

// BenchmarkDetectorObserve: one op is one click of an ad drawn uniformly
// from 100,000 (almost every click a miss that takes over a counter), in
// a window followed click by click and in a sampled one.
func BenchmarkDetectorObserve(b *testing.B) {
	ads := make([]string, 100_000)
	for i := range ads {
		ads[i] = fmt.Sprintf("ad-%d", i)
	}
	for _, sampled := range []bool{false, true} {
		b.Run(fmt.Sprintf("sampled=%v", sampled), func(b *testing.B) {
			var d Detector
			d.Window = time.Hour // no window ends during the run
			d.Observe("warm", 0, t0)
			if sampled {
				d.shift = SampleShift
			}
			b.ResetTimer()
			for i := range b.N {
				h := mix(uint64(i))
				d.Observe(ads[h%uint64(len(ads))], h, t0)
			}
		})
	}
}

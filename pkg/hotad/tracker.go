package hotad

import (
	"slices"
	"time"
)

// DefaultCoolWindows is how many windows in a row a hot ad must stay cool
// (below half the share or half the rate) before it is cool again: 3
// windows of 5 s, so a short dip does not end a grant that took minutes to
// take effect.
const DefaultCoolWindows = 3

// Params decide when an ad is hot.
type Params struct {
	Share       float64 // of the node's intake, at least
	MinRate     float64 // clicks/s, at least
	CoolWindows int     // 0: DefaultCoolWindows
}

// Tracker turns Detector windows into the set of hot ads, with hysteresis:
// an ad becomes hot above Share of the intake and MinRate; it stays hot
// until it has been below half of either for CoolWindows windows in a
// row. Not safe for concurrent use.
type Tracker struct {
	p    Params
	hot  map[string]int // hot ad -> cool windows in a row
	last time.Time      // start of the last window fed
}

// NewTracker returns a tracker deciding by p.
func NewTracker(p Params) *Tracker {
	if p.CoolWindows <= 0 {
		p.CoolWindows = DefaultCoolWindows
	}
	return &Tracker{p: p, hot: map[string]int{}}
}

// Update feeds one window (a window already fed is ignored) and returns
// the hot ads, sorted. fanout(ad) is the number of pieces ad is split into
// now with this node holding one (1 when it is not split): the node then
// sees only its piece, so the ad's rate is its count times fanout.
func (t *Tracker) Update(w Window, fanout func(ad string) int) []string {
	if w.Start.After(t.last) && w.Length > 0 {
		t.last = w.Start
		secs := w.Length.Seconds()
		seen := map[string]bool{}
		for _, c := range w.Top {
			k := int64(max(1, fanout(c.Ad)))
			est := float64(c.Count * k)
			total := float64(w.Total + c.Count*(k-1))
			share, rate := est/total, est/secs
			seen[c.Ad] = true
			switch _, was := t.hot[c.Ad]; {
			case share >= t.p.Share && rate >= t.p.MinRate:
				t.hot[c.Ad] = 0
			case !was:
			case share < t.p.Share/2 || rate < t.p.MinRate/2:
				t.hot[c.Ad]++
			default:
				t.hot[c.Ad] = 0
			}
		}
		for ad := range t.hot {
			if !seen[ad] {
				t.hot[ad]++
			}
		}
		for ad, cool := range t.hot {
			if cool >= t.p.CoolWindows {
				delete(t.hot, ad)
			}
		}
	}
	return t.Hot()
}

// Hot returns the hot ads, sorted.
func (t *Tracker) Hot() []string {
	out := make([]string, 0, len(t.hot))
	for ad := range t.hot {
		out = append(out, ad)
	}
	slices.Sort(out)
	return out
}

// IsHot tells whether ad is hot.
func (t *Tracker) IsHot(ad string) bool {
	_, ok := t.hot[ad]
	return ok
}

// MarkHot makes ad hot now (a grant this node already holds, found after a
// restart): it cools only after CoolWindows cool windows, like any other.
func (t *Tracker) MarkHot(ad string) {
	if _, ok := t.hot[ad]; !ok {
		t.hot[ad] = 0
	}
}

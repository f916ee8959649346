package hotad

import (
	"slices"
	"strings"
	"time"
	"unsafe"
)

// Counters is the number of ads the Detector follows in a window: the
// Space-Saving guarantee is that any ad with more than 1/Counters of the
// window's clicks is among them, with its count known to within
// total/Counters; a hot ad (a share of 0.3 and more) is far above that.
const Counters = 64

// DefaultWindow is the length of one detection window: long enough for a
// steady rate at 5,000 clicks/s, short enough that an ad is seen hot
// within seconds.
const DefaultWindow = 5 * time.Second

// Sampling. Following every click cost 6.6 % of the CPU of `adclick dev`
// at full speed, all of it under the aggregator's batch lock: a tail ad's
// click misses the counters and takes over the smallest one (a map delete
// and insert, a scan of the counts). After a window of at least
// SampleFrom clicks the next window follows one click in 1<<SampleShift,
// chosen by the click's hash (independent of its ad, so every ad is
// sampled alike), and scales the counts back up. An ad that can be hot
// (5,000 clicks/s by default, 25,000 in a window) is then still seen
// about 3,000 times a window, its share known to within a few percent;
// below SampleFrom every click is followed, as before.
const (
	SampleShift = 3
	SampleFrom  = 64 << 10
)

// Count is an ad's clicks in a window, at least (Space-Saving's count less
// its possible overestimate); in a sampled window, that count of the
// sampled clicks scaled back up: an estimate.
type Count struct {
	Ad    string
	Count int64
}

// Window is one finished detection window.
type Window struct {
	Start  time.Time
	Length time.Duration
	Total  int64   // clicks observed in the window
	Top    []Count // most clicked first
}

// Detector finds the ads with the most clicks over fixed windows of time,
// in constant memory (Space-Saving, Metwally et al.: Counters counters;
// an unknown ad takes over the smallest counter and inherits its count as
// its possible error). Busy windows are sampled (SampleShift). Not safe
// for concurrent use: the aggregator feeds it under its batch lock.
// Observe does not allocate once warm. The zero value is ready, with
// DefaultWindow.
type Detector struct {
	Window time.Duration // 0: DefaultWindow

	start  int64 // unix ns of the current window's start; 0 before the first click
	total  int64 // clicks of the current window, sampled or not
	shift  uint  // the current window follows clicks whose hash's top shift bits are 0
	n      int
	ads    [Counters]string // alias names[i]
	names  [Counters][]byte // the counters' ads, copied: an observed ad may alias a request's buffer
	counts [Counters]int64
	errs   [Counters]int64
	index  map[string]int
	last   Window
	pieces int64
}

func (d *Detector) length() int64 {
	if d.Window > 0 {
		return int64(d.Window)
	}
	return int64(DefaultWindow)
}

// Observe counts one click of ad at now; h is a hash of the click (its
// id), which decides whether a sampled window follows it. ad may alias a
// buffer the caller reuses: it is copied when kept.
func (d *Detector) Observe(ad string, h uint64, now time.Time) {
	if t := now.UnixNano(); t-d.start >= d.length() {
		d.roll(t)
	}
	d.total++
	if h>>(64-d.shift) != 0 { // a shift of 0 follows every click
		return
	}
	if i, ok := d.index[ad]; ok {
		d.counts[i]++
		return
	}
	if d.index == nil {
		d.index = make(map[string]int, Counters)
	}
	i := d.n
	if d.n < Counters {
		d.n++
		d.counts[i], d.errs[i] = 0, 0
	} else {
		i = 0
		for j := 1; j < Counters; j++ {
			if d.counts[j] < d.counts[i] {
				i = j
			}
		}
		delete(d.index, d.ads[i])
		d.errs[i] = d.counts[i]
	}
	d.names[i] = append(d.names[i][:0], ad...)
	d.ads[i] = unsafe.String(unsafe.SliceData(d.names[i]), len(ad))
	d.counts[i]++
	d.index[d.ads[i]] = i
}

// Piece counts one click accepted as a piece of a split ad.
func (d *Detector) Piece() { d.pieces++ }

// TakePieces returns the piece clicks counted since the last call.
func (d *Detector) TakePieces() int64 {
	p := d.pieces
	d.pieces = 0
	return p
}

// roll finishes the current window at t: it becomes the last one (an empty
// one when a whole window passed without a click), and a new one starts.
func (d *Detector) roll(t int64) {
	l := d.length()
	if d.start != 0 {
		w := Window{Start: time.Unix(0, d.start), Length: time.Duration(l), Total: d.total, Top: d.last.Top[:0]}
		for i := range d.n {
			if c := d.counts[i] - d.errs[i]; c > 0 {
				w.Top = append(w.Top, Count{Ad: strings.Clone(d.ads[i]), Count: c << d.shift})
			}
		}
		slices.SortFunc(w.Top, func(a, b Count) int {
			if a.Count != b.Count {
				return int(b.Count - a.Count)
			}
			return compare(a.Ad, b.Ad)
		})
		if t-d.start >= 2*l { // the window after it passed without a click
			w.Start, w.Total, w.Top = time.Unix(0, t-(t-d.start)%l-l), 0, w.Top[:0]
		}
		d.last = w
		d.start = t - (t-d.start)%l
	} else {
		d.start = t
	}
	d.shift = 0
	if d.last.Total >= SampleFrom {
		d.shift = SampleShift
	}
	d.total, d.n = 0, 0
	clear(d.index)
}

// Last returns the last finished window at now (a copy), rolling the
// current one first if its time is up.
func (d *Detector) Last(now time.Time) Window {
	if t := now.UnixNano(); d.start != 0 && t-d.start >= d.length() {
		d.roll(t)
	}
	w := d.last
	w.Top = slices.Clone(w.Top)
	return w
}

func compare(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

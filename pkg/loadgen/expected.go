package loadgen

import (
	"container/heap"
	"slices"
	"strconv"
	"sync"
)

// Expected is the generator's ground truth: the exact number of distinct
// acknowledged clicks per (ad, minute). It keeps one dense []int32 per minute
// indexed by ad (8 MB per minute for 2 million ads, no hashing, no strings).
// Safe for concurrent use; AddClicks locks once per batch.
type Expected struct {
	ads int
	mu  sync.Mutex
	min map[int64][]int32 // minute -> count per ad index
}

// NewExpected returns an empty Expected for ad indexes in [0, ads).
func NewExpected(ads int) *Expected { return &Expected{ads: ads, min: map[int64][]int32{}} }

// Add counts one click of ad in minute.
func (e *Expected) Add(ad uint32, minute int64) {
	e.mu.Lock()
	e.add(ad, minute)
	e.mu.Unlock()
}

func (e *Expected) add(ad uint32, minute int64) {
	m := e.min[minute]
	if m == nil {
		m = make([]int32, e.ads)
		e.min[minute] = m
	}
	m[ad]++
}

// AddClicks counts clicks[i] for every i with take(i).
func (e *Expected) AddClicks(clicks []Click, take func(i int) bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := range clicks {
		if take(i) {
			e.add(clicks[i].Ad, clicks[i].Minute())
		}
	}
}

// Count returns the clicks of ad in minute.
func (e *Expected) Count(ad uint32, minute int64) int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	if m := e.min[minute]; m != nil {
		return int64(m[ad])
	}
	return 0
}

// Sum returns the clicks of ad in minutes [from, to).
func (e *Expected) Sum(ad uint32, from, to int64) int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	var n int64
	for minute, m := range e.min {
		if minute >= from && minute < to {
			n += int64(m[ad])
		}
	}
	return n
}

// Minutes returns the minutes with counts, ascending.
func (e *Expected) Minutes() []int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]int64, 0, len(e.min))
	for m := range e.min {
		out = append(out, m)
	}
	slices.Sort(out)
	return out
}

// Totals returns the count of every ad over minutes [from, to), indexed by ad.
func (e *Expected) Totals(from, to int64) []int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	tot := make([]int64, e.ads)
	for minute, m := range e.min {
		if minute >= from && minute < to {
			for ad, c := range m {
				tot[ad] += int64(c)
			}
		}
	}
	return tot
}

// Total returns the number of clicks counted.
func (e *Expected) Total() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	var n int64
	for _, m := range e.min {
		for _, c := range m {
			n += int64(c)
		}
	}
	return n
}

// AdCount is one ad's count in a top-N answer.
type AdCount struct {
	Ad    uint32
	Count int64
}

// adLess orders ad indexes as their ad ids compare as strings
// ("ad-10" < "ad-9"), without allocating.
func adLess(a, b uint32) bool {
	var ba, bb [10]byte
	sa := strconv.AppendUint(ba[:0], uint64(a), 10)
	sb := strconv.AppendUint(bb[:0], uint64(b), 10)
	return string(sa) < string(sb)
}

// ranksBefore tells whether x comes before y in a top-N answer: more clicks
// first, ties by ad id ascending.
func ranksBefore(x, y AdCount) bool {
	if x.Count != y.Count {
		return x.Count > y.Count
	}
	return adLess(x.Ad, y.Ad)
}

// worstFirst is a min-heap of the current top N with the lowest ranked on top.
type worstFirst []AdCount

func (h worstFirst) Len() int           { return len(h) }
func (h worstFirst) Less(i, j int) bool { return ranksBefore(h[j], h[i]) }
func (h worstFirst) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *worstFirst) Push(x any)        { *h = append(*h, x.(AdCount)) }
func (h *worstFirst) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// TopN returns the n ads with the most clicks among totals (indexed by ad;
// ads with 0 clicks are never listed), most first, ties by ad id ascending
// as strings: the order PopularAds answers in.
func TopN(totals []int64, n int) []AdCount {
	h := make(worstFirst, 0, n+1)
	for ad, c := range totals {
		if c <= 0 {
			continue
		}
		x := AdCount{Ad: uint32(ad), Count: c}
		if len(h) < n {
			heap.Push(&h, x)
		} else if ranksBefore(x, h[0]) {
			h[0] = x
			heap.Fix(&h, 0)
		}
	}
	out := []AdCount(h)
	slices.SortFunc(out, func(a, b AdCount) int {
		if ranksBefore(a, b) {
			return -1
		}
		return 1
	})
	return out
}

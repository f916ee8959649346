package loadgen

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// histBuckets covers 0 .. 2^45 µs with 32 sub-buckets per power of two
// (relative error under 3%).
const histBuckets = 64 + 40*32

// Hist is a log-linear latency histogram in microseconds, HDR-like. Safe for
// concurrent use (atomic counters).
type Hist struct {
	b [histBuckets]atomic.Uint64
}

func histIndex(us uint64) int {
	if us < 64 {
		return int(us)
	}
	e := bits.Len64(us) - 6
	i := 64 + (e-1)*32 + int(us>>e) - 32
	return min(i, histBuckets-1)
}

// histValue returns the middle of bucket i in µs.
func histValue(i int) float64 {
	if i < 64 {
		return float64(i) + 0.5
	}
	e := (i-64)/32 + 1
	m := uint64((i-64)%32 + 32)
	lo := m << e
	return float64(lo) + float64(uint64(1)<<e)/2
}

// Record adds one latency.
func (h *Hist) Record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.b[histIndex(uint64(d/time.Microsecond))].Add(1)
}

// HistSnapshot is a copy of a Hist's counters.
type HistSnapshot [histBuckets]uint64

// Snapshot copies the counters.
func (h *Hist) Snapshot() *HistSnapshot {
	var s HistSnapshot
	for i := range h.b {
		s[i] = h.b[i].Load()
	}
	return &s
}

// Sub returns s minus an earlier snapshot of the same Hist.
func (s *HistSnapshot) Sub(earlier *HistSnapshot) *HistSnapshot {
	var d HistSnapshot
	for i := range s {
		d[i] = s[i] - earlier[i]
	}
	return &d
}

// Count returns the number of recorded values.
func (s *HistSnapshot) Count() uint64 {
	var n uint64
	for _, c := range s {
		n += c
	}
	return n
}

// QuantileMs returns the q-quantile (0 < q <= 1) in milliseconds, 0 when empty.
func (s *HistSnapshot) QuantileMs(q float64) float64 {
	n := s.Count()
	if n == 0 {
		return 0
	}
	rank := uint64(q*float64(n) + 0.999999)
	rank = max(1, min(rank, n))
	var cum uint64
	for i, c := range s {
		cum += c
		if cum >= rank {
			return histValue(i) / 1000
		}
	}
	return histValue(histBuckets-1) / 1000
}

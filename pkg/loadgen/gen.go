package loadgen

import (
	"math/rand/v2"
	"strconv"
	"time"
	"unsafe"

	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Click is the compact record of one generated click. The event's strings
// are derived from it when a request is built, so resending a click (retry,
// duplicate, late) stores 32 bytes, not strings.
type Click struct {
	Seq    uint64 // per stream; with the run id and Stream it makes the click id unique
	Attrs  uint64 // random bits deciding country, ip and user
	Nanos  int64  // click_time, unix nanoseconds
	Ad     uint32 // ad index: the ad id is "ad-<Ad>"
	Stream uint16
	dup    bool // send again once acknowledged
}

// Time returns the click time.
func (c *Click) Time() time.Time { return time.Unix(0, c.Nanos).UTC() }

// Minute returns the click's minute (unix seconds of its start).
func (c *Click) Minute() int64 { return floorMinute(c.Nanos) }

func floorMinute(nanos int64) int64 {
	s := nanos / 1e9
	if nanos < 0 && nanos%1e9 != 0 {
		s--
	}
	m := s / 60 * 60
	if s < 0 && s%60 != 0 {
		m -= 60
	}
	return m
}

// AdID returns the ad id of ad index n.
func AdID(n uint32) string { return "ad-" + strconv.FormatUint(uint64(n), 10) }

// users is the size of the user population.
const users = 1_000_000

// countryTable spreads 1000 slots over countries by weight.
var countryTable = func() [1000]string {
	weights := []struct {
		c string
		w int
	}{
		{"US", 300}, {"IN", 110}, {"BR", 60}, {"DE", 60}, {"GB", 60}, {"FR", 50}, {"JP", 50}, {"ID", 40},
		{"MX", 40}, {"CA", 35}, {"IT", 30}, {"ES", 30}, {"KR", 25}, {"NG", 25}, {"TR", 25}, {"PL", 20},
		{"AU", 20}, {"NL", 20},
	}
	var t [1000]string
	i := 0
	for _, w := range weights {
		for k := 0; k < w.w; k++ {
			t[i] = w.c
			i++
		}
	}
	for ; i < len(t); i++ {
		t[i] = "SE"
	}
	return t
}()

func mix(x uint64) uint64 { // splitmix64 finalizer
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// Country returns the click's country.
func (c *Click) Country() string { return countryTable[c.Attrs%1000] }

// isIPv6 tells whether the click comes from an IPv6 address (about 8%).
func (c *Click) isIPv6() bool { return (c.Attrs>>10)%100 < 8 }

func (c *Click) appendIP(b []byte) []byte {
	x := mix(c.Attrs)
	if c.isIPv6() {
		b = append(b, "2001:db8:"...)
		b = strconv.AppendUint(b, x&0xffff, 16)
		b = append(b, ':')
		b = strconv.AppendUint(b, (x>>16)&0xffff, 16)
		b = append(b, "::"...)
		return strconv.AppendUint(b, (x>>32)&0xffff, 16)
	}
	b = strconv.AppendUint(b, 1+(x&0xff)%223, 10)
	for k := 1; k < 4; k++ {
		b = append(b, '.')
		b = strconv.AppendUint(b, (x>>(8*k))&0xff, 10)
	}
	return b
}

// IP returns the click's address as text.
func (c *Click) IP() string { return string(c.appendIP(nil)) }

func (c *Click) appendUser(b []byte) []byte {
	b = append(b, "u-"...)
	return strconv.AppendUint(b, mix(c.Attrs^0x5bd1e995)%users, 10)
}

// UserID returns the click's user.
func (c *Click) UserID() string { return string(c.appendUser(nil)) }

func (c *Click) appendClickID(b []byte, runID string) []byte {
	b = append(b, runID...)
	b = append(b, '-')
	b = strconv.AppendUint(b, uint64(c.Stream), 10)
	b = append(b, '-')
	return strconv.AppendUint(b, c.Seq, 10)
}

// ClickID returns the click's id in a run.
func (c *Click) ClickID(runID string) string { return string(c.appendClickID(nil, runID)) }

// Generator draws the clicks of one stream: ads by Zipf over [0, ads), the
// other attributes uniformly. The same (seed, stream) yields the same clicks.
// Not safe for concurrent use.
type Generator struct {
	rng    *rand.Rand
	zipf   *rand.Zipf
	dup    float64
	late   float64
	stream uint16
	seq    uint64
}

// NewGenerator returns the generator of one stream. dup and late are the
// fractions of clicks to mark for resending and for holding back.
func NewGenerator(seed uint64, stream int, ads int, s, dup, late float64) *Generator {
	r := rand.New(rand.NewPCG(seed, mix(uint64(stream)+1)))
	return &Generator{rng: r, zipf: rand.NewZipf(r, s, 1, uint64(ads-1)), dup: dup, late: late, stream: uint16(stream)}
}

// Next returns the next click at time nanos, and whether it is to be held
// back as a late click.
func (g *Generator) Next(nanos int64) (c Click, late bool) {
	g.seq++
	c = Click{Seq: g.seq, Attrs: g.rng.Uint64(), Nanos: nanos, Ad: uint32(g.zipf.Uint64()), Stream: g.stream}
	if g.dup > 0 && g.rng.Float64() < g.dup {
		c.dup = true
	}
	return c, g.late > 0 && g.rng.Float64() < g.late
}

// Uniform returns an ad index drawn uniformly from [0, n).
func (g *Generator) Uniform(n int) uint32 { return uint32(g.rng.IntN(n)) }

// ZipfAd returns an ad index drawn with the popularity distribution.
func (g *Generator) ZipfAd() uint32 { return uint32(g.zipf.Uint64()) }

// request is one IngestRequest and the clicks it carries. Its events and
// their strings live in buffers reused from one request to the next: the
// strings point into arena (one allocation per buffer growth, not per
// click), so a request must not be rebuilt while gRPC may still read it,
// that is until its response arrived. Owned by one stream at a time.
type request struct {
	msg    adclickv1.IngestRequest
	clicks []Click
	fresh  []bool // clicks[i] is sent for the first time in this request's first attempt
	events []adclickv1.ClickEvent
	times  []timestamppb.Timestamp
	ptrs   []*adclickv1.ClickEvent
	arena  []byte
	offs   []int32

	attempt int
	sentAt  time.Time
	nFresh  int // clicks never sent before this request
	nResend int // clicks already acknowledged (duplicates)
	nLate   int
}

// reset empties r for a new set of clicks.
func (r *request) reset() {
	r.clicks, r.fresh = r.clicks[:0], r.fresh[:0]
	r.attempt, r.nFresh, r.nResend, r.nLate = 0, 0, 0, 0
}

// add appends one click; fresh tells whether it was never sent before.
func (r *request) add(c Click, fresh, late bool) {
	r.clicks = append(r.clicks, c)
	r.fresh = append(r.fresh, fresh)
	switch {
	case !fresh:
		r.nResend++
	default:
		r.nFresh++
		if late {
			r.nLate++
		}
	}
}

// build materializes the events of r.clicks into r.msg.
func (r *request) build(runID string) {
	n := len(r.clicks)
	if cap(r.events) < n {
		r.events = make([]adclickv1.ClickEvent, n)
		r.times = make([]timestamppb.Timestamp, n)
		r.ptrs = make([]*adclickv1.ClickEvent, n)
	}
	r.ptrs = r.ptrs[:n]
	// Pass 1: every string into the arena (which may grow); pass 2: point
	// the events into it once it no longer moves.
	a := r.arena[:0]
	offs := r.offs[:0]
	for i := range r.clicks {
		c := &r.clicks[i]
		offs = append(offs, int32(len(a)))
		a = c.appendClickID(a, runID)
		offs = append(offs, int32(len(a)))
		a = append(a, "ad-"...)
		a = strconv.AppendUint(a, uint64(c.Ad), 10)
		offs = append(offs, int32(len(a)))
		a = c.appendUser(a)
		offs = append(offs, int32(len(a)))
		a = c.appendIP(a)
	}
	offs = append(offs, int32(len(a)))
	r.arena, r.offs = a, offs
	str := func(k int) string {
		lo, hi := offs[k], offs[k+1]
		if lo == hi {
			return ""
		}
		return unsafe.String(&a[lo], int(hi-lo))
	}
	for i := range r.clicks {
		c := &r.clicks[i]
		ev, ts := &r.events[i], &r.times[i]
		ts.Seconds, ts.Nanos = c.Nanos/1e9, int32(c.Nanos%1e9)
		ev.ClickId, ev.AdId, ev.UserId, ev.Ip = str(4*i), str(4*i+1), str(4*i+2), str(4*i+3)
		ev.Country = c.Country()
		ev.ClickTime = ts
		r.ptrs[i] = ev
	}
	r.msg.Events = r.ptrs
}

package window

import (
	"slices"
	"time"
	"unsafe"
)

// Key identifies one counter inside a minute.
type Key struct {
	Filter int64 // 0 = all clicks
	Ad     string
}

// Count is a number of clicks to add for one key.
type Count struct {
	Key
	N int64
}

// Partial is the content handed out for one minute.
type Partial struct {
	Minute int64 // unix seconds of the minute start
	// Closes marks the one partial that closes Minute; content for Minute
	// handed out after it is a correction.
	Closes bool
	Counts []Count
}

// Counter counts clicks per (minute, filter, ad) and closes minutes. It is
// not safe for concurrent use: the owner serializes calls.
type Counter struct {
	lateness time.Duration
	next     int64             // first minute not yet closed
	open     map[int64]*counts // minutes >= next with counts
	pending  map[int64]*counts // corrections for minutes < next
	maxCount int               // counts per Partial
	// last is the counts of the previous Add or prefetch (minute
	// lastMinute): batches mostly hold one minute. Reset whenever minutes
	// are taken out.
	lastMinute int64
	last       *counts
}

// New returns a counter whose first open minute is first. A minute m
// closes once now >= m + 1m + lateness. maxCounts bounds the counts of one
// Partial (a minute with more is handed out in several, only the last of
// them closing it); it keeps a delivery under message size limits.
func New(first int64, lateness time.Duration, maxCounts int) *Counter {
	if maxCounts < 1 {
		maxCounts = 1
	}
	return &Counter{
		lateness: lateness,
		next:     first,
		open:     make(map[int64]*counts),
		pending:  make(map[int64]*counts),
		maxCount: maxCounts,
	}
}

// Next is the first minute not yet closed.
func (c *Counter) Next() int64 { return c.next }

// OpenMinutes is the number of minutes not yet closed that hold counts.
func (c *Counter) OpenMinutes() int { return len(c.open) }

// PendingMinutes is the number of closed minutes with corrections not yet handed out.
func (c *Counter) PendingMinutes() int { return len(c.pending) }

// Add counts one click of ad in minute for filter 0 and for each of
// filters, and reports whether the click is late (its minute is closed, so
// it is counted as a correction). It does not allocate once the keys exist.
// ad may alias a buffer the caller reuses: a minute copies it when it
// first sees it.
func (c *Counter) Add(minute int64, ad string, filters []int64) (late bool) {
	return c.AddHashed(minute, ad, HashAd(ad), filters)
}

// AddHashed is Add with the ad's hash (HashAd) already computed.
func (c *Counter) AddHashed(minute int64, ad string, h uint64, filters []int64) (late bool) {
	late = minute < c.next
	cs := c.last
	if cs == nil || minute != c.lastMinute {
		set := c.open
		if late {
			set = c.pending
		}
		cs = set[minute]
		if cs == nil {
			cs = &counts{}
			set[minute] = cs
		}
		c.last, c.lastMinute = cs, minute
	}
	cs.add(ad, h, filters)
	return late
}

// PrefetchIndex and PrefetchRow read what an AddHashed of hash h under
// minute will read, so that the add finds it in the CPU cache: the index
// slot where its lookup starts, then (with that slot cached) the row it
// leads to and the ad's first byte. Called for a whole batch, one pass of
// PrefetchIndex then one of PrefetchRow, before any of its adds, the cache
// misses of different clicks overlap instead of following one another.
// They return what they read, for the caller to sum somewhere that
// outlives the call so that the reads stay; they change nothing and are
// exact to skip.
func (c *Counter) PrefetchIndex(minute int64, h uint64) uint64 {
	if cs := c.counts(minute); cs != nil {
		return cs.prefetchIndex(h)
	}
	return 0
}

// PrefetchRow: see PrefetchIndex.
func (c *Counter) PrefetchRow(minute int64, h uint64) uint64 {
	if cs := c.counts(minute); cs != nil {
		return cs.prefetchRow(h)
	}
	return 0
}

// counts returns minute's counts if it has any, without creating them.
func (c *Counter) counts(minute int64) *counts {
	if c.last != nil && minute == c.lastMinute {
		return c.last
	}
	if minute < c.next {
		return c.pending[minute]
	}
	return c.open[minute]
}

// Close closes, in order, every minute m that is due at now (now >= m + 1m +
// lateness) and returns their partials: for each closed minute, zero or more
// non-closing partials followed by exactly one closing partial.
func (c *Counter) Close(now time.Time) []Partial { return partialsOf(c.TakeDue(now)) }

// TakeDue closes, in order, every minute that is due at now, like Close, and
// returns their counts as they are, without building partials: taking a
// minute is a map operation, so an owner that serializes calls with a lock
// takes minutes under it and builds the partials (a closed minute's
// hundreds of thousands of counts at full speed) after releasing it.
func (c *Counter) TakeDue(now time.Time) []Taken {
	var out []Taken
	for c.due(c.next, now) {
		m := c.next
		out = append(out, Taken{Minute: m, Closes: true, cs: c.open[m], max: c.maxCount})
		delete(c.open, m)
		c.next += 60
		c.last = nil
	}
	return out
}

// Due tells whether a minute is due to close at now and still open.
func (c *Counter) Due(now time.Time) bool { return c.due(c.next, now) }

// due reports whether minute m may close at now.
func (c *Counter) due(m int64, now time.Time) bool {
	return !now.Before(time.Unix(m+60, 0).Add(c.lateness))
}

// Corrections hands out the pending corrections, in minute order, and
// forgets them.
func (c *Counter) Corrections() []Partial { return partialsOf(c.TakeCorrections()) }

// TakeCorrections takes the pending corrections, in minute order, like
// Corrections, without building partials (see TakeDue).
func (c *Counter) TakeCorrections() []Taken { return c.takeAll(c.pending) }

// Drain hands out everything counted and not yet handed out, corrections
// and open minutes alike, as non-closing partials, and forgets it. Minutes
// stay open: a drained counter used again keeps counting into them.
// It is for shutdown, where content must reach reducers but minutes must
// not be claimed closed early.
func (c *Counter) Drain() []Partial {
	return partialsOf(append(c.takeAll(c.pending), c.takeAll(c.open)...))
}

func (c *Counter) takeAll(set map[int64]*counts) []Taken {
	if len(set) == 0 {
		return nil
	}
	c.last = nil
	minutes := make([]int64, 0, len(set))
	for m := range set {
		minutes = append(minutes, m)
	}
	slices.Sort(minutes)
	out := make([]Taken, 0, len(minutes))
	for _, m := range minutes {
		out = append(out, Taken{Minute: m, cs: set[m], max: c.maxCount})
		delete(set, m)
	}
	return out
}

// Taken is one minute's counts taken out of a Counter: the Counter no
// longer refers to them, so they may be read (Partials) by another
// goroutine than the Counter's owner, without its lock.
type Taken struct {
	Minute int64
	Closes bool // the minute closes with these counts (else a correction or a drain)
	cs     *counts
	max    int
}

// NumPartials is how many partials Partials returns: ceil(counts / max),
// and one for an empty minute that closes.
func (t Taken) NumPartials() int {
	n := 0
	if t.cs != nil {
		n = (t.cs.n + t.max - 1) / t.max
	}
	if n == 0 && t.Closes {
		n = 1
	}
	return n
}

// Partials builds the minute's partials, of at most the Counter's
// maxCounts counts each; with Closes, the last one closes the minute.
func (t Taken) Partials() []Partial { return appendPartials(nil, t.Minute, t.cs, t.Closes, t.max) }

func partialsOf(ts []Taken) []Partial {
	var out []Partial
	for _, t := range ts {
		out = append(out, t.Partials()...)
	}
	return out
}

// counts holds one minute's counts: one row per ad (a single index lookup
// per click, adindex.go), with the counts of matching filters inside the row.
type counts struct {
	shards [idxShards]idxShard // the index: ad -> row
	blocks [][]row             // the rows, rowsBlock to a block (see addRow)
	n      int                 // number of (filter, ad) counts
	names  []byte              // the current block of copied ads (see intern)
}

// rowsBlock is the number of rows in a block. A minute's rows live in
// blocks so that a minute with hundreds of thousands of ads never copies
// them into a slice twice the size, under its owner's lock: with one slice,
// runtime traces of the aggregator at 50,000 clicks/s showed a forwarding
// goroutine running 13-37 ms in one batch's counting, a few times a minute,
// with every batch behind it waiting, and adding 600,000 ads to a fresh
// counter took 130-200 ms in its slowest Add on a busy machine (the copy
// cannot be preempted, and a new slice's pages fault in at ~12 µs per
// 4 KiB on the VMs we measure on); with blocks, 8-23 ms on the same busy
// machine and 1.3-1.4 ms on an idle one.
const (
	rowsBlockBits = 12
	rowsBlock     = 1 << rowsBlockBits
)

// addRow appends a row for ad (already copied) and returns its index. The
// first block grows as a slice does, up to rowsBlock rows: a quiet minute
// (a late click's) holds a few rows, not a block.
func (cs *counts) addRow(ad string) int32 {
	last := len(cs.blocks) - 1
	if last < 0 || len(cs.blocks[last]) == rowsBlock {
		size := rowsBlock
		if last < 0 {
			size = 8
		}
		cs.blocks = append(cs.blocks, make([]row, 0, size))
		last++
	}
	cs.blocks[last] = append(cs.blocks[last], row{ad: ad})
	return int32(last<<rowsBlockBits + len(cs.blocks[last]) - 1)
}

func (cs *counts) row(i int32) *row { return &cs.blocks[i>>rowsBlockBits][i&(rowsBlock-1)] }

// namesBlock is the size of the blocks a minute's ads are copied into: one
// allocation per thousands of ads, not one per ad.
const namesBlock = 64 << 10

// intern copies ad into the minute's blocks: the caller's string may alias
// a request's buffer. A block is never written again where a string points
// into it, so the strings stay valid as long as anything refers to them.
func (cs *counts) intern(ad string) string {
	if ad == "" {
		return ""
	}
	if len(ad) > cap(cs.names)-len(cs.names) {
		cs.names = make([]byte, 0, max(namesBlock, len(ad)))
	}
	start := len(cs.names)
	cs.names = append(cs.names, ad...)
	return unsafe.String(&cs.names[start], len(ad))
}

type row struct {
	ad      string
	all     int64 // filter 0
	filters []filterCount
}

type filterCount struct {
	filter int64
	n      int64
}

func (cs *counts) add(ad string, h uint64, filters []int64) {
	i, s, at, ok := cs.find(ad, h)
	if !ok {
		ad = cs.intern(ad)
		i = cs.addRow(ad)
		s.insert(at, h, i)
		cs.n++
	}
	r := cs.row(i)
	r.all++
next:
	for _, f := range filters {
		for j := range r.filters {
			if r.filters[j].filter == f {
				r.filters[j].n++
				continue next
			}
		}
		r.filters = append(r.filters, filterCount{filter: f, n: 1})
		cs.n++
	}
}

// appendPartials appends the counts of minute m as partials of at most max
// counts each. With closes, the last one closes m, and an empty minute still
// yields one (empty) closing partial; without, an empty minute yields none.
func appendPartials(out []Partial, m int64, cs *counts, closes bool, max int) []Partial {
	eachPartial(m, cs, closes, max, func(p Partial) {
		p.Counts = slices.Clone(p.Counts)
		out = append(out, p)
	})
	return out
}

// EachPartial calls fn with the minute's partials in order, the ones
// Partials returns, each built in one buffer of at most the Counter's
// maxCounts counts that the next call reuses: fn must not keep p.Counts.
// A closed minute's counts (hundreds of thousands at full speed) are then
// never in one slice, whose tens of MB the close would fault in.
func (t Taken) EachPartial(fn func(p Partial)) { eachPartial(t.Minute, t.cs, t.Closes, t.max, fn) }

func eachPartial(m int64, cs *counts, closes bool, max int, fn func(Partial)) {
	if cs == nil || cs.n == 0 {
		if closes {
			fn(Partial{Minute: m, Closes: true})
		}
		return
	}
	buf := make([]Count, 0, min(max, cs.n))
	left := cs.n
	add := func(c Count) {
		buf = append(buf, c)
		if len(buf) == max {
			left -= len(buf)
			fn(Partial{Minute: m, Counts: buf, Closes: closes && left == 0})
			buf = buf[:0]
		}
	}
	for _, b := range cs.blocks {
		for i := range b {
			r := &b[i]
			add(Count{Key: Key{Ad: r.ad}, N: r.all})
			for _, f := range r.filters {
				add(Count{Key: Key{Filter: f.filter, Ad: r.ad}, N: f.n})
			}
		}
	}
	if len(buf) > 0 {
		fn(Partial{Minute: m, Counts: buf, Closes: closes})
	}
}

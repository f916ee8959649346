package topn

import (
	"cmp"
	"container/heap"
	"context"
	"math"
	"slices"
	"strings"
	"sync"
)

// AdCount is one line of a top-N answer.
type AdCount struct {
	Ad    string
	Count int64
}

// Index holds per (filter, minute) ad counts.
//
// Concurrency: Add and DropBefore need exclusive access (the caller's write
// lock); Count, Top, Minutes and Entries may run concurrently with each
// other (they synchronize their lazy list builds internally) but not with
// Add or DropBefore (the caller's read lock).
type Index struct {
	names   names                       // ad <-> dense id, for the buckets' keys
	filters map[int64]map[int64]*bucket // filter -> minute -> bucket
	entries int
}

// New returns an empty index.
func New() *Index {
	return &Index{names: newNames(), filters: make(map[int64]map[int64]*bucket)}
}

// saturated marks a count that lives in bucket.big.
const saturated = math.MaxUint32

// bucket is the counts of one (filter, minute).
type bucket struct {
	counts map[uint32]uint32
	big    map[uint32]int64 // counts >= saturated

	rankMu sync.Mutex  // guards ranked, delta and stale among concurrent readers
	ranked []rankEntry // sorted by cnt, descending; never modified once published; nil: not built
	delta  []uint32    // ads changed since ranked was last refreshed (may repeat)
	stale  int         // entries of ranked superseded by a later entry of the same ad (upper bound)
}

type rankEntry struct {
	id  uint32
	cnt uint32 // count at build time, saturated if it did not fit
}

func (b *bucket) get(id uint32) int64 {
	c := b.counts[id]
	if c == saturated {
		return b.big[id]
	}
	return int64(c)
}

// bound returns an upper bound, valid at build time and after, of the counts
// of the ads at or after e in the ranked list that did not change since.
func (b *bucket) bound(e rankEntry) int64 {
	if e.cnt == saturated {
		return b.get(e.id) // only grew since the build: still a bound
	}
	return int64(e.cnt)
}

// mergeAt is the delta length from which a query merges the changed ads
// into the sorted list (a linear pass) instead of evaluating each of them
// exactly over the whole window.
var mergeAt = 256 // a variable so tests can exercise merges on small data

// tooStale tells whether the sorted list is better rebuilt from scratch:
// it holds many superseded entries, or the delta grew large (no query has
// read this minute for a while).
func (b *bucket) tooStale() bool { return b.stale+len(b.delta) > len(b.counts)/4+mergeAt }

// Add adds n (> 0) clicks of ad in minute for filter. Exclusive access. The
// index keeps a copy of ad, so ad may alias a buffer the caller reuses.
func (x *Index) Add(filter, minute int64, ad string, n int64) {
	if n <= 0 {
		return
	}
	minutes := x.filters[filter]
	if minutes == nil {
		minutes = make(map[int64]*bucket)
		x.filters[filter] = minutes
	}
	b := minutes[minute]
	if b == nil {
		b = &bucket{counts: make(map[uint32]uint32)}
		minutes[minute] = b
	}
	id := x.names.intern(ad)
	old, ok := b.counts[id]
	if !ok {
		x.entries++
	}
	if nv := b.get(id) + n; old != saturated && nv < saturated {
		b.counts[id] = uint32(nv)
	} else {
		if b.big == nil {
			b.big = make(map[uint32]int64)
		}
		b.counts[id] = saturated
		b.big[id] = nv
	}
	if b.ranked != nil {
		b.delta = append(b.delta, id)
		if b.tooStale() {
			b.ranked, b.delta, b.stale = nil, nil, 0
		}
	}
}

// DropBefore forgets every minute before minute. Exclusive access. Interned
// ad ids are kept (they are reused when the ad comes back).
func (x *Index) DropBefore(minute int64) {
	for f, minutes := range x.filters {
		for m, b := range minutes {
			if m < minute {
				x.entries -= len(b.counts)
				delete(minutes, m)
			}
		}
		if len(minutes) == 0 {
			delete(x.filters, f)
		}
	}
}

// Minutes is the number of (filter, minute) buckets held.
func (x *Index) Minutes() int {
	n := 0
	for _, minutes := range x.filters {
		n += len(minutes)
	}
	return n
}

// Entries is the number of (filter, minute, ad) counts held.
func (x *Index) Entries() int { return x.entries }

// Memory an entry and an interned ad take on the heap, measured (Go 1.26,
// amd64) over 2M ads in a minute and 1M more entries in each of four more,
// with every minute's sorted list built: ~19.4 bytes of hash map and 8 of
// sorted list per entry, ~60 bytes per ad (ids map, location, bytes).
const (
	entryBytes = 28
	adBytes    = 60
)

// CountBytes estimates the heap the counts take (entries, their maps and
// sorted lists): what DropBefore frees.
func (x *Index) CountBytes() int64 { return int64(x.entries) * entryBytes }

// AdBytes estimates the heap the interned ads take: every ad seen since
// the index was made, kept when its minutes are dropped.
func (x *Index) AdBytes() int64 { return int64(x.names.len()) * adBytes }

// OldestMinute is the earliest minute any filter holds, false when the
// index holds none.
func (x *Index) OldestMinute() (int64, bool) {
	oldest, ok := int64(0), false
	for _, minutes := range x.filters {
		for m := range minutes {
			if !ok || m < oldest {
				oldest, ok = m, true
			}
		}
	}
	return oldest, ok
}

// window returns the buckets of filter for minutes in [from, to).
func (x *Index) window(dst []*bucket, filter, from, to int64) []*bucket {
	minutes := x.filters[filter]
	if len(minutes) == 0 || from >= to {
		return dst
	}
	if (to-from)/60 <= int64(len(minutes)) {
		for m := from; m < to; m += 60 {
			if b := minutes[m]; b != nil {
				dst = append(dst, b)
			}
		}
		return dst
	}
	for m, b := range minutes {
		if m >= from && m < to {
			dst = append(dst, b)
		}
	}
	return dst
}

// Count sums the clicks of ad for filter over minutes [from, to).
func (x *Index) Count(filter int64, ad string, from, to int64) int64 {
	id, ok := x.names.lookup(ad)
	if !ok {
		return 0
	}
	var sum int64
	for _, b := range x.window(nil, filter, from, to) {
		sum += b.get(id)
	}
	return sum
}

// Top returns the n ads with the most clicks for filter summed over minutes
// [from, to), most first, ties by ad ascending. Ads with no clicks are not
// listed, so the answer may be shorter than n.
func (x *Index) Top(filter, from, to int64, n int) []AdCount {
	top, _ := x.TopContext(context.Background(), filter, from, to, n)
	return top
}

// checkEvery is how much work (bucket reads) TopContext does between two
// looks at its context: a few hundred microseconds. A variable so tests can
// exercise the checks on small data.
var checkEvery = 1 << 16

// TopContext is Top that stops, answering ctx.Err(), soon after ctx is done:
// a long window with a large n can take long, and the caller holds a read
// lock that delays every Apply meanwhile.
func (x *Index) TopContext(ctx context.Context, filter, from, to int64, n int) ([]AdCount, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	bs := x.window(nil, filter, from, to)
	if n <= 0 || len(bs) == 0 {
		return nil, nil
	}
	t := topState{ctx: ctx, x: x, bs: bs, n: n, seen: make(map[uint32]struct{}, 8*n)}
	views := make([]view, len(bs))
	for i, b := range bs {
		views[i] = b.view()
		if t.work(len(b.counts)) {
			return nil, t.err
		}
	}
	for _, v := range views {
		for _, id := range v.delta {
			if t.eval(id) {
				return nil, t.err
			}
		}
	}
	for d := 0; ; d++ {
		var threshold int64
		more := false
		for _, v := range views {
			if d >= len(v.ranked) {
				continue
			}
			more = true
			e := v.ranked[d]
			threshold += v.b.bound(e)
			if t.eval(e.id) {
				return nil, t.err
			}
		}
		if !more || (len(t.h) == n && t.h[0].total > threshold) {
			break
		}
	}
	out := make([]AdCount, len(t.h))
	for i := len(out) - 1; i >= 0; i-- {
		c := heap.Pop(&t.h).(cand)
		out[i] = AdCount{Ad: strings.Clone(c.ad), Count: c.total}
	}
	return out, nil
}

// view is one reader's snapshot of a bucket's sorted list and delta. The
// slices are never modified after publication, so the snapshot stays valid
// while other readers refresh the bucket.
type view struct {
	b      *bucket
	ranked []rankEntry
	delta  []uint32
}

// view refreshes the sorted list if needed and returns a snapshot. Safe for
// concurrent readers.
func (b *bucket) view() view {
	b.rankMu.Lock()
	defer b.rankMu.Unlock()
	switch {
	case b.ranked == nil || b.tooStale():
		b.rebuild()
	case len(b.delta) >= mergeAt:
		b.merge()
	}
	return view{b: b, ranked: b.ranked, delta: b.delta}
}

func byCountDesc(a, b rankEntry) int { return cmp.Compare(b.cnt, a.cnt) }

// rebuild sorts every ad of the bucket.
func (b *bucket) rebuild() {
	r := make([]rankEntry, 0, len(b.counts))
	for id, c := range b.counts {
		r = append(r, rankEntry{id: id, cnt: c})
	}
	slices.SortFunc(r, byCountDesc)
	b.ranked, b.delta, b.stale = r, nil, 0
}

// merge folds the changed ads into a new sorted list in one linear pass.
// Their old entries stay (counts only grow, so an old entry is a lower,
// harmless duplicate: the ad is also listed with its current count) and are
// counted as stale until the next rebuild.
func (b *bucket) merge() {
	ids := slices.Clone(b.delta)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	fresh := make([]rankEntry, len(ids))
	for i, id := range ids {
		fresh[i] = rankEntry{id: id, cnt: b.counts[id]}
	}
	slices.SortFunc(fresh, byCountDesc)
	out := make([]rankEntry, 0, len(b.ranked)+len(fresh))
	i, j := 0, 0
	for i < len(b.ranked) && j < len(fresh) {
		if b.ranked[i].cnt >= fresh[j].cnt {
			out = append(out, b.ranked[i])
			i++
		} else {
			out = append(out, fresh[j])
			j++
		}
	}
	out = append(append(out, b.ranked[i:]...), fresh[j:]...)
	b.ranked, b.delta, b.stale = out, nil, b.stale+len(fresh)
}

type topState struct {
	ctx  context.Context
	done int   // work since the context was last checked
	err  error // the context's error once it is done
	x    *Index
	bs   []*bucket
	n    int
	seen map[uint32]struct{}
	h    candHeap
}

// work counts n units of work and reports whether the query must stop
// (t.err is then set).
func (t *topState) work(n int) bool {
	if t.done += n; t.done >= checkEvery {
		t.done = 0
		t.err = t.ctx.Err()
	}
	return t.err != nil
}

// eval sums id exactly over the window, once, and offers it to the heap. It
// reports whether the query must stop (see work).
func (t *topState) eval(id uint32) bool {
	if _, ok := t.seen[id]; ok {
		return false
	}
	t.seen[id] = struct{}{}
	var total int64
	for _, b := range t.bs {
		total += b.get(id)
	}
	if total > 0 {
		c := cand{id: id, total: total, ad: t.x.names.name(id)}
		if len(t.h) < t.n {
			heap.Push(&t.h, c)
		} else if worse(t.h[0], c) {
			t.h[0] = c
			heap.Fix(&t.h, 0)
		}
	}
	return t.work(len(t.bs))
}

type cand struct {
	id    uint32
	total int64
	ad    string
}

// worse orders answers: fewer clicks, or as many and a greater ad id.
func worse(a, b cand) bool {
	if a.total != b.total {
		return a.total < b.total
	}
	return a.ad > b.ad
}

// candHeap is a min-heap of the best candidates so far, worst on top.
type candHeap []cand

func (h candHeap) Len() int           { return len(h) }
func (h candHeap) Less(i, j int) bool { return worse(h[i], h[j]) }
func (h candHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *candHeap) Push(v any)        { *h = append(*h, v.(cand)) }
func (h *candHeap) Pop() any {
	old := *h
	v := old[len(old)-1]
	*h = old[:len(old)-1]
	return v
}

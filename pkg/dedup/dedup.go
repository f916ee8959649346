package dedup

import (
	"unsafe"

	"github.com/cespare/xxhash/v2"
)

// Set remembers click ids per event minute. It is not safe for concurrent
// use: the owner serializes calls (the aggregator holds its lock around a
// whole batch, so that remembering an id and counting its click are one step).
type Set struct {
	minutes map[int64]*bucket
	n       int
	// last is the bucket of the previous Add: batches mostly hold one minute.
	lastMinute int64
	last       *bucket
}

// New returns an empty set.
func New() *Set { return &Set{minutes: make(map[int64]*bucket)} }

// Add remembers id under minute and reports whether it was new. It returns
// false when id was already remembered for that minute. A retry of a click
// carries the same click_time, hence the same minute, so one minute's bucket
// is the only place a duplicate can be.
func (s *Set) Add(minute int64, id string) bool {
	b := s.last
	if b == nil || minute != s.lastMinute {
		b = s.minutes[minute]
		if b == nil {
			b = newBucket()
			s.minutes[minute] = b
		}
		s.last, s.lastMinute = b, minute
	}
	if !b.add(id) {
		return false
	}
	s.n++
	return true
}

// Has reports whether id is remembered under minute.
func (s *Set) Has(minute int64, id string) bool {
	b := s.minutes[minute]
	return b != nil && b.has(id)
}

// EachBefore calls fn for every id remembered under a minute before the
// given one, minute by minute (in no particular order).
func (s *Set) EachBefore(before int64, fn func(minute int64, id string)) {
	for m, b := range s.minutes {
		if m < before {
			b.each(func(id string) { fn(m, id) })
		}
	}
}

// Forget drops every minute before the given one and returns how many ids it dropped.
func (s *Set) Forget(before int64) int {
	dropped := 0
	for m, b := range s.minutes {
		if m < before {
			dropped += b.n
			delete(s.minutes, m)
		}
	}
	if s.last != nil && s.lastMinute < before {
		s.last = nil
	}
	s.n -= dropped
	return dropped
}

// Frozen is a set of minutes taken out of a Set by Detach: read-only, so
// it may be read by one goroutine (writing it to disk) while its owner
// consults it under its own lock.
type Frozen struct {
	minutes map[int64]*bucket
	n       int
}

// Detach takes every minute before the given one out of s and returns
// them; it costs one map operation per minute, not per id.
func (s *Set) Detach(before int64) *Frozen {
	f := &Frozen{minutes: make(map[int64]*bucket)}
	for m, b := range s.minutes {
		if m < before {
			f.minutes[m] = b
			f.n += b.n
			delete(s.minutes, m)
		}
	}
	if s.last != nil && s.lastMinute < before {
		s.last = nil
	}
	s.n -= f.n
	return f
}

// Has reports whether id is in f under minute.
func (f *Frozen) Has(minute int64, id string) bool {
	b := f.minutes[minute]
	return b != nil && b.has(id)
}

// Len is the number of ids in f.
func (f *Frozen) Len() int { return f.n }

// Each calls fn for every id of f, minute by minute; the string is only
// valid during the call.
func (f *Frozen) Each(fn func(minute int64, id string)) {
	for m, b := range f.minutes {
		b.each(func(id string) { fn(m, id) })
	}
}

// Len is the number of remembered ids.
func (s *Set) Len() int { return s.n }

// Minutes is the number of minutes with remembered ids.
func (s *Set) Minutes() int { return len(s.minutes) }

// hashID is the index hash; a variable so tests can force collisions.
var hashID = xxhash.Sum64String

// chunkSize is the arena chunk size: large enough that chunk headers are
// negligible, small enough that a quiet minute wastes little.
const chunkSize = 64 << 10

// maxArenaID is the longest id kept in the arena (its length is one byte);
// longer ids go to the overflow map, still exactly.
const maxArenaID = 255

// bucket holds the ids of one minute. The index maps the 64-bit xxhash of an
// id to where its bytes live in the arena; a hash hit is confirmed by
// comparing the bytes, and an id whose hash collides with a different id is
// kept in overflow, so the set is exact. The index and arena hold no Go
// pointers per id, which keeps them off the garbage collector's scan path.
type bucket struct {
	index    map[uint64]uint64 // hash -> chunk<<32 | offset
	chunks   [][]byte
	overflow map[string]struct{}
	n        int
}

func newBucket() *bucket { return &bucket{index: make(map[uint64]uint64)} }

func (b *bucket) add(id string) bool {
	if len(id) > maxArenaID {
		return b.addOverflow(id)
	}
	h := hashID(id)
	loc, ok := b.index[h]
	if !ok {
		b.index[h] = b.store(id)
		b.n++
		return true
	}
	if b.equal(loc, id) {
		return false
	}
	return b.addOverflow(id)
}

func (b *bucket) has(id string) bool {
	if len(id) <= maxArenaID {
		if loc, ok := b.index[hashID(id)]; ok && b.equal(loc, id) {
			return true
		}
	}
	_, ok := b.overflow[id]
	return ok
}

// each calls fn for every id of the bucket; the string is only valid during the call.
func (b *bucket) each(fn func(id string)) {
	for _, c := range b.chunks {
		for off := 0; off < len(c); {
			n := int(c[off])
			if n == 0 {
				fn("")
			} else {
				fn(unsafe.String(&c[off+1], n))
			}
			off += 1 + n
		}
	}
	for id := range b.overflow {
		fn(id)
	}
}

func (b *bucket) addOverflow(id string) bool {
	if _, ok := b.overflow[id]; ok {
		return false
	}
	if b.overflow == nil {
		b.overflow = make(map[string]struct{})
	}
	b.overflow[id] = struct{}{}
	b.n++
	return true
}

// store appends id (length byte, then bytes) to the arena and returns its location.
func (b *bucket) store(id string) uint64 {
	need := 1 + len(id)
	if len(b.chunks) == 0 || cap(b.chunks[len(b.chunks)-1])-len(b.chunks[len(b.chunks)-1]) < need {
		b.chunks = append(b.chunks, make([]byte, 0, chunkSize))
	}
	ci := len(b.chunks) - 1
	c := b.chunks[ci]
	off := len(c)
	c = append(c, byte(len(id)))
	c = append(c, id...)
	b.chunks[ci] = c
	return uint64(ci)<<32 | uint64(off)
}

// equal reports whether the id stored at loc is id. The conversion inside
// the comparison does not allocate.
func (b *bucket) equal(loc uint64, id string) bool {
	c := b.chunks[loc>>32]
	off := int(uint32(loc))
	n := int(c[off])
	return string(c[off+1:off+1+n]) == id
}

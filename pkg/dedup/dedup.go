package dedup

import (
	"encoding/binary"
	"slices"
	"unsafe"

	"github.com/cespare/xxhash/v2"
)

// Set remembers click ids per event minute. It is not safe for concurrent
// use: the owner serializes calls (the aggregator holds its lock around a
// whole batch, so that remembering an id and counting its click are one step).
type Set struct {
	minutes map[int64]*bucket
	n       int
	mem     int64 // bytes held by the buckets (index and arena)
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
	before := b.mem
	if !b.add(id) {
		return false
	}
	s.mem += b.mem - before
	s.n++
	return true
}

// Bytes is the memory the set holds for its ids (index and arena).
func (s *Set) Bytes() int64 { return s.mem }

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
			s.mem -= b.mem
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
	mem     int64
}

// Detach takes every minute before the given one out of s and returns
// them; it costs one map operation per minute, not per id.
func (s *Set) Detach(before int64) *Frozen {
	f := &Frozen{minutes: make(map[int64]*bucket)}
	for m, b := range s.minutes {
		if m < before {
			f.minutes[m] = b
			f.n += b.n
			f.mem += b.mem
			delete(s.minutes, m)
		}
	}
	if s.last != nil && s.lastMinute < before {
		s.last = nil
	}
	s.n -= f.n
	s.mem -= f.mem
	return f
}

// Bytes is the memory f holds.
func (f *Frozen) Bytes() int64 { return f.mem }

// Minutes returns f's minutes in ascending order.
func (f *Frozen) Minutes() []int64 { return sortedMinutes(f.minutes) }

// Count is the number of ids f holds under minute.
func (f *Frozen) Count(minute int64) int {
	if b := f.minutes[minute]; b != nil {
		return b.n
	}
	return 0
}

// EachIn calls fn for every id of f under minute; the string is only
// valid during the call.
func (f *Frozen) EachIn(minute int64, fn func(id string)) {
	if b := f.minutes[minute]; b != nil {
		b.each(fn)
	}
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

// hashOf is the hash an id is indexed by; 0 marks an empty slot, so a
// hash of 0 is taken as 1 (exactness comes from comparing the bytes).
func hashOf(id string) uint64 {
	if h := hashID(id); h != 0 {
		return h
	}
	return 1
}

// Layout of a minute's ids (a bucket). The index is split into 256 shards
// by the hash's top byte, each an open-addressing table with linear
// probing of full 64-bit hashes and 32-bit arena locations (12 bytes a
// slot, at most 5/8 full): growing one shard moves a 256th of the index,
// so no Add waits long for a resize, and nothing in it is a Go pointer
// per id. The arena holds the ids (uvarint length, bytes) in chunks of
// 1 MiB; a location is chunk<<20 | offset. A hash hit is confirmed by
// comparing the bytes, so equal hashes of different ids simply take two
// slots. An id longer than maxArenaID, or one that finds the arena at its
// 4 GiB limit, is kept in the overflow map, still exactly. The same
// layout is what a closed minute's id file holds (file.go), so writing it
// costs no per-id work.
const (
	shardBits     = 8
	nShards       = 1 << shardBits
	minShardSlots = 8
	chunkBits     = 20
	chunkSize     = 1 << chunkBits
	maxChunks     = 1 << (32 - chunkBits)
	firstChunk    = 4 << 10 // a quiet minute's arena starts small
	maxArenaID    = 1024
)

type shard struct {
	hashes []uint64 // 0 = empty
	locs   []uint32
	n      int
}

type bucket struct {
	shards   [nShards]shard
	chunks   [][]byte
	overflow map[string]struct{}
	n        int
	mem      int64 // bytes of index, arena and overflow
}

func newBucket() *bucket { return &bucket{} }

func (b *bucket) add(id string) bool {
	if len(id) > maxArenaID {
		return b.addOverflow(id)
	}
	h := hashOf(id)
	s := &b.shards[h>>(64-shardBits)]
	if (s.n+1)*8 > len(s.hashes)*5 {
		b.mem -= int64(len(s.hashes)) * slotBytes
		s.grow()
		b.mem += int64(len(s.hashes)) * slotBytes
	}
	mask := uint64(len(s.hashes) - 1)
	i := h & mask
	for ; s.hashes[i] != 0; i = (i + 1) & mask {
		if s.hashes[i] == h && b.equal(s.locs[i], id) {
			return false
		}
	}
	if b.overflow != nil {
		if _, ok := b.overflow[id]; ok {
			return false
		}
	}
	loc, ok := b.store(id)
	if !ok {
		return b.addOverflow(id)
	}
	s.hashes[i], s.locs[i] = h, loc
	s.n++
	b.n++
	return true
}

func (b *bucket) has(id string) bool {
	if len(id) <= maxArenaID {
		h := hashOf(id)
		s := &b.shards[h>>(64-shardBits)]
		if s.n > 0 {
			mask := uint64(len(s.hashes) - 1)
			for i := h & mask; s.hashes[i] != 0; i = (i + 1) & mask {
				if s.hashes[i] == h && b.equal(s.locs[i], id) {
					return true
				}
			}
		}
	}
	_, ok := b.overflow[id]
	return ok
}

// grow doubles the shard's table (or creates it) and reinserts its slots.
func (s *shard) grow() {
	n := max(minShardSlots, 2*len(s.hashes))
	hashes, locs := make([]uint64, n), make([]uint32, n)
	mask := uint64(n - 1)
	for j, h := range s.hashes {
		if h == 0 {
			continue
		}
		i := h & mask
		for hashes[i] != 0 {
			i = (i + 1) & mask
		}
		hashes[i], locs[i] = h, s.locs[j]
	}
	s.hashes, s.locs = hashes, locs
}

// each calls fn for every id of the bucket; the string is only valid during the call.
func (b *bucket) each(fn func(id string)) {
	for _, c := range b.chunks {
		eachInChunk(c, fn)
	}
	for id := range b.overflow {
		fn(id)
	}
}

// eachInChunk calls fn for every id stored in c (uvarint length, bytes).
func eachInChunk(c []byte, fn func(id string)) bool {
	for off := 0; off < len(c); {
		n, k := binary.Uvarint(c[off:])
		if k <= 0 || n > uint64(len(c)-off-k) {
			return false
		}
		if n == 0 {
			fn("")
		} else {
			fn(unsafe.String(&c[off+k], int(n)))
		}
		off += k + int(n)
	}
	return true
}

func (b *bucket) addOverflow(id string) bool {
	if _, ok := b.overflow[id]; ok {
		return false
	}
	if b.overflow == nil {
		b.overflow = make(map[string]struct{})
	}
	b.overflow[id] = struct{}{}
	b.mem += int64(len(id)) + overflowEntryBytes
	b.n++
	return true
}

// store appends id (uvarint length, then bytes) to the arena and returns
// its location; false when the arena is at its limit.
func (b *bucket) store(id string) (uint32, bool) {
	need := uvarintLen(uint64(len(id))) + len(id)
	ci := len(b.chunks) - 1
	if ci < 0 || cap(b.chunks[ci])-len(b.chunks[ci]) < need {
		switch {
		case ci >= 0 && len(b.chunks[ci])+need <= chunkSize:
			// The first chunk grows up to the chunk size; locations stay.
			c := b.chunks[ci]
			nc := make([]byte, len(c), min(chunkSize, max(2*cap(c), len(c)+need)))
			copy(nc, c)
			b.mem += int64(cap(nc) - cap(c))
			b.chunks[ci] = nc
		case len(b.chunks) == maxChunks:
			return 0, false
		default:
			size := chunkSize
			if ci < 0 {
				size = firstChunk
			}
			b.chunks = append(b.chunks, make([]byte, 0, size))
			b.mem += int64(size)
			ci++
		}
	}
	c := b.chunks[ci]
	off := len(c)
	c = binary.AppendUvarint(c, uint64(len(id)))
	c = append(c, id...)
	b.chunks[ci] = c
	return uint32(ci<<chunkBits | off), true
}

// equal reports whether the id stored at loc is id. The conversion inside
// the comparison does not allocate.
func (b *bucket) equal(loc uint32, id string) bool {
	c := b.chunks[loc>>chunkBits]
	off := int(loc & (chunkSize - 1))
	n, k := binary.Uvarint(c[off:])
	return n == uint64(len(id)) && string(c[off+k:off+k+int(n)]) == id
}

// Memory accounting: a slot is a hash and a location; an overflow entry
// is its id plus about a map entry.
const (
	slotBytes          = 12
	overflowEntryBytes = 48
)

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

// sortedMinutes returns the keys of m in ascending order.
func sortedMinutes(m map[int64]*bucket) []int64 {
	ms := make([]int64, 0, len(m))
	for k := range m {
		ms = append(ms, k)
	}
	slices.Sort(ms)
	return ms
}

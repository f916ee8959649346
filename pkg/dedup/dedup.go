package dedup

import (
	"encoding/binary"
	"errors"
	"maps"
	"math/bits"
	"slices"
	"strings"
	"unsafe"

	"github.com/cespare/xxhash/v2"
)

// Set remembers click ids per event minute. It is not safe for concurrent
// use: the owner serializes calls (the aggregator holds its lock around a
// whole batch, so that remembering an id and counting its click are one
// step). Only the spilling of full arena chunks runs on goroutines of its
// own, and they touch nothing the owner changes.
type Set struct {
	dir     string // where buckets spill their full chunks; "" keeps everything in memory
	box     *errBox
	minutes map[int64]*bucket
	n       int
	// last is the bucket of the previous Add: batches mostly hold one minute.
	lastMinute int64
	last       *bucket
}

// New returns an empty set that keeps every id in memory.
func New() *Set { return &Set{minutes: make(map[int64]*bucket), box: &errBox{}} }

// NewSpilling returns an empty set whose minutes write their full arena
// chunks to dir (as <minute>.ids.open, on a goroutine per minute) and drop
// them from memory, so memory per id is about its index slot: a minute's
// file is then finished by Frozen.WriteFile without writing the ids again.
// A hit on a spilled id is confirmed by reading the file.
func NewSpilling(dir string) *Set {
	s := New()
	s.dir = dir
	return s
}

// Add remembers id under minute and reports whether it was new. It returns
// false when id was already remembered for that minute. A retry of a click
// carries the same click_time, hence the same minute, so one minute's bucket
// is the only place a duplicate can be.
func (s *Set) Add(minute int64, id string) bool { return s.AddHashed(minute, id, hashID(id)) }

// HashID is the hash of id that AddHashed and Prefetch take: computed
// once per click, and where the caller likes (outside its lock).
func HashID(id string) uint64 { return hashID(id) }

// AddHashed is Add with id's hash (HashID) already computed.
func (s *Set) AddHashed(minute int64, id string, h uint64) bool {
	b := s.last
	if b == nil || minute != s.lastMinute {
		b = s.minutes[minute]
		if b == nil {
			b = newBucket(minute, s.dir, s.box)
			s.minutes[minute] = b
		}
		s.last, s.lastMinute = b, minute
	}
	if !b.add(id, h) {
		return false
	}
	s.n++
	return true
}

// Prefetch reads the index slot where an AddHashed of hash h under minute
// will start probing, so that the add finds it in the CPU cache. A busy
// minute's index is hundreds of MB, so nearly every add's first slot read
// misses the cache (and the TLB): one after another, those misses were a
// fifth of an aggregator's CPU at full speed. Prefetching a whole batch
// first lets the misses overlap, as nothing in one read waits for another.
// It returns the slot read so that the read is not optimized away; the
// caller sums the results somewhere that outlives the call. It changes
// nothing and is exact to skip.
func (s *Set) Prefetch(minute int64, h uint64) uint64 {
	b := s.last
	if b == nil || minute != s.lastMinute {
		if b = s.minutes[minute]; b == nil {
			return 0
		}
	}
	sh := &b.shards[h>>(64-shardBits)]
	if len(sh.slots) == 0 {
		return 0
	}
	return sh.slots[home(uint32(h>>(64-shardBits-32)), tableBits(len(sh.slots)))]
}

// Has reports whether id is remembered under minute.
func (s *Set) Has(minute int64, id string) bool {
	b := s.minutes[minute]
	return b != nil && b.has(id)
}

// Forget drops every minute before the given one and returns how many ids it dropped.
func (s *Set) Forget(before int64) int {
	dropped := 0
	for m, b := range s.minutes {
		if m < before {
			dropped += b.n
			b.discard()
			delete(s.minutes, m)
		}
	}
	if s.last != nil && s.lastMinute < before {
		s.last = nil
	}
	s.n -= dropped
	return dropped
}

// Close stops the spilling goroutines and deletes the spill files of the
// minutes still held (they are rebuilt from the write-ahead log).
func (s *Set) Close() {
	for m, b := range s.minutes {
		b.discard()
		delete(s.minutes, m)
	}
	s.last, s.n = nil, 0
}

// Bytes is the memory the set holds for its ids: index slots, arena
// chunks not yet spilled, overflow.
func (s *Set) Bytes() int64 {
	var n int64
	for _, b := range s.minutes {
		n += b.memBytes()
	}
	return n
}

// Err is the first error met writing or reading back spilled chunks, by
// this set or by what was detached from it. After one, an answer of Add or
// Has may be wrong: the owner must stop acknowledging (the aggregator
// stops the node and recovers from its log).
func (s *Set) Err() error { return s.box.get() }

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

// Minutes returns f's minutes in ascending order.
func (f *Frozen) Minutes() []int64 { return slices.Sorted(maps.Keys(f.minutes)) }

// EachIn calls fn for every id of f under minute; the string is only
// valid during the call. It reads spilled chunks back from their file.
func (f *Frozen) EachIn(minute int64, fn func(id string)) error {
	if b := f.minutes[minute]; b != nil {
		return b.each(fn)
	}
	return nil
}

// Has reports whether id is in f under minute.
func (f *Frozen) Has(minute int64, id string) bool {
	b := f.minutes[minute]
	return b != nil && b.has(id)
}

// Release stops f's spilling goroutines and deletes spill files no
// WriteFile finished. Call it once f is no longer consulted.
func (f *Frozen) Release() {
	for _, b := range f.minutes {
		b.discard()
	}
}

// Len is the number of ids in f.
func (f *Frozen) Len() int { return f.n }

// Len is the number of remembered ids.
func (s *Set) Len() int { return s.n }

// Minutes is the number of minutes with remembered ids.
func (s *Set) Minutes() int { return len(s.minutes) }

// MinuteLen is the number of ids remembered under minute, and the memory
// they hold (as Bytes counts it).
func (s *Set) MinuteLen(minute int64) (int, int64) {
	b := s.minutes[minute]
	if b == nil {
		return 0, 0
	}
	return b.n, b.memBytes()
}

// hashID is the index hash; a variable so tests can force collisions.
var hashID = xxhash.Sum64String

// Layout of a minute's ids (a bucket). The index is split into 256 shards
// by the hash's top byte; each is an open-addressing table with linear
// probing whose 8-byte slots hold a 32-bit tag (the next 32 bits of the
// hash; its top bits are the slot's home, so a shard grows without
// rehashing ids) and the id's arena location plus one (0 is an empty
// slot). A shard grows (doubles) once it is between 1/2 and 3/4 full, the
// fraction depending on the shard (growLimit): ids hash uniformly, so
// shards fill alike, and one fraction for all made all 256 double within
// moments of each other, faulting in a minute's new index at once (at
// full speed, 256 MB of fresh pages in under a second, ingest halved for
// that second). Growing one moves a 256th of the index, so no Add waits
// long for a resize. Nothing in it is a Go pointer
// per id. The arena holds the ids (uvarint length, bytes) in chunks of
// 1 MiB; a location is chunk<<20 | offset. A tag hit is confirmed by
// comparing the bytes, so the set is exact; equal tags of different ids
// take two slots. An id longer than maxArenaID, or one that finds the arena
// at its limit, is kept in the overflow map, still exactly. The same
// layout is what a closed minute's id file holds (file.go), so writing it
// costs no per-id work.
const (
	shardBits     = 8
	nShards       = 1 << shardBits
	minShardSlots = 8
	chunkBits     = 20
	chunkSize     = 1 << chunkBits
	maxChunks     = 1<<(32-chunkBits) - 1 // the last location + 1 still fits 32 bits
	firstChunk    = 4 << 10               // a quiet minute's arena starts small
	maxArenaID    = 1024
)

// Memory accounting: an overflow entry is its id plus about a map entry.
const overflowEntryBytes = 48

type shard struct {
	slots []uint64 // tag<<32 | location+1; 0 = empty
	n     int
	limit int // the table grows when n reaches it (growLimit)
}

// growLimit is how many ids shard si holds before its table of size slots
// doubles: from 1/2 of the slots (shard 0) to just under 3/4 (shard 255),
// 5/8 on average, so that shards of equal fill grow at different moments.
func growLimit(si, size int) int { return size * (2*nShards + si) / (4 * nShards) }

type bucket struct {
	minute   int64
	shards   [nShards]shard
	chunks   [][]byte // nil once spilled and written
	lens     []uint32 // used length of every chunk
	spill    *spiller // nil until the first chunk fills (and always without a dir)
	dir      string
	box      *errBox
	overflow map[string]struct{}
	n        int
	slotMem  int64
	ovfMem   int64
}

func newBucket(minute int64, dir string, box *errBox) *bucket {
	return &bucket{minute: minute, dir: dir, box: box}
}

// split returns the shard index, the tag, of an id's hash.
func split(id string) (int, uint32) { return splitHash(hashID(id)) }

func splitHash(h uint64) (int, uint32) {
	return int(h >> (64 - shardBits)), uint32(h >> (64 - shardBits - 32))
}

// home is where a tag's probe starts in a table of 2^bits slots.
func home(tag uint32, bits int) uint64 { return uint64(tag) >> (32 - bits) }

func (b *bucket) add(id string, h uint64) bool {
	if len(id) > maxArenaID {
		return b.addOverflow(id)
	}
	si, tag := splitHash(h)
	s := &b.shards[si]
	if s.n >= s.limit {
		b.slotMem -= int64(len(s.slots)) * 8
		s.grow()
		s.limit = growLimit(si, len(s.slots))
		b.slotMem += int64(len(s.slots)) * 8
	}
	mask := uint64(len(s.slots) - 1)
	i := home(tag, tableBits(len(s.slots)))
	for ; s.slots[i] != 0; i = (i + 1) & mask {
		if uint32(s.slots[i]>>32) == tag && b.equal(uint32(s.slots[i])-1, id) {
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
	s.slots[i] = uint64(tag)<<32 | uint64(loc+1)
	s.n++
	b.n++
	return true
}

func (b *bucket) has(id string) bool {
	if len(id) <= maxArenaID {
		si, tag := split(id)
		s := &b.shards[si]
		if s.n > 0 {
			mask := uint64(len(s.slots) - 1)
			for i := home(tag, tableBits(len(s.slots))); s.slots[i] != 0; i = (i + 1) & mask {
				if uint32(s.slots[i]>>32) == tag && b.equal(uint32(s.slots[i])-1, id) {
					return true
				}
			}
		}
	}
	_, ok := b.overflow[id]
	return ok
}

func tableBits(n int) int { return bits.Len(uint(n)) - 1 }

// grow doubles the shard's table (or creates it) and reinserts its slots
// at their homes, from their tags alone.
func (s *shard) grow() {
	n := max(minShardSlots, 2*len(s.slots))
	slots := allocSlots(n)
	bits, mask := tableBits(n), uint64(n-1)
	for _, v := range s.slots {
		if v == 0 {
			continue
		}
		i := home(uint32(v>>32), bits)
		for slots[i] != 0 {
			i = (i + 1) & mask
		}
		slots[i] = v
	}
	freeSlots(s.slots)
	s.slots = slots
}

// each calls fn for every id of the bucket; the string is only valid
// during the call. Spilled chunks are read back from the spill file.
func (b *bucket) each(fn func(id string)) error {
	var buf []byte
	for ci, c := range b.chunks {
		if c == nil {
			if buf == nil {
				buf = make([]byte, chunkSize)
			}
			var err error
			if c, err = b.spill.read(buf, ci, b.lens[ci]); err != nil {
				return err
			}
		}
		if !eachInChunk(c, fn) {
			return errors.New("dedup: malformed arena chunk")
		}
	}
	for id := range b.overflow {
		fn(id)
	}
	return nil
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
	b.overflow[strings.Clone(id)] = struct{}{} // id may alias a request's buffer
	b.ovfMem += int64(len(id)) + overflowEntryBytes
	b.n++
	return true
}

// store appends id (uvarint length, then bytes) to the arena and returns
// its location; false when the arena is at its limit. A chunk that fills
// up is handed to the spiller, which writes it and lets it go.
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
			b.chunks[ci] = nc
		case len(b.chunks) == maxChunks:
			return 0, false
		default:
			size := chunkSize
			if ci < 0 {
				size = firstChunk
			} else if b.dir != "" {
				if b.spill == nil {
					b.spill = newSpiller(b.dir, b.minute, b.box)
				}
				b.spill.put(ci, b.chunks[ci])
			}
			b.chunks = append(b.chunks, getChunk(size))
			b.lens = append(b.lens, 0)
			ci++
		}
	}
	if b.spill != nil {
		b.spill.reap(b.chunks)
	}
	c := b.chunks[ci]
	off := len(c)
	c = binary.AppendUvarint(c, uint64(len(id)))
	c = append(c, id...)
	b.chunks[ci] = c
	b.lens[ci] = uint32(len(c))
	return uint32(ci<<chunkBits | off), true
}

// equal reports whether the id stored at loc is id. The conversion inside
// the comparison does not allocate. A spilled chunk is read from its file.
func (b *bucket) equal(loc uint32, id string) bool {
	ci := int(loc >> chunkBits)
	off := int(loc & (chunkSize - 1))
	c := b.chunks[ci]
	if c == nil {
		return b.spill.equal(ci, off, id)
	}
	n, k := binary.Uvarint(c[off:])
	return n == uint64(len(id)) && string(c[off+k:off+k+int(n)]) == id
}

// memBytes is the memory the bucket holds: slots, chunks in memory, overflow.
func (b *bucket) memBytes() int64 {
	n := b.slotMem + b.ovfMem
	for _, c := range b.chunks {
		n += int64(cap(c))
	}
	return n
}

// discard stops the spiller, deletes its file (if not finished) and frees
// the index; the bucket must not be used after.
func (b *bucket) discard() {
	if b.spill != nil {
		b.spill.discard()
	}
	for i := range b.shards {
		freeSlots(b.shards[i].slots)
		b.shards[i] = shard{}
	}
	b.slotMem, b.n = 0, 0
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

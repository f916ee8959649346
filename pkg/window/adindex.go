package window

import (
	"math/bits"

	"github.com/cespare/xxhash/v2"
)

// A minute's index from ad to row (counts.find). It is flat, like the
// dedup index, rather than a Go map, so that a batch's lookups can be
// started ahead of its adds (Counter.PrefetchIndex, Counter.PrefetchRow): at
// full speed a minute holds hundreds of thousands of ads, each lookup in a
// Go map was two or three cache misses one after the other (its control
// word, the key's bytes, then the row), and a 30 s CPU profile of the
// aggregator put a fifth of its time there.
//
// The index is split into 256 shards by the hash's top byte, each an
// open-addressing table with linear probing whose 8-byte slots hold a
// 32-bit tag (the next 32 bits of the hash; its top bits are the slot's
// home, so a shard grows without hashing ads again) and the row plus one
// (0 is an empty slot). A tag hit is confirmed by comparing the ad, so
// the index is exact. A shard doubles at 5/8 full, moving a 256th of the
// index, so no add waits long for a resize.
const (
	idxShardBits = 8
	idxShards    = 1 << idxShardBits
	idxMinSlots  = 8
)

type idxShard struct {
	slots []uint64 // tag<<32 | row+1; 0 = empty
	n     int
}

// HashAd is the hash of an ad that AddHashed and the prefetches take:
// computed once per click, and where the caller likes (outside its lock).
func HashAd(ad string) uint64 { return xxhash.Sum64String(ad) }

func idxSplit(h uint64) (int, uint32) {
	return int(h >> (64 - idxShardBits)), uint32(h >> (64 - idxShardBits - 32))
}

// idxHome is where a tag's probe starts in a table of size (a power of two) slots.
func idxHome(tag uint32, size int) uint64 { return uint64(tag) >> (33 - bits.Len(uint(size))) }

// find returns ad's row, or the shard and slot where it is to be inserted.
func (cs *counts) find(ad string, h uint64) (row int32, s *idxShard, at uint64, found bool) {
	si, tag := idxSplit(h)
	s = &cs.shards[si]
	if s.n*8 >= len(s.slots)*5 {
		s.grow()
	}
	mask := uint64(len(s.slots) - 1)
	i := idxHome(tag, len(s.slots))
	for ; s.slots[i] != 0; i = (i + 1) & mask {
		if v := s.slots[i]; uint32(v>>32) == tag {
			if r := int32(uint32(v) - 1); cs.row(r).ad == ad {
				return r, s, i, true
			}
		}
	}
	return 0, s, i, false
}

// insert puts row into the empty slot at of s that find returned.
func (s *idxShard) insert(at uint64, h uint64, row int32) {
	_, tag := idxSplit(h)
	s.slots[at] = uint64(tag)<<32 | uint64(uint32(row)+1)
	s.n++
}

// grow doubles the shard's table (or creates it) and reinserts its slots
// at their homes, from their tags alone.
func (s *idxShard) grow() {
	n := max(idxMinSlots, 2*len(s.slots))
	slots := make([]uint64, n)
	mask := uint64(n - 1)
	for _, v := range s.slots {
		if v == 0 {
			continue
		}
		i := idxHome(uint32(v>>32), n)
		for slots[i] != 0 {
			i = (i + 1) & mask
		}
		slots[i] = v
	}
	s.slots = slots
}

// prefetchIndex reads the slot where a lookup of hash h starts.
func (cs *counts) prefetchIndex(h uint64) uint64 {
	si, tag := idxSplit(h)
	s := &cs.shards[si]
	if len(s.slots) == 0 {
		return 0
	}
	return s.slots[idxHome(tag, len(s.slots))]
}

// prefetchRow reads the row of the first slot of hash h's probe whose tag
// matches, and the first byte of its ad: what find compares next.
func (cs *counts) prefetchRow(h uint64) uint64 {
	si, tag := idxSplit(h)
	s := &cs.shards[si]
	if len(s.slots) == 0 {
		return 0
	}
	mask := uint64(len(s.slots) - 1)
	for i := idxHome(tag, len(s.slots)); s.slots[i] != 0; i = (i + 1) & mask {
		if v := s.slots[i]; uint32(v>>32) == tag {
			r := cs.row(int32(uint32(v) - 1))
			if r.ad == "" {
				return uint64(r.all)
			}
			return uint64(r.all) + uint64(r.ad[0])
		}
	}
	return 0
}

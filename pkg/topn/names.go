package topn

import (
	"encoding/binary"
	"strings"
	"unsafe"

	"github.com/cespare/xxhash/v2"
)

// names interns ad ids as dense uint32s, with nothing the garbage
// collector has to trace per ad. The reducer keeps every ad it ever saw
// (millions at full speed), and it shares its process, and its heap, with
// the aggregators in `adclick dev`: as a map[string]uint32 plus a []string,
// that was two pointers and a small allocation per ad, ~130 MB for 2M ads
// that every GC cycle marked, under a 512 MiB soft heap limit, which
// stretched the acknowledgements of clicks being ingested at the time.
// Here the ads' bytes sit back to back in 1 MiB chunks (length first, as a
// uvarint) and the maps hold only integers, so the GC marks a chunk as a
// whole and never looks inside.
//
// An ad is found by its 64-bit hash (ids), confirmed by comparing its
// bytes; an ad whose hash an earlier ad already has (about one in 10^7
// pairs at 2M ads) goes into clash, keyed by the ad itself, so the answer
// is exact either way.
type names struct {
	hash   func(string) uint64 // xxhash; tests force clashes
	ids    map[uint64]uint32   // hash -> id of the first ad with that hash
	clash  map[string]uint32   // ads whose hash an earlier ad has
	locs   []uint64            // id -> chunk<<32 | offset of its length and bytes
	chunks [][]byte
}

// nameChunk is the size of a chunk of ad bytes: big enough that chunks are
// few, small enough that a quiet reducer does not hold much it does not use.
const nameChunk = 1 << 20

func newNames() names {
	return names{hash: xxhash.Sum64String, ids: make(map[uint64]uint32)}
}

// len is the number of ads interned: ids are 0 .. len()-1.
func (n *names) len() int { return len(n.locs) }

// lookup returns ad's id, if ad was interned.
func (n *names) lookup(ad string) (uint32, bool) {
	id, ok := n.ids[n.hash(ad)]
	if !ok {
		return 0, false
	}
	if n.name(id) == ad {
		return id, true
	}
	id, ok = n.clash[ad]
	return id, ok
}

// intern returns ad's id, adding a copy of ad if it is new. ad may alias a
// buffer the caller reuses.
func (n *names) intern(ad string) uint32 {
	h := n.hash(ad)
	first, ok := n.ids[h]
	if !ok {
		id := n.add(ad)
		n.ids[h] = id
		return id
	}
	if n.name(first) == ad {
		return first
	}
	if id, ok := n.clash[ad]; ok {
		return id
	}
	if n.clash == nil {
		n.clash = make(map[string]uint32)
	}
	id := n.add(ad)
	n.clash[strings.Clone(ad)] = id
	return id
}

func (n *names) add(ad string) uint32 {
	need := binary.MaxVarintLen64 + len(ad)
	k := len(n.chunks) - 1
	if k < 0 || cap(n.chunks[k])-len(n.chunks[k]) < need {
		n.chunks = append(n.chunks, make([]byte, 0, max(nameChunk, need)))
		k++
	}
	c := n.chunks[k]
	off := len(c)
	c = binary.AppendUvarint(c, uint64(len(ad)))
	n.chunks[k] = append(c, ad...)
	id := uint32(len(n.locs))
	n.locs = append(n.locs, uint64(k)<<32|uint64(off))
	return id
}

// name is the ad of id. It aliases the chunk, whose written bytes never
// change, so it stays valid after the index moves on.
func (n *names) name(id uint32) string {
	loc := n.locs[id]
	c := n.chunks[loc>>32][uint32(loc):]
	l, k := binary.Uvarint(c)
	if l == 0 {
		return ""
	}
	return unsafe.String(&c[k], int(l))
}

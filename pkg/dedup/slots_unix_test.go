//go:build unix

package dedup

import (
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"
	"unsafe"
)

// TestMappedSlots runs growth, lookups, detaching, writing, forgetting and
// release with every slot table mapped outside the heap.
func TestMappedSlots(t *testing.T) {
	old := mmapSlotsFrom
	mmapSlotsFrom = minShardSlots
	t.Cleanup(func() { mmapSlotsFrom = old })
	s := NewSpilling(t.TempDir())
	ids := manyIDs(50000, 20)
	for _, m := range []int64{60, 120, 180} {
		for _, id := range ids {
			if !s.Add(m, id) {
				t.Fatalf("Add(%d, %q) = false", m, id)
			}
		}
	}
	for _, id := range ids[:5000] {
		if s.Add(120, id) || !s.Has(180, id) {
			t.Fatalf("id %q: duplicate not found", id)
		}
	}
	s.Forget(120) // unmaps minute 60
	f := s.Detach(180)
	if !f.Has(120, ids[1]) {
		t.Fatal("detached minute lost an id")
	}
	if _, err := f.WriteFile(120, filepath.Join(t.TempDir(), "120.ids")); err != nil {
		t.Fatal(err)
	}
	f.Release()
	for _, id := range ids[:5000] {
		if !s.Has(180, id) {
			t.Fatalf("open minute lost %q", id)
		}
	}
	s.Close()
}

// TestTablePool allocates and frees blocks of many sizes in a random
// order, writing each full of its own mark: a block must come zeroed,
// hold its mark until freed (no two blocks overlap), and once every block
// is freed the regions merge whole and are released when idle.
func TestTablePool(t *testing.T) {
	p := newTablePool()
	rng := rand.New(rand.NewPCG(1, 2))
	type held struct {
		b    []uint64
		mark uint64
	}
	var live []held
	check := func(h held) {
		for i, v := range h.b {
			if v != h.mark {
				t.Fatalf("block of %d bytes, word %d: %#x, want its mark %#x (overlap)", len(h.b)*8, i, v, h.mark)
			}
		}
	}
	for step := range 3000 {
		if len(live) > 0 && rng.IntN(5) < 2 {
			k := rng.IntN(len(live))
			check(live[k])
			p.free(unsafe.Pointer(&live[k].b[0]), len(live[k].b)*8)
			live[k] = live[len(live)-1]
			live = live[:len(live)-1]
			continue
		}
		size := minBlock << rng.IntN(7) // 64 KiB .. 4 MiB
		if step%500 == 0 {
			size = 2 * regionBytes // mapped on its own
		}
		ptr := p.alloc(size)
		if ptr == nil {
			t.Fatalf("alloc(%d) = nil", size)
		}
		h := held{b: unsafe.Slice((*uint64)(ptr), size/8), mark: uint64(step) + 1}
		for i, v := range h.b {
			if v != 0 {
				t.Fatalf("step %d: new block of %d bytes has %#x at word %d: not zeroed", step, size, v, i)
			}
		}
		for i := range h.b {
			h.b[i] = h.mark
		}
		live = append(live, h)
	}
	for _, h := range live {
		check(h)
		p.free(unsafe.Pointer(&h.b[0]), len(h.b)*8)
	}
	mapped, inUse := p.stats()
	if inUse != 0 {
		t.Fatalf("inUse = %d after freeing everything", inUse)
	}
	if len(p.blocks) != len(p.regions) {
		t.Fatalf("%d free blocks in %d regions: freed buddies did not merge", len(p.blocks), len(p.regions))
	}
	p.releaseIdle(time.Now(), time.Hour)
	if m, _ := p.stats(); m != mapped {
		t.Fatalf("released %d bytes freed less than an hour ago", mapped-m)
	}
	p.releaseIdle(time.Now().Add(2*time.Hour), time.Hour)
	if m, _ := p.stats(); m != 0 || len(p.regions) != 0 || len(p.blocks) != 0 {
		t.Fatalf("after releasing idle regions: %d bytes mapped, %d regions, %d free blocks; want none", m, len(p.regions), len(p.blocks))
	}
}

// TestTablePoolReuse: a freed block is what the next allocation of its
// size gets (no new mapping, so no page faults), cleared; a region with a
// block in use is never released.
func TestTablePoolReuse(t *testing.T) {
	p := newTablePool()
	a := p.alloc(minBlock)
	b := unsafe.Slice((*uint64)(a), minBlock/8)
	b[7] = 42
	keep := p.alloc(minBlock)
	p.free(a, minBlock)
	mapped, _ := p.stats()
	c := p.alloc(minBlock)
	if c != a {
		t.Fatalf("freed block not reused: got %p, freed %p", c, a)
	}
	if b[7] != 0 {
		t.Fatalf("reused block not cleared: word 7 = %d", b[7])
	}
	if m, _ := p.stats(); m != mapped || m != regionBytes {
		t.Fatalf("mapped %d bytes, want one region (%d)", m, regionBytes)
	}
	p.free(c, minBlock)
	p.releaseIdle(time.Now().Add(time.Hour), time.Minute)
	if m, _ := p.stats(); m != regionBytes {
		t.Fatalf("a region with a block in use was released (mapped %d)", m)
	}
	p.free(keep, minBlock)
	p.releaseIdle(time.Now().Add(time.Hour), time.Minute)
	if m, inUse := p.stats(); m != 0 || inUse != 0 {
		t.Fatalf("mapped %d, in use %d after freeing all and releasing; want 0, 0", m, inUse)
	}
}

// TestTablePoolKeep: freed memory beyond the pool's budget is given back
// as it is freed, so what the pool keeps resident stays within the
// budget, and a block given back still comes zeroed when handed out.
func TestTablePoolKeep(t *testing.T) {
	p := newTablePool()
	p.keep = 3 * minBlock
	var held []unsafe.Pointer
	for range 8 {
		ptr := p.alloc(minBlock)
		b := unsafe.Slice((*uint64)(ptr), minBlock/8)
		for i := range b {
			b[i] = 0xdead
		}
		held = append(held, ptr)
	}
	// Free every other block first, so that no two freed blocks merge.
	for i := 0; i < len(held); i += 2 {
		p.free(held[i], minBlock)
		if p.dirty > p.keep {
			t.Fatalf("after freeing block %d the pool keeps %d bytes resident, over its budget of %d", i, p.dirty, p.keep)
		}
	}
	if p.dirty != 3*minBlock {
		t.Fatalf("pool keeps %d bytes resident, want its budget of %d filled", p.dirty, 3*minBlock)
	}
	for range 4 {
		b := unsafe.Slice((*uint64)(p.alloc(minBlock)), minBlock/8)
		for i, v := range b {
			if v != 0 {
				t.Fatalf("reused block has %#x at word %d: not zeroed", v, i)
			}
		}
	}
	if p.dirty != 0 {
		t.Fatalf("all freed blocks taken again, yet %d bytes counted resident and free", p.dirty)
	}
}

//go:build unix

package dedup

import (
	"math/bits"
	"runtime"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// Large slot tables live outside the Go heap: a closing minute's index is
// hundreds of MB that is freed at once, and on the heap it would both
// double the garbage collector's target and linger in RSS until the
// scavenger returns it. Every reference to a table is under its owner's
// lock (Set, Frozen), and a table is freed only once nothing can reach it.
//
// They come from a pool (tablePool) rather than one mapping each: a
// fresh page costs a fault (~12 µs per 4 KiB on the 2-vCPU VM of
// BENCH.md), and a minute's tables are faulted in about twice over as
// shards double: growing was 3 of 35 CPU-s of a 30 s profile at full
// speed, nearly all of it the first write to a new table. The pool hands
// the memory a minute's tables free (the smaller tables a shard outgrows,
// then the whole index once the minute's id file is written) to later
// growth, cleared in user space (a memclr, ~50 µs a MiB) instead of
// faulted again. The price is memory: what was freed stays resident until
// something of its size is needed, up to keepFree; at full speed the pool
// added ~130–150 MiB to the peak RSS of `adclick dev` (1,449 MiB with
// the budget, 1,470 without, against 1,319 without the pool; 180 s at
// ~600k clicks/s, allowed lateness 15 s), for 7 % less CPU and 605–612k
// instead of 544k clicks/s.
//
// Transparent huge pages (MADV_HUGEPAGE on the regions) were tried: random
// reads got ~15 % faster in a test program, but peak RSS rose another
// 46 MiB (2 MiB pages are resident whole), so they are not asked for.

// mmapSlotsFrom is the table size (in slots, 64 KiB) from which tables
// come from the pool; smaller ones stay on the heap. A variable for tests.
var mmapSlotsFrom = 8192

// keepFree is how much freed table memory the pool keeps resident for
// reuse; what is freed beyond it is given back at once (and faulted in
// again when reused). It bounds what the pool adds to the memory that
// --max-open-id-bytes bounds: at full speed, the tables a minute's shards
// outgrow (freed as they double, reusable only by the next minute) came
// to ~190 MiB at the end of the minute. A variable for tests.
var keepFree int64 = 128 << 20

// tables is the process's pool: every Set allocates from it.
var tables = newTablePool()

func allocSlots(n int) []uint64 {
	if n < mmapSlotsFrom {
		return make([]uint64, n)
	}
	p := tables.alloc(n * 8)
	if p == nil {
		return make([]uint64, n) // no address space left: the heap still works
	}
	return unsafe.Slice((*uint64)(p), n)
}

func freeSlots(s []uint64) {
	if len(s) < mmapSlotsFrom {
		return
	}
	tables.free(unsafe.Pointer(&s[0]), len(s)*8)
}

// ReleaseIdle returns to the system the pool's memory that no table has
// used for at least idle: the aggregator calls it on its ticks, so a
// cluster whose load stopped gives its index memory back.
func ReleaseIdle(idle time.Duration) { tables.releaseIdle(time.Now(), idle) }

const (
	regionBytes = 32 << 20 // what the pool maps at a time
	minBlock    = 64 << 10 // the smallest block handed out
	maxOrder    = 9        // regionBytes == minBlock << maxOrder
)

// tablePool is a buddy allocator of power-of-two blocks (64 KiB to
// 32 MiB) over regions mapped anonymously. A freed block merges with its
// buddy when that is free too, so a closed minute's tables become whole
// regions again; a region free for ReleaseIdle's idle time is unmapped.
// Blocks larger than a region are mapped and unmapped one by one.
// Allocation and free happen when a shard doubles or a minute is
// released, hundreds of times a minute, so one mutex is enough.
type tablePool struct {
	mu      sync.Mutex
	lists   [maxOrder + 1][]uintptr // addresses of free blocks, by order
	blocks  map[uintptr]freeBlock   // every free block, by address
	regions map[uintptr]*region     // mapped regions by base address
	mapped  int64
	inUse   int64
	dirty   int64 // bytes of free blocks written since mapped or given back (resident)
	keep    int64 // dirty beyond this is given back as blocks are freed
}

type region struct {
	mem       []byte
	freeSince time.Time // when it last became wholly free; zero while a block of it is in use
}

type freeBlock struct {
	order int8
	clean bool // never written since mapped: zero already
	at    int  // index in lists[order]
}

func newTablePool() *tablePool {
	return &tablePool{blocks: make(map[uintptr]freeBlock), regions: make(map[uintptr]*region), keep: keepFree}
}

// orderOf is the order of the smallest block of at least size bytes.
func orderOf(size int) int {
	if size <= minBlock {
		return 0
	}
	return bits.Len(uint((size - 1) / minBlock)) // ceil(log2(size/minBlock))
}

// alloc returns a zeroed block of at least size bytes, or nil when nothing
// can be mapped.
func (p *tablePool) alloc(size int) unsafe.Pointer {
	k := orderOf(size)
	if k > maxOrder {
		b, err := syscall.Mmap(-1, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
		if err != nil {
			return nil
		}
		p.mu.Lock()
		p.mapped += int64(size)
		p.inUse += int64(size)
		p.mu.Unlock()
		return unsafe.Pointer(&b[0])
	}
	p.mu.Lock()
	j := k
	for j <= maxOrder && len(p.lists[j]) == 0 {
		j++
	}
	var addr uintptr
	var clean bool
	if j > maxOrder {
		base, ok := p.mapRegion()
		if !ok {
			p.mu.Unlock()
			return nil
		}
		addr, clean, j = base, true, maxOrder
	} else {
		addr = p.lists[j][len(p.lists[j])-1]
		clean = p.blocks[addr].clean
		p.remove(addr)
	}
	r := p.regions[addr&^(regionBytes-1)]
	if j == maxOrder {
		r.freeSince = time.Time{}
	}
	for j > k { // split: keep the lower half, free the upper
		j--
		p.insert(addr+uintptr(minBlock)<<j, j, clean)
	}
	p.inUse += int64(minBlock) << k
	p.mu.Unlock()
	off := int(addr & (regionBytes - 1))
	b := r.mem[off : off+minBlock<<k]
	if !clean {
		clear(b) // outside the lock: ~50 µs a MiB
	}
	return unsafe.Pointer(&b[0])
}

// free returns the block at ptr that alloc(size) handed out.
func (p *tablePool) free(ptr unsafe.Pointer, size int) {
	k := orderOf(size)
	if k > maxOrder {
		_ = syscall.Munmap(unsafe.Slice((*byte)(ptr), size))
		p.mu.Lock()
		p.mapped -= int64(size)
		p.inUse -= int64(size)
		p.mu.Unlock()
		return
	}
	addr := uintptr(ptr)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inUse -= int64(minBlock) << k
	for k < maxOrder {
		buddy := addr ^ uintptr(minBlock)<<k // regions are aligned to their size
		if fb, ok := p.blocks[buddy]; !ok || int(fb.order) != k {
			break
		}
		p.remove(buddy)
		addr = min(addr, buddy)
		k++
	}
	clean := false
	if p.dirty+int64(minBlock)<<k > p.keep {
		// Over the budget: give the pages back. The block stays mapped
		// and, on Linux, reads as zeros until written again.
		r := p.regions[addr&^(regionBytes-1)]
		off := int(addr & (regionBytes - 1))
		if syscall.Madvise(r.mem[off:off+minBlock<<k], syscall.MADV_DONTNEED) == nil {
			clean = runtime.GOOS == "linux"
		}
	}
	p.insert(addr, k, clean)
	if k == maxOrder {
		p.regions[addr].freeSince = time.Now()
	}
}

func (p *tablePool) insert(addr uintptr, k int, clean bool) {
	p.blocks[addr] = freeBlock{order: int8(k), clean: clean, at: len(p.lists[k])}
	p.lists[k] = append(p.lists[k], addr)
	if !clean {
		p.dirty += int64(minBlock) << k
	}
}

func (p *tablePool) remove(addr uintptr) {
	fb := p.blocks[addr]
	l := p.lists[fb.order]
	last := l[len(l)-1]
	l[fb.at] = last
	if last != addr {
		moved := p.blocks[last]
		moved.at = fb.at
		p.blocks[last] = moved
	}
	p.lists[fb.order] = l[:len(l)-1]
	delete(p.blocks, addr)
	if !fb.clean {
		p.dirty -= int64(minBlock) << fb.order
	}
}

// mapRegion maps a region aligned to its size (so a block's buddy is found
// by address).
func (p *tablePool) mapRegion() (uintptr, bool) {
	b, err := syscall.Mmap(-1, 0, 2*regionBytes, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return 0, false
	}
	start := uintptr(unsafe.Pointer(&b[0]))
	base := (start + regionBytes - 1) &^ (regionBytes - 1)
	if head := int(base - start); head > 0 {
		_ = syscall.Munmap(b[:head])
	}
	tail := b[int(base-start)+regionBytes:]
	if len(tail) > 0 {
		_ = syscall.Munmap(tail)
	}
	mem := b[int(base-start) : int(base-start)+regionBytes]
	p.regions[base] = &region{mem: mem}
	p.mapped += regionBytes
	return base, true
}

// releaseIdle unmaps the regions wholly free since before now-idle.
func (p *tablePool) releaseIdle(now time.Time, idle time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for base, r := range p.regions {
		if r.freeSince.IsZero() || now.Sub(r.freeSince) < idle {
			continue
		}
		p.remove(base) // wholly free: one block of the largest order
		delete(p.regions, base)
		_ = syscall.Munmap(r.mem)
		p.mapped -= regionBytes
	}
}

func (p *tablePool) stats() (mapped, inUse int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mapped, p.inUse
}

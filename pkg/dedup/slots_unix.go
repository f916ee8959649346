//go:build unix

package dedup

import (
	"syscall"
	"unsafe"
)

// Large slot tables live outside the Go heap: a closing minute's index is
// hundreds of MB that is freed at once, and on the heap it would both
// double the garbage collector's target and linger in RSS until the
// scavenger returns it. They are mapped anonymously and unmapped when the
// shard grows or the bucket is released; every reference to them is under
// the owner's lock (Set, Frozen), and release happens only once nothing
// can reach the bucket any more.
// mmapSlotsFrom is the table size (in slots, 64 KiB) from which tables
// are mapped; smaller ones stay on the heap. A variable for tests.
var mmapSlotsFrom = 8192

func allocSlots(n int) []uint64 {
	if n < mmapSlotsFrom {
		return make([]uint64, n)
	}
	b, err := syscall.Mmap(-1, 0, n*8, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return make([]uint64, n) // no address space left: the heap still works
	}
	if len(b) >= 2*hugePage {
		adviseHuge(b) // its aligned part
	}
	return unsafe.Slice((*uint64)(unsafe.Pointer(&b[0])), n)
}

// hugePage is the size of a transparent huge page (x86-64, arm64 with 4K pages).
const hugePage = 2 << 20

// allocSlotTables returns k tables of n slots each, mapped as one region
// aligned to a huge page and advised to be backed by huge pages: a
// minute's index is hundreds of MB probed at random, and with 4 KiB pages
// nearly every probe also missed the TLB (the first probe of an insert was
// ~17 % of a full-speed profile, on a virtual machine, where a TLB miss
// costs a two-level page walk). Each table is freed on its own by
// freeSlots.
func allocSlotTables(k, n int) [][]uint64 {
	out := make([][]uint64, k)
	size := k * n * 8
	if n < mmapSlotsFrom || n*8%pageSize != 0 {
		for i := range out {
			out[i] = allocSlots(n)
		}
		return out
	}
	b, err := syscall.Mmap(-1, 0, size+hugePage, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		for i := range out {
			out[i] = allocSlots(n)
		}
		return out
	}
	addr := uintptr(unsafe.Pointer(&b[0]))
	off := int((hugePage - addr%hugePage) % hugePage)
	if off > 0 {
		_ = syscall.Munmap(b[:off])
	}
	if tail := b[off+size:]; len(tail) > 0 {
		_ = syscall.Munmap(tail)
	}
	b = b[off : off+size : off+size]
	adviseHuge(b)
	for i := range out {
		out[i] = unsafe.Slice((*uint64)(unsafe.Pointer(&b[i*n*8])), n)
	}
	return out
}

var pageSize = syscall.Getpagesize()

func freeSlots(s []uint64) {
	if len(s) < mmapSlotsFrom {
		return
	}
	// A table that fell back to the heap fails to unmap, harmlessly.
	_ = syscall.Munmap(unsafe.Slice((*byte)(unsafe.Pointer(&s[0])), len(s)*8))
}

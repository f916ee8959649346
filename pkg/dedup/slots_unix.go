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
	return unsafe.Slice((*uint64)(unsafe.Pointer(&b[0])), n)
}

func freeSlots(s []uint64) {
	if len(s) < mmapSlotsFrom {
		return
	}
	// A table that fell back to the heap fails to unmap, harmlessly.
	_ = syscall.Munmap(unsafe.Slice((*byte)(unsafe.Pointer(&s[0])), len(s)*8))
}

//go:build !unix

package dedup

// allocSlots allocates on the heap where there is no mmap.
func allocSlots(n int) []uint64 { return make([]uint64, n) }

func freeSlots([]uint64) {}

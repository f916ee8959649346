//go:build !unix

package dedup

// allocSlots allocates on the heap where there is no mmap.
func allocSlots(n int) []uint64 { return make([]uint64, n) }

func freeSlots([]uint64) {}

func allocSlotTables(k, n int) [][]uint64 {
	out := make([][]uint64, k)
	for i := range out {
		out[i] = make([]uint64, n)
	}
	return out
}

//go:build unix

package dedup

import (
	"path/filepath"
	"testing"
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

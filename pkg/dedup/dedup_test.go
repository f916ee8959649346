package dedup

import (
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"unsafe"
)

func TestAdd(t *testing.T) {
	type op struct {
		minute int64
		id     string
		want   bool
	}
	long := strings.Repeat("x", 300)
	tests := []struct {
		name string
		ops  []op
	}{
		{name: "new then duplicate", ops: []op{{60, "a", true}, {60, "a", false}, {60, "b", true}}},
		{name: "same id in other minute is a separate key", ops: []op{{60, "a", true}, {120, "a", true}, {60, "a", false}, {120, "a", false}}},
		{name: "empty and long ids", ops: []op{{0, "", true}, {0, "", false}, {0, long, true}, {0, long, false}, {0, long[:255], true}, {0, long[:255], false}}},
		{name: "ids that are prefixes of each other", ops: []op{{60, "ab", true}, {60, "a", true}, {60, "abc", true}, {60, "ab", false}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New()
			for i, o := range tt.ops {
				if got := s.Add(o.minute, o.id); got != o.want {
					t.Fatalf("op %d Add(%d, %.10q) = %v, want %v", i, o.minute, o.id, got, o.want)
				}
			}
		})
	}
}

// TestCollisions forces every id onto one hash: the set must stay exact.
func TestCollisions(t *testing.T) {
	old := hashID
	hashID = func(string) uint64 { return 42 }
	t.Cleanup(func() { hashID = old })
	s := New()
	for round := range 2 {
		for i := range 100 {
			if got, want := s.Add(60, fmt.Sprint("id-", i)), round == 0; got != want {
				t.Fatalf("round %d id %d: Add = %v, want %v", round, i, got, want)
			}
		}
	}
	if s.Len() != 100 {
		t.Fatalf("Len = %d, want 100", s.Len())
	}
}

// TestManyIDs crosses arena chunk boundaries and compares with a map.
func TestManyIDs(t *testing.T) {
	s := New()
	truth := map[string]bool{}
	for i := range 20000 {
		id := fmt.Sprintf("click-%d-%s", i%15000, strings.Repeat("z", i%50))
		want := !truth[id]
		truth[id] = true
		if got := s.Add(0, id); got != want {
			t.Fatalf("Add(%q) = %v, want %v", id, got, want)
		}
	}
	if s.Len() != len(truth) {
		t.Fatalf("Len = %d, want %d", s.Len(), len(truth))
	}
}

func TestForget(t *testing.T) {
	s := New()
	for m := int64(0); m < 5*60; m += 60 {
		s.Add(m, "a")
		s.Add(m, "b")
	}
	if got := s.Forget(180); got != 6 {
		t.Fatalf("Forget dropped %d ids, want 6", got)
	}
	if s.Len() != 4 || s.Minutes() != 2 {
		t.Fatalf("after Forget: Len %d Minutes %d, want 4 and 2", s.Len(), s.Minutes())
	}
	// A forgotten minute starts empty again; a kept one still remembers.
	if !s.Add(120, "a") {
		t.Fatal("id of a forgotten minute still remembered")
	}
	if s.Add(180, "a") {
		t.Fatal("id of a kept minute forgotten")
	}
}

func uuidLike(i int) string { return fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i*7919) }

// BenchmarkDedup measures Add of new 36-byte ids (UUID-sized), a new minute
// every million ids with the oldest minute forgotten, as in steady state.
func BenchmarkDedup(b *testing.B) {
	const perMinute = 1 << 20
	ids := make([]string, perMinute)
	for i := range ids {
		ids[i] = uuidLike(i)
	}
	s := New()
	b.ResetTimer()
	for i := range b.N {
		m := int64(i / perMinute)
		if i%perMinute == 0 {
			s.Forget((m - 1) * 60)
		}
		s.Add(m*60, ids[i%perMinute])
	}
}

// TestMemoryPerID reports the heap retained per remembered id (run with -v);
// it fails only if the figure is far above what doc.go states.
func TestMemoryPerID(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates ~25 MB")
	}
	const n = 1 << 18
	ids := make([]string, n)
	for i := range ids {
		ids[i] = uuidLike(i)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	s := New()
	for _, id := range ids {
		s.Add(0, id)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("%.1f bytes per 36-byte id (%d ids)", per, s.Len())
	if per > 100 {
		t.Errorf("%.1f bytes per id, doc.go promises under 100", per)
	}
	runtime.KeepAlive(ids)
	runtime.KeepAlive(s)

	// Spilling: what stays in memory is the index and one chunk.
	sp := NewSpilling(t.TempDir())
	defer sp.Close()
	for _, id := range ids {
		sp.Add(0, id)
	}
	spPer := float64(sp.Bytes()-chunkSize) / n
	t.Logf("spilling: %.1f bytes of memory per id besides one 1 MiB chunk (%d ids)", spPer, sp.Len())
	if spPer > 30 {
		t.Errorf("spilling keeps %.1f bytes per id in memory, doc.go promises ~13 to 26", spPer)
	}
}

// TestHasAndEachBefore: Has agrees with Add, and EachBefore hands out
// exactly the ids of the minutes before the bound, also collided and long ones.
func TestHasAndEachBefore(t *testing.T) {
	old := hashID
	hashID = func(s string) uint64 { return uint64(len(s) % 3) } // many collisions
	t.Cleanup(func() { hashID = old })
	s := New()
	want := map[string]bool{}
	long := strings.Repeat("y", 300)
	for i, id := range []string{"", "a", "bb", "ccc", "dddd", long} {
		for _, m := range []int64{60, 120, 180} {
			s.Add(m, id)
			if m < 180 {
				want[fmt.Sprintf("%d/%s", m, id)] = true
			}
		}
		if !s.Has(120, id) || s.Has(240, id) {
			t.Fatalf("id %d: Has disagrees with Add", i)
		}
	}
	if s.Has(60, "zz") {
		t.Fatal("Has of an id never added")
	}
	got := map[string]bool{}
	f := s.Detach(180)
	for _, m := range f.Minutes() {
		if err := f.EachIn(m, func(id string) { got[fmt.Sprintf("%d/%s", m, id)] = true }); err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("Detach and EachIn gave %d ids, want %d", len(got), len(want))
	}
	for k := range want {
		if !got[k] {
			t.Fatalf("Detach and EachIn missed %.20q", k)
		}
	}
}

// TestAddCopiesID checks that the set keeps its own copy of every id, also
// of the long ones kept aside (overflow): callers pass ids that alias a
// request's buffer, which is reused after the call.
func TestAddCopiesID(t *testing.T) {
	s := New()
	for _, n := range []int{8, maxArenaID + 1} {
		buf := []byte(strings.Repeat("a", n))
		id := unsafe.String(&buf[0], len(buf))
		if !s.Add(60, id) {
			t.Fatalf("id of %d bytes: not new", n)
		}
		for i := range buf {
			buf[i] = 'b'
		}
		if !s.Has(60, strings.Repeat("a", n)) || s.Has(60, strings.Repeat("b", n)) {
			t.Fatalf("id of %d bytes: the set kept the caller's buffer, not a copy", n)
		}
	}
}

// BenchmarkDedupFullMinute fills a minute with 12 million new ids, about
// what one aggregator holds per minute at 400k clicks/s over two
// aggregators, and reports the time per Add (ns/id): unlike
// BenchmarkDedup's minutes, such a table fits no cache nor the TLB's reach,
// as in production, and it grows from empty as a real minute does.
func BenchmarkDedupFullMinute(b *testing.B) {
	const perMinute = 12 << 20
	var id [36]byte
	copy(id[:], "00000000-0000-4000-8000-000000000000")
	hexAt := [16]int{19, 20, 21, 22, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35}
	s := New()
	defer s.Close()
	b.ResetTimer()
	for m := range int64(b.N) {
		s.Forget(m * 60)
		for i := range perMinute {
			h := uint64(int(m)*perMinute+i) * 0x9e3779b97f4a7c15
			for j, p := range hexAt {
				id[p] = "0123456789abcdef"[h>>(4*j)&15]
			}
			if !s.Add(m*60, unsafe.String(&id[0], len(id))) {
				b.Fatalf("id %d of minute %d taken for a duplicate", i, m)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*perMinute), "ns/id")
}

// TestGrowthStaggered: shards fill alike (ids hash uniformly), so if they
// all doubled at the same fill a whole minute's index would be rebuilt and
// faulted in at once. Each shard must double at its own fill, between 1/2
// and 3/4 of its table, and no table may get fuller than 3/4.
func TestGrowthStaggered(t *testing.T) {
	const size = 4096 // the doubling watched: 4096 -> 8192 slots
	b := newBucket(0, "", &errBox{})
	grewAt := make([]int, nShards) // ids in the bucket when shard i reached 2*size
	left := nShards
	for i := 0; left > 0; i++ {
		id := uuidLike(i)
		if !b.add(id, hashID(id)) {
			t.Fatalf("id %d reported as a duplicate", i)
		}
		si, _ := split(id)
		s := &b.shards[si]
		if s.n*4 > len(s.slots)*3 {
			t.Fatalf("shard %d holds %d ids in %d slots: fuller than 3/4", si, s.n, len(s.slots))
		}
		if grewAt[si] == 0 && len(s.slots) >= 2*size {
			grewAt[si] = b.n
			left--
		}
	}
	lo, hi := slices.Min(grewAt), slices.Max(grewAt)
	t.Logf("shards doubled to %d slots between %d and %d ids", 2*size, lo, hi)
	if spread := float64(hi-lo) / float64(hi); spread < 0.25 {
		t.Errorf("shards doubled within %.0f%% of each other (%d to %d ids): growth is not staggered", 100*spread, lo, hi)
	}
}

// TestPrefetch: Prefetch reads the slot an add of the same hash starts
// from (occupied once the id is in: linear probing puts it there or past
// it), for a minute it never creates, and AddHashed is Add.
func TestPrefetch(t *testing.T) {
	s := New()
	if v := s.Prefetch(60, HashID("a")); v != 0 {
		t.Fatalf("Prefetch on an empty set = %#x, want 0", v)
	}
	if s.Minutes() != 0 {
		t.Fatalf("Prefetch created a minute")
	}
	for i := range 5000 {
		id := uuidLike(i)
		if !s.AddHashed(60, id, HashID(id)) {
			t.Fatalf("id %d reported as a duplicate", i)
		}
	}
	for i := range 5000 {
		id := uuidLike(i)
		if s.Prefetch(60, HashID(id)) == 0 {
			t.Fatalf("Prefetch of added id %d read an empty slot", i)
		}
		if s.Add(60, id) || s.AddHashed(60, id, HashID(id)) {
			t.Fatalf("id %d added twice", i)
		}
	}
	if v := s.Prefetch(120, HashID(uuidLike(1))); v != 0 || s.Minutes() != 1 {
		t.Fatalf("Prefetch of another minute = %#x with %d minutes, want 0 and 1", v, s.Minutes())
	}
}

package ring

import (
	"fmt"
	"math"
	"testing"

	"github.com/buraksezer/consistent"
)

func members(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("agg-%d", i)
	}
	return out
}

func adIDs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("ad-%d", i)
	}
	return out
}

func TestEmpty(t *testing.T) {
	r := New(nil)
	if r.Len() != 0 {
		t.Fatalf("Len = %d", r.Len())
	}
	if _, ok := r.Owner("ad"); ok {
		t.Fatal("empty ring has an owner")
	}
	if r.Index("ad") != -1 {
		t.Fatal("empty ring Index != -1")
	}
}

// TestMatchesLibrary checks the precomputed table against the library's own
// LocateKey, the ground truth for the partition-to-member assignment.
func TestMatchesLibrary(t *testing.T) {
	ms := members(5)
	r := New(ms)
	nodes := []consistent.Member{}
	for _, m := range ms {
		nodes = append(nodes, node(m))
	}
	c := consistent.New(nodes, consistent.Config{Hasher: hasher{}, PartitionCount: PartitionCount, ReplicationFactor: ReplicationFactor, Load: LoadBound})
	for _, ad := range adIDs(20000) {
		got, ok := r.Owner(ad)
		if !ok || got != c.LocateKey([]byte(ad)).String() {
			t.Fatalf("Owner(%q) = %v, library says %v", ad, got, c.LocateKey([]byte(ad)))
		}
	}
}

func TestDeterministic(t *testing.T) {
	ms := members(7)
	rev := append([]string(nil), ms...)
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	a, b := New(ms), New(append(rev, ms[0])) // other order, a duplicate
	if b.Len() != 7 {
		t.Fatalf("duplicate kept: Len = %d", b.Len())
	}
	for _, ad := range adIDs(10000) {
		x, _ := a.Owner(ad)
		y, _ := b.Owner(ad)
		if x != y {
			t.Fatalf("Owner(%q) differs by input order: %v vs %v", ad, x, y)
		}
	}
}

func TestEveryMemberGetsAShare(t *testing.T) {
	for _, n := range []int{1, 2, 3, 10, 50} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			r := New(members(n))
			ads := adIDs(100000)
			counts := map[string]int{}
			for _, ad := range ads {
				m, ok := r.Owner(ad)
				if !ok {
					t.Fatal("no owner")
				}
				counts[m]++
			}
			if len(counts) != n {
				t.Fatalf("%d of %d members own ads", len(counts), n)
			}
			mean := float64(len(ads)) / float64(n)
			for id, c := range counts {
				// The load bound caps a member at ceil(1.25 * partitions/n)
				// partitions; allow for uneven partition sizes on top.
				if float64(c) > 1.35*mean {
					t.Errorf("%s owns %d ads, mean %.0f", id, c, mean)
				}
				// Nothing bounds the low side: with 20 virtual nodes a member
				// of 50 can hold half the mean share. Underload costs little.
				if float64(c) < 0.3*mean {
					t.Errorf("%s owns only %d ads, mean %.0f", id, c, mean)
				}
			}
		})
	}
}

// TestRemoveMovesMostlyItsKeys measures the fraction of ads that change owner
// when one member leaves (or joins). Ideal consistent hashing moves 1/n; the
// load bound moves a few more partitions to rebalance.
func TestRemoveMovesMostlyItsKeys(t *testing.T) {
	const n = 10
	ms := members(n)
	ads := adIDs(100000)
	before := New(ms)
	for _, gone := range []int{0, 4, 9} {
		rest := append(append([]string(nil), ms[:gone]...), ms[gone+1:]...)
		after := New(rest)
		var owned, movedOther int
		for _, ad := range ads {
			b, _ := before.Owner(ad)
			a, _ := after.Owner(ad)
			if a == ms[gone] {
				t.Fatalf("removed member still owns %q", ad)
			}
			if b == ms[gone] {
				owned++
			} else if a != b {
				movedOther++
			}
		}
		moved := float64(owned+movedOther) / float64(len(ads))
		other := float64(movedOther) / float64(len(ads))
		t.Logf("remove %s: its share %.3f, total moved %.3f, moved between surviving members %.3f",
			ms[gone], float64(owned)/float64(len(ads)), moved, other)
		if other > 0.10 {
			t.Errorf("%.3f of ads moved between surviving members; want < 0.10", other)
		}
		if math.Abs(moved-1.0/n) > 0.15 {
			t.Errorf("moved %.3f of ads, want about %.3f", moved, 1.0/n)
		}
	}
}

func TestOwnerDoesNotAllocate(t *testing.T) {
	r := New(members(8))
	ads := adIDs(100)
	allocs := testing.AllocsPerRun(100, func() {
		for _, ad := range ads {
			if _, ok := r.Owner(ad); !ok {
				t.Fatal("no owner")
			}
		}
	})
	if allocs != 0 {
		t.Fatalf("Owner allocates %v per 100 calls", allocs)
	}
}

func BenchmarkRingOwner(b *testing.B) {
	r := New(members(16))
	ads := adIDs(1 << 16)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, ok := r.Owner(ads[i&(len(ads)-1)]); !ok {
			b.Fatal("no owner")
		}
		i++
	}
}

func BenchmarkNew(b *testing.B) {
	ms := members(32)
	b.ReportAllocs()
	for b.Loop() {
		New(ms)
	}
}

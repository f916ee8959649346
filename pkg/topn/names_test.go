package topn

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestNames interns random ads, with repeats, under hashes that clash
// nowhere, often, and always, and compares every id and name with a plain
// map.
func TestNames(t *testing.T) {
	hashes := map[string]func(string) uint64{
		"xxhash": nil,
		"few":    func(s string) uint64 { return uint64(len(s) % 3) },
		"one":    func(string) uint64 { return 7 },
	}
	for name, h := range hashes {
		t.Run(name, func(t *testing.T) {
			n := newNames()
			if h != nil {
				n.hash = h
			}
			want := map[string]uint32{}
			var order []string
			rng := rand.New(rand.NewPCG(1, 2))
			count := 20000
			if name == "one" {
				count = 2000 // every lookup compares against the first ad, then the clash map
			}
			buf := []byte{}
			for i := 0; i < count; i++ {
				var ad string
				if len(order) > 0 && rng.IntN(3) == 0 {
					ad = order[rng.IntN(len(order))]
				} else {
					ad = fmt.Sprintf("ad-%d", rng.IntN(count))
				}
				// The caller's bytes are reused: the interned copy must not alias them.
				buf = append(buf[:0], ad...)
				id := n.intern(string(buf))
				clear(buf)
				if w, ok := want[ad]; ok {
					if id != w {
						t.Fatalf("intern(%q) = %d, first interned as %d", ad, id, w)
					}
					continue
				}
				if int(id) != len(order) {
					t.Fatalf("intern(%q) = %d for a new ad; want the next id %d", ad, id, len(order))
				}
				want[ad] = id
				order = append(order, ad)
			}
			if n.len() != len(order) {
				t.Fatalf("len() = %d; want %d", n.len(), len(order))
			}
			for ad, w := range want {
				if id, ok := n.lookup(ad); !ok || id != w {
					t.Fatalf("lookup(%q) = %d, %v; want %d", ad, id, ok, w)
				}
			}
			for id, ad := range order {
				if got := n.name(uint32(id)); got != ad {
					t.Fatalf("name(%d) = %q; want %q", id, got, ad)
				}
			}
			for _, ad := range []string{"", "ad-", "ad-x", "nope"} {
				if id, ok := n.lookup(ad); ok {
					t.Fatalf("lookup(%q) = %d, found; it was never interned", ad, id)
				}
			}
		})
	}
}

// TestNamesLong puts an ad longer than a chunk and the empty ad between
// short ones.
func TestNamesLong(t *testing.T) {
	n := newNames()
	long := strings.Repeat("x", nameChunk+5)
	ads := []string{"a", long, "", "b", strings.Repeat("y", nameChunk-3), "c"}
	for i, ad := range ads {
		if id := n.intern(ad); id != uint32(i) {
			t.Fatalf("intern(ad %d) = %d", i, id)
		}
	}
	for i, ad := range ads {
		if got := n.name(uint32(i)); got != ad {
			t.Fatalf("name(%d) has %d bytes; want %d", i, len(got), len(ad))
		}
		if id, ok := n.lookup(ad); !ok || id != uint32(i) {
			t.Fatalf("lookup(ad %d) = %d, %v", i, id, ok)
		}
	}
}

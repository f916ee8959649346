package ring

import (
	"fmt"
	"testing"

	"github.com/adclick/adclick/pkg/membership"
)

func TestVersionsRouteByMinute(t *testing.T) {
	const joined = 6000
	base := []membership.Member{{ID: "a"}, {ID: "b"}}
	grown := append(base[:2:2], membership.Member{ID: "c", OwnsFrom: joined})
	v := NewVersions(grown)
	before, after := New(base), New(grown)
	moved := 0
	for i := 0; i < 5000; i++ {
		ad := fmt.Sprintf("ad-%d", i)
		// Before the join minute the new member owns nothing.
		if got, want := v.Members()[v.IndexAt(ad, joined-60)].ID, mustOwner(t, before, ad); got != want {
			t.Fatalf("%s before the join: %s, want %s", ad, got, want)
		}
		got := v.Members()[v.IndexAt(ad, joined)].ID
		if want := mustOwner(t, after, ad); got != want {
			t.Fatalf("%s from the join: %s, want %s", ad, got, want)
		}
		if got == "c" {
			moved++
		}
	}
	if moved == 0 {
		t.Fatal("the new member owns nothing after joining")
	}
	if v.IndexAt("x", -1e9) != 0 && v.IndexAt("x", -1e9) != 1 {
		t.Fatal("bootstrap members own every minute")
	}
	late := NewVersions([]membership.Member{{ID: "z", OwnsFrom: 600}})
	if late.IndexAt("x", 540) != -1 || late.IndexAt("x", 600) != 0 {
		t.Fatal("a minute before every member's OwnsFrom has no owner")
	}
	if NewVersions(nil).IndexAt("x", 0) != -1 {
		t.Fatal("empty versions route nothing")
	}
}

func mustOwner(t *testing.T, r *Ring, ad string) string {
	t.Helper()
	m, ok := r.Owner(ad)
	if !ok {
		t.Fatal("empty ring")
	}
	return m.ID
}

func BenchmarkVersionsIndexAt(b *testing.B) {
	v := NewVersions([]membership.Member{{ID: "a"}, {ID: "b"}, {ID: "c", OwnsFrom: 6000}})
	ads := make([]string, 1024)
	for i := range ads {
		ads[i] = fmt.Sprintf("ad-%d", i)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		v.IndexAt(ads[i&1023], 6000)
	}
}

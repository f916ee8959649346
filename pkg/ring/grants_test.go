package ring

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

func split(t *testing.T, h *History, ad string, k int, at time.Time) (*History, *Grant) {
	t.Helper()
	next, g, err := h.Split(ad, k, OriginAuto, at)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckAppendOnly(h, next, at); err != nil {
		t.Fatalf("split is not append-only: %v", err)
	}
	return next, g
}

// roundTrip stores and loads h as etcd would, so a test routes by what
// another router would decode.
func roundTrip(t *testing.T, h *History) *History {
	t.Helper()
	b, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	out, err := decode(b)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestSplitRoutesByClickID: before the grant's minute the ad has its one
// owner; from it every copy of a click reaches the same piece, the pieces
// take about 1/k each, and the owner at From is the first piece.
func TestSplitRoutesByClickID(t *testing.T) {
	h := Founding([]string{"a", "b", "c", "d"}, t0, DefaultViewTTL)
	h2, g := split(t, h, "ad-hot", 3, t0)
	if g.From != h.EarliestChange(t0) || g.Fanout != 3 || len(g.Nodes) != 3 {
		t.Fatalf("grant %+v, want 3 nodes from %d", g, h.EarliestChange(t0))
	}
	v, other := NewVersions(h2), NewVersions(roundTrip(t, h2))
	if got := v.IDs()[v.IndexAt("ad-hot", g.From)]; got != g.Nodes[0] {
		t.Fatalf("Nodes[0] = %s, want the owner %s", g.Nodes[0], got)
	}
	if again := h.SplitNodes("ad-hot", g.From, 3); !slices.Equal(again, g.Nodes) {
		t.Fatalf("SplitNodes not deterministic: %v then %v", g.Nodes, again)
	}
	per := map[string]int{}
	const n = 30000
	for i := range n {
		id := fmt.Sprintf("click-%d", i)
		if o := v.OwnerAt("ad-hot", id, g.From-60); o != v.IndexAt("ad-hot", g.From-60) {
			t.Fatalf("minute before the grant: %s routed to %s", id, v.IDs()[o])
		}
		o := v.OwnerAt("ad-hot", id, g.From)
		if o2 := other.OwnerAt("ad-hot", id, g.From+3600); o2 != o || v.OwnerAt("ad-hot", id, g.From) != o {
			t.Fatalf("%s: copies routed to %d and %d", id, o, o2)
		}
		per[v.IDs()[o]]++
		if v.OwnerAt("ad-7", id, g.From) != v.IndexAt("ad-7", g.From) {
			t.Fatal("an ad without a grant is split")
		}
	}
	for _, node := range g.Nodes {
		if c := per[node]; c < n/3-n/30 || c > n/3+n/30 {
			t.Errorf("piece %s took %d of %d clicks, want about a third", node, c, n)
		}
	}
	if len(per) != 3 {
		t.Fatalf("clicks went to %v, want only the grant's nodes %v", per, g.Nodes)
	}
	if !v.Split("ad-hot", g.From) || v.Split("ad-hot", g.From-60) || v.Split("ad-7", g.From) {
		t.Fatal("Split answers wrong")
	}
}

// TestUnsplitEndsAhead: the end takes effect at a minute ahead; minutes
// before it stay split, minutes from it have the one owner again.
func TestUnsplitEndsAhead(t *testing.T) {
	h := Founding([]string{"a", "b", "c"}, t0, DefaultViewTTL)
	h, g := split(t, h, "ad-hot", 3, t0)
	later := t0.Add(10 * time.Minute)
	h2, until, err := h.Unsplit("ad-hot", later)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckAppendOnly(h, h2, later); err != nil {
		t.Fatal(err)
	}
	if until != h.EarliestChange(later) {
		t.Fatalf("until %d, want the earliest change %d", until, h.EarliestChange(later))
	}
	v := NewVersions(h2)
	if !v.Split("ad-hot", until-60) || v.Split("ad-hot", until) {
		t.Fatal("the grant does not end at until")
	}
	if _, _, err := h2.Unsplit("ad-hot", later); !errors.Is(err, ErrNoGrant) {
		t.Fatalf("second unsplit: %v", err)
	}
	// A new grant of the ad starts no earlier than the old one's end.
	h3, g2 := split(t, h2, "ad-hot", 2, later)
	if g2.From < until || len(h3.Grants) != 2 {
		t.Fatalf("second grant from %d, before the first one's end %d", g2.From, until)
	}
	_ = g
}

// TestGrantsAppendOnly: what CheckAppendOnly refuses.
func TestGrantsAppendOnly(t *testing.T) {
	h := Founding([]string{"a", "b", "c"}, t0, DefaultViewTTL)
	h, _ = split(t, h, "ad-hot", 3, t0)
	now := t0.Add(5 * time.Minute)
	earliest := h.EarliestChange(now)
	cases := []struct {
		name   string
		change func(n *History)
	}{
		{"removed", func(n *History) { n.Grants = nil }},
		{"nodes rewritten", func(n *History) {
			n.Grants[0].Nodes[1], n.Grants[0].Nodes[2] = n.Grants[0].Nodes[2], n.Grants[0].Nodes[1]
		}},
		{"from moved", func(n *History) { n.Grants[0].From += 60 }},
		{"ends in the past", func(n *History) { n.Grants[0].Until = earliest - 60 }},
		{"second open grant", func(n *History) {
			n.Grants = append(n.Grants, Grant{AdID: "ad-hot", Fanout: 2, Nodes: []string{"a", "b"}, From: earliest, Origin: OriginOperator})
		}},
		{"new grant in the past", func(n *History) {
			n.Grants = append(n.Grants, Grant{AdID: "ad-2", Fanout: 2, Nodes: []string{"a", "b"}, From: earliest - 60, Origin: OriginAuto})
		}},
		{"not a member", func(n *History) {
			n.Grants = append(n.Grants, Grant{AdID: "ad-2", Fanout: 2, Nodes: []string{"a", "z"}, From: earliest, Origin: OriginAuto})
		}},
		{"fan-out mismatch", func(n *History) {
			n.Grants = append(n.Grants, Grant{AdID: "ad-2", Fanout: 3, Nodes: []string{"a", "b"}, From: earliest, Origin: OriginAuto})
		}},
		{"one node", func(n *History) {
			n.Grants = append(n.Grants, Grant{AdID: "ad-2", Fanout: 1, Nodes: []string{"a"}, From: earliest, Origin: OriginAuto})
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := h.Clone()
			tc.change(n)
			if err := CheckAppendOnly(h, n, now); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	ended, _, err := h.Unsplit("ad-hot", now)
	if err != nil {
		t.Fatal(err)
	}
	moved := ended.Clone()
	moved.Grants[0].Until += 60
	if err := CheckAppendOnly(ended, moved, now); err == nil {
		t.Fatal("a recorded end moved")
	}
	if _, _, err := h.Split("ad-hot", 2, OriginOperator, now); !errors.Is(err, ErrGrantOpen) {
		t.Fatalf("split of a split ad: %v", err)
	}
}

// TestDrainEndsGrants: draining a node ends every open grant holding it at
// the drain's cut-over, in the same change; later splits skip it.
func TestDrainEndsGrants(t *testing.T) {
	h := Founding([]string{"a", "b", "c"}, t0, DefaultViewTTL)
	h, g := split(t, h, "ad-hot", 3, t0)
	now := t0.Add(5 * time.Minute)
	drained, cut, err := h.Drain(g.Nodes[1], g.Nodes[0], now)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckAppendOnly(h, drained, now); err != nil {
		t.Fatalf("drain with an open grant: %v", err)
	}
	if got := drained.Grants[0].Until; got != cut {
		t.Fatalf("grant ends at %d, want the cut-over %d", got, cut)
	}
	again, g2 := split(t, drained, "ad-hot", 3, now)
	if slices.Contains(g2.Nodes, g.Nodes[1]) || g2.Fanout != 2 || g2.From < cut {
		t.Fatalf("split after the drain: %+v", g2)
	}
	v := NewVersions(again)
	for i := range 1000 {
		if o := v.IDs()[v.OwnerAt("ad-hot", fmt.Sprint(i), cut)]; o == g.Nodes[1] {
			t.Fatalf("a click of the cut-over minute routed to the drained %s", o)
		}
	}
	// Without ending the grant the drain would be refused.
	bad := drained.Clone()
	bad.Grants[0].Until = 0
	if err := CheckAppendOnly(h, bad, now); err == nil {
		t.Fatal("a drain leaving an open grant on the drained node was accepted")
	}
}

func BenchmarkVersionsOwnerAtGrant(b *testing.B) {
	h := Founding([]string{"a", "b", "c"}, t0, DefaultViewTTL)
	h, g, _ := h.Split("ad-1", 3, OriginAuto, t0)
	v := NewVersions(h)
	ads := make([]string, 1024)
	ids := make([]string, 1024)
	for i := range ads {
		ads[i] = fmt.Sprintf("ad-%d", i%8) // one in 8 clicks of the split ad
		ids[i] = fmt.Sprintf("click-%d", i)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		v.OwnerAt(ads[i&1023], ids[i&1023], g.From)
	}
}

func BenchmarkVersionsOwnerAtNoGrant(b *testing.B) {
	h := Founding([]string{"a", "b", "c"}, t0, DefaultViewTTL)
	v := NewVersions(h)
	ads := make([]string, 1024)
	for i := range ads {
		ads[i] = fmt.Sprintf("ad-%d", i)
	}
	m := t0.Unix() - t0.Unix()%60
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		v.OwnerAt(ads[i&1023], ads[i&1023], m)
	}
}

package ring

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

var t0 = time.Date(2026, 5, 1, 10, 0, 30, 0, time.UTC)

func ownerAt(v *Versions, ad string, minute int64) string {
	i := v.IndexAt(ad, minute)
	if i < 0 {
		return ""
	}
	return v.IDs()[i]
}

// TestJoinTakesEffectOnlyAhead: a join never changes the owner of a minute
// a click may already have been accepted for, and from its era on the new
// ring routes.
func TestJoinTakesEffectOnlyAhead(t *testing.T) {
	h := Founding([]string{"a", "b"}, t0, DefaultViewTTL)
	grown, from, err := h.Join("c", t0)
	if err != nil {
		t.Fatal(err)
	}
	// now + 60 s future clicks + 30 s TTL + 5 s skew + 10 s margin = 10:02:15 -> 10:03.
	if want := time.Date(2026, 5, 1, 10, 3, 0, 0, time.UTC).Unix(); from != want {
		t.Fatalf("join from %s, want %s", time.Unix(from, 0).UTC(), time.Unix(want, 0).UTC())
	}
	if latest := t0.Add(FutureLimit).Unix(); from <= latest {
		t.Fatalf("join from %d is not after the latest minute a click may hold now (%d)", from, latest)
	}
	before, after := NewVersions(h), NewVersions(grown)
	want := NewVersions(Founding([]string{"a", "b", "c"}, t0, DefaultViewTTL))
	moved := 0
	for i := 0; i < 5000; i++ {
		ad := fmt.Sprintf("ad-%d", i)
		for _, m := range []int64{from - 24*3600, from - 120, from - 60} {
			if got, w := ownerAt(after, ad, m), ownerAt(before, ad, m); got != w {
				t.Fatalf("%s minute %d before the join: %s, want %s", ad, m, got, w)
			}
		}
		got := ownerAt(after, ad, from)
		if w := ownerAt(want, ad, from); got != w {
			t.Fatalf("%s from the join: %s, want %s", ad, got, w)
		}
		if got == "c" {
			moved++
		}
	}
	if moved < 1000 || moved > 2500 {
		t.Fatalf("the new member owns %d of 5000 ads after joining; want about a third", moved)
	}
	if _, _, err := grown.Join("c", t0); !errors.Is(err, ErrAlreadyMember) {
		t.Fatalf("second join: %v", err)
	}
	// A second change proposed at once goes after the first.
	g2, from2, err := grown.Join("d", t0)
	if err != nil || from2 != from+60 || len(g2.Eras) != 3 {
		t.Fatalf("second join from %d (%v), want %d", from2, err, from+60)
	}
}

func TestDrainAndHandOver(t *testing.T) {
	h := Founding([]string{"a", "b", "c"}, t0, DefaultViewTTL)
	if _, _, err := h.Drain("a", "a", t0); err == nil {
		t.Fatal("a node is not its own heir")
	}
	if _, _, err := h.Drain("x", "a", t0); !errors.Is(err, ErrNotActive) {
		t.Fatalf("drain of a stranger: %v", err)
	}
	d, cut, err := h.Drain("b", "a", t0)
	if err != nil {
		t.Fatal(err)
	}
	if s := d.State("b", t0); s != StateDraining {
		t.Fatalf("state %s", s)
	}
	if s := d.State("a", t0); s != StateActive {
		t.Fatalf("heir state %s", s)
	}
	pending := NewVersions(d)
	ho, err := d.HandOver("b", false)
	if err != nil {
		t.Fatal(err)
	}
	if s := ho.State("b", t0); s != StateDrained {
		t.Fatalf("state after hand-over %s", s)
	}
	if err := CheckAppendOnly(d, ho, t0.Add(time.Hour)); err != nil {
		t.Fatalf("a hand-over is an allowed change: %v", err)
	}
	done := NewVersions(ho)
	sawB := 0
	for i := 0; i < 3000; i++ {
		ad := fmt.Sprintf("ad-%d", i)
		old := ownerAt(pending, ad, cut-60)
		if old == "b" {
			sawB++
			// Until the hand-over b keeps its minutes; then its heir has them.
			if got := ownerAt(done, ad, cut-60); got != "a" {
				t.Fatalf("%s before the cut-over after hand-over: %s, want the heir a", ad, got)
			}
		} else if got := ownerAt(done, ad, cut-60); got != old {
			t.Fatalf("%s: hand-over moved a minute of %s to %s", ad, old, got)
		}
		if got := ownerAt(pending, ad, cut); got == "b" {
			t.Fatalf("%s: b owns a minute from its cut-over", ad)
		}
	}
	if sawB == 0 {
		t.Fatal("b owned nothing")
	}
	// The heir drains too: b's minutes follow the chain to the next heir.
	if got := d.HeirOfPending("a"); len(got) != 1 || got[0] != "b" {
		t.Fatalf("a is heir of pending drains %v, want [b]", got)
	}
	if got := ho.HeirOfPending("a"); len(got) != 0 {
		t.Fatalf("after the hand-over a is still heir of %v", got)
	}
	d2, _, err := ho.Drain("a", "c", t0.Add(10*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	ho2, _ := d2.HandOver("a", false)
	v := NewVersions(ho2)
	for i := 0; i < 3000; i++ {
		ad := fmt.Sprintf("ad-%d", i)
		if got := ownerAt(v, ad, cut-60); got != "c" {
			t.Fatalf("%s before both cut-overs: %s, want c", ad, got)
		}
	}
	// b joins again later: its new minutes are its own, its old ones stay with the heirs.
	back, from, err := ho2.Join("b", t0.Add(20*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	vb := NewVersions(back)
	sawB = 0
	for i := 0; i < 3000; i++ {
		ad := fmt.Sprintf("ad-%d", i)
		if ownerAt(vb, ad, from) == "b" {
			sawB++
		}
		if got := ownerAt(vb, ad, cut-60); got != "c" {
			t.Fatalf("%s: a rejoin moved an old minute to %s", ad, got)
		}
	}
	if sawB == 0 {
		t.Fatal("rejoined b owns nothing")
	}
	last := Founding([]string{"z"}, t0, DefaultViewTTL)
	if _, _, err := last.Drain("z", "z", t0); !errors.Is(err, ErrLastNode) {
		t.Fatalf("drain of the last node: %v", err)
	}
}

func TestCheckAppendOnly(t *testing.T) {
	h := Founding([]string{"a", "b"}, t0, DefaultViewTTL)
	j, _, _ := h.Join("c", t0)
	later := t0.Add(5 * time.Minute)
	cases := map[string]func() *History{
		"rewrites an era": func() *History {
			x := j.Clone()
			x.Eras[0].Aggregators = []string{"a"}
			return x
		},
		"removes an era": func() *History { x := j.Clone(); x.Eras = x.Eras[:1]; return x },
		"takes effect too soon": func() *History {
			x := j.Clone()
			x.Eras = append(x.Eras, Era{From: x.Eras[1].From + 60, Aggregators: []string{"a"}})
			return x
		},
		"not on a minute": func() *History {
			x := j.Clone()
			x.Eras = append(x.Eras, Era{From: later.Unix() + 3600 + 7, Aggregators: []string{"a"}})
			return x
		},
		"changes the TTL": func() *History { x := j.Clone(); x.ViewTTLSeconds = 1; return x },
	}
	for name, mk := range cases {
		t.Run(name, func(t *testing.T) {
			if err := CheckAppendOnly(j, mk(), later); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	ok, _, _ := j.Join("d", later)
	if err := CheckAppendOnly(j, ok, later); err != nil {
		t.Fatalf("a join is append-only: %v", err)
	}
}

func TestSpansAndStates(t *testing.T) {
	h := Founding([]string{"a", "b"}, t0, DefaultViewTTL)
	j, from, _ := h.Join("c", t0)
	if s := j.State("c", t0); s != StateJoining {
		t.Fatalf("c %s before its era", s)
	}
	if s := j.State("c", time.Unix(from, 0)); s != StateActive {
		t.Fatalf("c %s from its era", s)
	}
	if got := j.Spans("c"); len(got) != 1 || got[0] != (Span{From: from}) {
		t.Fatalf("spans %v", got)
	}
	d, cut, _ := j.Drain("a", "b", t0.Add(time.Hour))
	if got := d.Spans("a"); len(got) != 1 || got[0] != (Span{From: 0, Until: cut}) {
		t.Fatalf("spans of a drained founder %v", got)
	}
	if s := d.State("nobody", t0); s != StateJoining {
		t.Fatalf("an unknown node is %s", s)
	}
}

func TestEmptyRoutesNothing(t *testing.T) {
	if NewVersions(nil).IndexAt("x", 0) != -1 || NewVersions(&History{}).Len() != 0 {
		t.Fatal("empty history routes")
	}
}

func BenchmarkVersionsIndexAt(b *testing.B) {
	h := Founding([]string{"a", "b"}, t0, DefaultViewTTL)
	h, _, _ = h.Join("c", t0)
	h, _, _ = h.Drain("a", "b", t0.Add(time.Hour))
	h, _ = h.HandOver("a", false)
	v := NewVersions(h)
	ads := make([]string, 1024)
	for i := range ads {
		ads[i] = fmt.Sprintf("ad-%d", i)
	}
	m := t0.Unix() - t0.Unix()%60
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		v.IndexAt(ads[i&1023], m)
	}
}

package loadgen

import (
	"math"
	"net/netip"
	"strings"
	"testing"

	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
	"google.golang.org/protobuf/proto"
)

func TestGeneratorIsDeterministic(t *testing.T) {
	draw := func(seed uint64, stream int) []Click {
		g := NewGenerator(seed, stream, 1000, 1.1, 0.1, 0.1)
		out := make([]Click, 500)
		for i := range out {
			out[i], _ = g.Next(int64(i) * 1e6)
		}
		return out
	}
	a, b := draw(7, 0), draw(7, 0)
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("click %d differs between two generators with the same seed: %+v vs %+v", i, a[i], b[i])
		}
	}
	for _, other := range [][]Click{draw(8, 0), draw(7, 1)} {
		same := 0
		for i := range a {
			if a[i].Ad == other[i].Ad && a[i].Attrs == other[i].Attrs {
				same++
			}
		}
		if same > len(a)/10 {
			t.Errorf("%d of %d clicks equal for another seed or stream", same, len(a))
		}
	}
}

func TestGeneratorFollowsZipf(t *testing.T) {
	const ads, draws, s = 100000, 400000, 1.1
	g := NewGenerator(1, 0, ads, s, 0.01, 0.001)
	counts := make([]int, ads)
	var dups, lates int
	for i := range draws {
		c, late := g.Next(int64(i))
		if int(c.Ad) >= ads {
			t.Fatalf("ad %d out of range", c.Ad)
		}
		counts[c.Ad]++
		if c.dup {
			dups++
		}
		if late {
			lates++
		}
	}
	// P(k) ∝ (1+k)^-s: ad 0 twice-ish as popular as ad 1, 2^s.
	for _, k := range []int{1, 3, 9} {
		want := math.Pow(float64(k+1), s)
		got := float64(counts[0]) / float64(counts[k])
		if math.Abs(got-want)/want > 0.12 {
			t.Errorf("count(ad-0)/count(ad-%d) = %.2f, want about %.2f", k, got, want)
		}
	}
	if math.Abs(float64(dups)/draws-0.01) > 0.002 || math.Abs(float64(lates)/draws-0.001) > 0.0005 {
		t.Errorf("dup fraction %.4f, late fraction %.5f; want 0.01 and 0.001", float64(dups)/draws, float64(lates)/draws)
	}
}

func TestClickFieldsAreValid(t *testing.T) {
	g := NewGenerator(3, 2, 2_000_000, 1.1, 0, 0)
	ids := map[string]bool{}
	var v6 int
	for i := range 20000 {
		c, _ := g.Next(int64(i) * 1e9)
		ip, err := netip.ParseAddr(c.IP())
		if err != nil {
			t.Fatalf("click %d: ip %q: %v", i, c.IP(), err)
		}
		if ip.Is6() {
			v6++
		}
		if cc := c.Country(); len(cc) != 2 || strings.ToUpper(cc) != cc {
			t.Fatalf("country %q", cc)
		}
		if u := c.UserID(); !strings.HasPrefix(u, "u-") {
			t.Fatalf("user %q", u)
		}
		id := c.ClickID("run")
		if ids[id] {
			t.Fatalf("click id %q repeated", id)
		}
		ids[id] = true
	}
	if v6 < 1000 || v6 > 2200 {
		t.Errorf("%d of 20000 addresses are IPv6, want about 8%%", v6)
	}
}

// TestRequestBuild checks the events built from reused buffers, across a
// rebuild with other clicks, and that building allocates nothing per click.
func TestRequestBuild(t *testing.T) {
	g := NewGenerator(5, 1, 1000, 1.2, 0, 0)
	var req request
	for round := range 3 {
		req.reset()
		n := 300 - 100*round
		for i := range n {
			c, _ := g.Next(1_700_000_000_123_456_789 + int64(i))
			req.add(c, true, false)
		}
		req.build("runX")
		raw, err := proto.Marshal(&req.msg)
		if err != nil {
			t.Fatal(err)
		}
		var got adclickv1.IngestRequest
		if err := proto.Unmarshal(raw, &got); err != nil {
			t.Fatal(err)
		}
		if len(got.Events) != n {
			t.Fatalf("round %d: %d events, want %d", round, len(got.Events), n)
		}
		for i, ev := range got.Events {
			c := &req.clicks[i]
			if ev.ClickId != c.ClickID("runX") || ev.AdId != AdID(c.Ad) || ev.UserId != c.UserID() || ev.Ip != c.IP() ||
				ev.Country != c.Country() || ev.ClickTime.AsTime().UnixNano() != c.Nanos {
				t.Fatalf("round %d event %d = %v, want the fields of %+v", round, i, ev, c)
			}
		}
	}
	allocs := testing.AllocsPerRun(20, func() { req.build("runX") })
	if allocs > 0 {
		t.Errorf("build allocates %.1f times per request, want 0", allocs)
	}
}

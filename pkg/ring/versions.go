package ring

import (
	"math"
	"slices"
	"sort"

	"github.com/cespare/xxhash/v2"
)

// Versions routes a click by its ad and its minute, as a History says: a
// click is owned by the ring of the era its minute falls in, and a minute
// of an aggregator that drained and handed over is owned by its heir. All
// copies of one click (first send, retries through any router, a late
// resend) therefore reach the same aggregator, whatever the ring became
// since. Immutable; safe for concurrent use.
type Versions struct {
	hist  *History
	ids   []string // every aggregator named in the history, sorted
	index map[string]int
	eras  []era // ascending by from
	// heirs[i] lists, for aggregator i, its handed-over drains by cut-over.
	heirs [][]heir
	// grants lists each split ad's grants; nil when there is none, so
	// routing without a split costs nothing more.
	grants map[string][]vgrant
}

// vgrant is a Grant with its nodes as indexes into ids.
type vgrant struct {
	from, until int64 // until 0: open
	nodes       []int32
}

type era struct {
	from   int64   // first minute of the era (MinInt64 for the founding era)
	ring   *Ring   // the era's aggregators
	global []int32 // ring index -> index in ids
}

type heir struct {
	cutover int64
	to      int
}

// NewVersions builds the routing of h; a nil or empty h routes nothing.
func NewVersions(h *History) *Versions {
	if h == nil {
		h = &History{}
	}
	v := &Versions{hist: h, index: map[string]int{}}
	for _, e := range h.Eras {
		v.ids = append(v.ids, e.Aggregators...)
	}
	for _, d := range h.Drains {
		v.ids = append(v.ids, d.Node, d.Heir)
	}
	slices.Sort(v.ids)
	v.ids = slices.Compact(v.ids)
	for i, id := range v.ids {
		v.index[id] = i
	}
	for k, e := range h.Eras {
		r := New(e.Aggregators)
		ev := era{from: e.From, ring: r, global: make([]int32, r.Len())}
		if k == 0 {
			ev.from = math.MinInt64 // the founding era owns every earlier minute
		}
		for i, id := range r.IDs() {
			ev.global[i] = int32(v.index[id])
		}
		v.eras = append(v.eras, ev)
	}
	v.heirs = make([][]heir, len(v.ids))
	for _, d := range h.Drains {
		if d.HandedOver {
			i := v.index[d.Node]
			v.heirs[i] = append(v.heirs[i], heir{cutover: d.Cutover, to: v.index[d.Heir]})
		}
	}
	for _, hs := range v.heirs {
		sort.Slice(hs, func(a, b int) bool { return hs[a].cutover < hs[b].cutover })
	}
	for _, g := range h.Grants {
		if g.Until != 0 && g.Until <= g.From {
			continue // ended before it took effect
		}
		if v.grants == nil {
			v.grants = map[string][]vgrant{}
		}
		vg := vgrant{from: g.From, until: g.Until}
		for _, n := range g.Nodes {
			vg.nodes = append(vg.nodes, int32(v.index[n]))
		}
		v.grants[g.AdID] = append(v.grants[g.AdID], vg)
	}
	return v
}

// OwnerAt returns the position in IDs of the aggregator that owns the click
// clickID of adID in minute, or -1 when no era covers that minute. Within a
// grant splitting adID the click goes to the grant's piece
// Nodes[xxhash(clickID) % Fanout] (then hand-overs apply as for any owner),
// so every copy of one click reaches the same aggregator; otherwise it is
// IndexAt. It does not allocate.
func (v *Versions) OwnerAt(adID, clickID string, minute int64) int {
	if v.grants != nil {
		if g := v.grantAt(adID, minute); g != nil {
			return v.resolve(int(g.nodes[xxhash.Sum64String(clickID)%uint64(len(g.nodes))]), minute)
		}
	}
	return v.IndexAt(adID, minute)
}

// Split tells whether adID is split over several aggregators in minute.
func (v *Versions) Split(adID string, minute int64) bool {
	return v.grants != nil && v.grantAt(adID, minute) != nil
}

// HasGrants tells whether any grant exists in the history.
func (v *Versions) HasGrants() bool { return v.grants != nil }

func (v *Versions) grantAt(adID string, minute int64) *vgrant {
	gs := v.grants[adID]
	for i := range gs {
		if g := &gs[i]; g.from <= minute && (g.until == 0 || minute < g.until) {
			return g
		}
	}
	return nil
}

// History is the history these versions route by.
func (v *Versions) History() *History { return v.hist }

// IDs returns every aggregator of the history sorted; IndexAt values refer
// to it. The slice must not be modified.
func (v *Versions) IDs() []string { return v.ids }

// Len is the number of aggregators named in the history.
func (v *Versions) Len() int { return len(v.ids) }

// Index returns the position of id in IDs, or -1.
func (v *Versions) Index(id string) int {
	if i, ok := v.index[id]; ok {
		return i
	}
	return -1
}

// IndexAt returns the position in IDs of the aggregator that owns adID in
// minute (unix seconds of the minute start), or -1 when no era covers that
// minute. It does not allocate.
func (v *Versions) IndexAt(adID string, minute int64) int {
	for k := len(v.eras) - 1; k >= 0; k-- {
		if e := &v.eras[k]; e.from <= minute {
			return v.resolve(int(e.global[e.ring.Index(adID)]), minute)
		}
	}
	return -1
}

// resolve follows hand-overs: a drained aggregator's minutes before its
// cut-over belong to its heir (and, if the heir drained since, to its heir).
func (v *Versions) resolve(o int, minute int64) int {
	for range len(v.ids) { // a chain is at most as long as the aggregators
		next := -1
		for _, h := range v.heirs[o] {
			if minute < h.cutover {
				next = h.to
				break
			}
		}
		if next < 0 {
			return o
		}
		o = next
	}
	return o
}

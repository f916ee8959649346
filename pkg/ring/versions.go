package ring

import (
	"math"
	"slices"

	"github.com/adclick/adclick/pkg/membership"
)

// Versions routes a click by its ad and its minute. Every aggregator is on
// the ring from its OwnsFrom minute on, so each distinct OwnsFrom starts a
// new ring version ("era") and a click is routed by the era its minute
// falls in. A ring change therefore takes effect at a minute boundary that
// every router agrees on, and all copies of one click — first send, retries,
// a late resend — reach the same aggregator while the cluster grows.
// Immutable; safe for concurrent use.
type Versions struct {
	members []membership.Member // every member, sorted by ID
	eras    []era               // ascending by from
}

type era struct {
	from   int64   // first minute of the era
	ring   *Ring   // members with OwnsFrom <= from
	global []int32 // ring index -> index in members
}

// NewVersions builds the eras of members.
func NewVersions(members []membership.Member) *Versions {
	v := &Versions{members: slices.Clone(members)}
	sortByID(v.members)
	v.members = slices.CompactFunc(v.members, func(a, b membership.Member) bool { return a.ID == b.ID })
	var froms []int64
	for _, m := range v.members {
		froms = append(froms, m.OwnsFrom)
	}
	slices.Sort(froms)
	froms = slices.Compact(froms)
	index := make(map[string]int32, len(v.members))
	for i, m := range v.members {
		index[m.ID] = int32(i)
	}
	for _, from := range froms {
		var in []membership.Member
		for _, m := range v.members {
			if m.OwnsFrom <= from {
				in = append(in, m)
			}
		}
		r := New(in)
		e := era{from: from, ring: r, global: make([]int32, r.Len())}
		if from == 0 { // the founding members own every minute, even before 1970
			e.from = math.MinInt64
		}
		for i, m := range r.Members() {
			e.global[i] = index[m.ID]
		}
		v.eras = append(v.eras, e)
	}
	return v
}

// Members returns every member sorted by ID; IndexAt values refer to it.
func (v *Versions) Members() []membership.Member { return v.members }

// Len is the number of members.
func (v *Versions) Len() int { return len(v.members) }

// IndexAt returns the position in Members of the aggregator that owns adID
// in minute (unix seconds of the minute start), or -1 when no aggregator
// owns that minute. It does not allocate.
func (v *Versions) IndexAt(adID string, minute int64) int {
	for k := len(v.eras) - 1; k >= 0; k-- {
		if e := &v.eras[k]; e.from <= minute {
			return int(e.global[e.ring.Index(adID)])
		}
	}
	return -1
}

package ring

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/adclick/adclick/pkg/clock"
)

// Origins of a grant.
const (
	OriginAuto     = "auto"     // taken by the ad's aggregator; ends when its lease in etcd lapses
	OriginOperator = "operator" // `adclick admin split`; ends only by `adclick admin unsplit`
)

// Errors callers branch on.
var (
	ErrGrantOpen   = errors.New("ring: the ad already has an open grant")
	ErrNoGrant     = errors.New("ring: the ad has no open grant")
	ErrFanoutSmall = errors.New("ring: a split needs a fan-out of at least 2 aggregators")
)

// Grant splits one hot ad over Fanout aggregators from minute From until
// minute Until (0: open). Within it a click of the ad is owned by
// Nodes[xxhash(click_id) % Fanout], so every copy of a click reaches the
// same piece. Like an era it takes effect at a minute no accepted click can
// belong to yet; once stored only Until changes, once, from 0 to a minute no
// accepted click can belong to yet either.
type Grant struct {
	AdID   string   `json:"ad_id"`
	Fanout int      `json:"fanout"`
	Nodes  []string `json:"nodes"` // Nodes[0] owned the ad at From; the rest are the helpers
	From   int64    `json:"from"`
	Until  int64    `json:"until,omitempty"`
	Origin string   `json:"origin"`
	// ProposedAt is unix seconds.
	ProposedAt int64 `json:"proposed_at"`
}

// Covers tells whether minute lies in the grant.
func (g *Grant) Covers(minute int64) bool {
	return g.From <= minute && (g.Until == 0 || minute < g.Until)
}

// OpenGrant returns ad's grant whose end is not recorded yet, or nil.
func (h *History) OpenGrant(ad string) *Grant {
	if h == nil {
		return nil
	}
	for i := range h.Grants {
		if g := &h.Grants[i]; g.AdID == ad && g.Until == 0 {
			return g
		}
	}
	return nil
}

// GrantAt returns the grant that splits ad in minute, or nil.
func (h *History) GrantAt(ad string, minute int64) *Grant {
	if h == nil {
		return nil
	}
	for i := range h.Grants {
		if g := &h.Grants[i]; g.AdID == ad && g.Covers(minute) {
			return g
		}
	}
	return nil
}

// eraAt returns the era in force at minute, or nil.
func (h *History) eraAt(minute int64) *Era {
	for k := len(h.Eras) - 1; k >= 0; k-- {
		if k == 0 || h.Eras[k].From <= minute {
			return &h.Eras[k]
		}
	}
	return nil
}

// SplitNodes chooses the k aggregators of ad's grant from minute from: the
// ad's owner in the era in force then, followed by the distinct owners of
// ad+"#1", ad+"#2", … on that era's ring (then the remaining members in
// order), skipping aggregators with a pending drain. The choice depends only
// on the history, but it is written into the grant all the same, so a
// router never recomputes it.
func (h *History) SplitNodes(ad string, from int64, k int) []string {
	e := h.eraAt(from)
	if e == nil {
		return nil
	}
	var members []string
	for _, id := range e.Aggregators {
		if h.PendingDrain(id) == nil {
			members = append(members, id)
		}
	}
	k = min(k, len(members))
	r := New(members)
	out := make([]string, 0, k)
	add := func(id string) {
		if len(out) < k && !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	if o, ok := New(e.Aggregators).Owner(ad); ok && slices.Contains(members, o) {
		add(o)
	}
	for i := 1; len(out) < k && i <= 16*k; i++ {
		if o, ok := r.Owner(ad + "#" + strconv.Itoa(i)); ok {
			add(o)
		}
	}
	for _, id := range members {
		add(id)
	}
	return out
}

// Split returns the history with a grant splitting ad over up to fanout
// aggregators from the earliest minute a change proposed at now may take
// effect (and not before the end of ad's previous grant).
func (h *History) Split(ad string, fanout int, origin string, now time.Time) (*History, *Grant, error) {
	if h.Latest() == nil {
		return nil, nil, errors.New("ring: empty history: found the ring first")
	}
	if g := h.OpenGrant(ad); g != nil {
		return nil, nil, fmt.Errorf("%w: %s is split over %v from %s (%s)", ErrGrantOpen, ad, g.Nodes, clock.MinuteTime(g.From).Format(time.RFC3339), g.Origin)
	}
	from := h.EarliestChange(now)
	for _, g := range h.Grants {
		if g.AdID == ad && g.Until > from {
			from = g.Until
		}
	}
	nodes := h.SplitNodes(ad, from, fanout)
	if len(nodes) < 2 {
		return nil, nil, fmt.Errorf("%w: %s can have %d (fan-out asked %d, aggregators not draining in the era at %s: %d)",
			ErrFanoutSmall, ad, len(nodes), fanout, clock.MinuteTime(from).Format(time.RFC3339), len(nodes))
	}
	g := Grant{AdID: ad, Fanout: len(nodes), Nodes: nodes, From: from, Origin: origin, ProposedAt: now.Unix()}
	out := h.Clone()
	out.Grants = append(out.Grants, g)
	return out, &out.Grants[len(out.Grants)-1], nil
}

// Unsplit returns the history with ad's open grant ending at the earliest
// minute a change proposed at now may take effect (at its From if that is
// later: a grant that never took effect ends empty).
func (h *History) Unsplit(ad string, now time.Time) (*History, int64, error) {
	if h.OpenGrant(ad) == nil {
		return nil, 0, fmt.Errorf("%w: %s", ErrNoGrant, ad)
	}
	out := h.Clone()
	g := out.OpenGrant(ad)
	g.Until = max(h.EarliestChange(now), g.From)
	return out, g.Until, nil
}

// endGrantsOf ends, at cutover, every open grant holding node (its drain's
// cut-over): from there on the node owns no minute, so no piece either.
func (h *History) endGrantsOf(node string, cutover int64) {
	for i := range h.Grants {
		if g := &h.Grants[i]; g.Until == 0 && slices.Contains(g.Nodes, node) {
			g.Until = max(cutover, g.From)
		}
	}
}

// validateGrants checks every grant against the eras: minute boundaries,
// fan-out, no overlap for one ad, and each node a member of every era the
// grant spans (so a drain must end the grants holding the node).
func (h *History) validateGrants() error {
	for i, g := range h.Grants {
		switch {
		case g.AdID == "":
			return fmt.Errorf("ring history: grant %d has no ad", i)
		case g.From%60 != 0 || g.Until%60 != 0:
			return fmt.Errorf("ring history: grant %d of %s is not on minute boundaries", i, g.AdID)
		case g.Until != 0 && g.Until < g.From:
			return fmt.Errorf("ring history: grant %d of %s ends before it starts", i, g.AdID)
		case g.Fanout < 2 || g.Fanout != len(g.Nodes):
			return fmt.Errorf("ring history: grant %d of %s has fan-out %d and %d nodes", i, g.AdID, g.Fanout, len(g.Nodes))
		case len(slices.Compact(slices.Sorted(slices.Values(g.Nodes)))) != len(g.Nodes):
			return fmt.Errorf("ring history: grant %d of %s names a node twice", i, g.AdID)
		case g.Origin != OriginAuto && g.Origin != OriginOperator:
			return fmt.Errorf("ring history: grant %d of %s has origin %q", i, g.AdID, g.Origin)
		}
		for j := range i {
			if p := h.Grants[j]; p.AdID == g.AdID && (p.Until == 0 || p.Until > g.From) {
				return fmt.Errorf("ring history: grant %d of %s starts at %d, before grant %d of it ends", i, g.AdID, g.From, j)
			}
		}
		for k, e := range h.Eras {
			var end int64 // the era's end; 0: open
			if k+1 < len(h.Eras) {
				end = h.Eras[k+1].From
			}
			spans := (end == 0 || g.From < end) && (g.Until == 0 || e.From < g.Until || k == 0)
			if g.Until == g.From || !spans {
				continue
			}
			for _, n := range g.Nodes {
				if !slices.Contains(e.Aggregators, n) {
					return fmt.Errorf("ring history: grant %d of %s holds %s, which the era from %d does not", i, g.AdID, n, e.From)
				}
			}
		}
	}
	return nil
}

// checkGrantsAppendOnly: grants are only appended, from the earliest
// change on, their nodes not draining; a stored grant changes only by its
// Until going from 0 to a minute at or after the earliest change.
func checkGrantsAppendOnly(h, next *History, earliest int64) error {
	if len(next.Grants) < len(h.Grants) {
		return errors.New("ring history: grants are never removed")
	}
	for i, g := range h.Grants {
		n := next.Grants[i]
		if n.AdID != g.AdID || n.Fanout != g.Fanout || !slices.Equal(n.Nodes, g.Nodes) || n.From != g.From ||
			n.Origin != g.Origin || n.ProposedAt != g.ProposedAt {
			return fmt.Errorf("ring history: grant %d of %s would be rewritten", i, g.AdID)
		}
		if n.Until != g.Until {
			if g.Until != 0 {
				return fmt.Errorf("ring history: the end of grant %d of %s is recorded and never moves", i, g.AdID)
			}
			if n.Until < earliest {
				return fmt.Errorf("%w: grant of %s ending at %s, before the earliest allowed %s", ErrNotPast, g.AdID,
					clock.MinuteTime(n.Until).Format(time.RFC3339), clock.MinuteTime(earliest).Format(time.RFC3339))
			}
		}
	}
	for _, g := range next.Grants[len(h.Grants):] {
		if g.From < earliest {
			return fmt.Errorf("%w: grant of %s from %s is before the earliest allowed %s", ErrNotPast, g.AdID,
				clock.MinuteTime(g.From).Format(time.RFC3339), clock.MinuteTime(earliest).Format(time.RFC3339))
		}
		for _, n := range g.Nodes {
			if next.PendingDrain(n) != nil {
				return fmt.Errorf("ring history: grant of %s names %s, which is draining", g.AdID, n)
			}
		}
	}
	return nil
}

package ring

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/adclick/adclick/pkg/clock"
)

// Timing of ring changes. A change takes effect at a minute boundary Lead
// ahead of the moment it is proposed, so that no accepted click can already
// belong to that minute and every aggregator that may still accept clicks has
// seen the change first:
//
//   - a click may lie FutureLimit in the future, so clicks of minutes up to
//     now+FutureLimit may already be accepted;
//   - an aggregator acts on its view of the history for at most the
//     history's view TTL after confirming it against etcd (it refuses clicks
//     once its view is older), so a change committed now is seen by every
//     aggregator still accepting clicks within the TTL;
//   - ClockSkew covers clocks that disagree, CommitMargin the time between
//     choosing the minute and etcd committing it.
const (
	FutureLimit  = time.Minute
	ClockSkew    = 5 * time.Second
	CommitMargin = 10 * time.Second
	// DefaultViewTTL is written into a new history: long enough to ride out
	// a short etcd election without refusing clicks, short enough that a
	// change takes effect within about two and a half minutes.
	DefaultViewTTL = 30 * time.Second
)

// Errors callers branch on.
var (
	ErrUnknownNode   = errors.New("ring: no such aggregator in the ring history")
	ErrNotActive     = errors.New("ring: aggregator does not own the newest era")
	ErrLastNode      = errors.New("ring: the last aggregator cannot leave")
	ErrNotPast       = errors.New("ring: a change must take effect after the newest era")
	ErrAlreadyMember = errors.New("ring: aggregator already owns the newest era")
)

// History is the append-only record of which aggregators own the ad space
// from which minute. Eras only ever get appended, each from a minute later
// than the last and at least Lead ahead of when it was proposed; drains only
// ever move forward (pending, handed over). Nothing changes the owner of a
// minute once a click of it may have been accepted.
type History struct {
	// ViewTTLSeconds is how long a node may act on its view without
	// confirming it against etcd.
	ViewTTLSeconds int64   `json:"view_ttl_seconds"`
	Eras           []Era   `json:"eras"`
	Drains         []Drain `json:"drains,omitempty"`
	// Grants split hot ads over several aggregators (grants.go).
	Grants []Grant `json:"grants,omitempty"`
}

// Era is one version of the ring: from minute From until the next era's
// From, the ad space is split over Aggregators.
type Era struct {
	// From is the first minute (unix seconds); 0 in the founding era, which
	// covers every minute before the next one.
	From        int64    `json:"from"`
	Aggregators []string `json:"aggregators"` // sorted, unique
	Cause       string   `json:"cause"`
	ProposedAt  int64    `json:"proposed_at"` // unix seconds
}

// Drain records an aggregator leaving the ring at Cutover (the From of the
// era that no longer holds it). Until HandedOver it still owns late clicks
// of its minutes before Cutover; then Heir owns them, holding a copy of the
// node's click ids of the late horizon.
type Drain struct {
	Node       string `json:"node"`
	Cutover    int64  `json:"cutover"`
	Heir       string `json:"heir"`
	HandedOver bool   `json:"handed_over"`
	// Forced: removed without handing over (its click ids are lost).
	Forced     bool  `json:"forced,omitempty"`
	ProposedAt int64 `json:"proposed_at"`
}

// ViewTTL returns the history's view TTL (DefaultViewTTL when unset).
func (h *History) ViewTTL() time.Duration {
	if h == nil || h.ViewTTLSeconds <= 0 {
		return DefaultViewTTL
	}
	return time.Duration(h.ViewTTLSeconds) * time.Second
}

// Lead is how far ahead of its proposal a change takes effect, at least.
func (h *History) Lead() time.Duration {
	return FutureLimit + h.ViewTTL() + ClockSkew + CommitMargin
}

// EarliestChange is the first minute a change proposed at now may take
// effect at: the minute boundary at or after now + Lead, and after the
// newest era.
func (h *History) EarliestChange(now time.Time) int64 {
	t := now.Add(h.Lead())
	m := clock.Minute(t)
	if m < t.Unix() || t.Nanosecond() > 0 && m == t.Unix() {
		m += 60
	}
	if last := h.Latest(); last != nil && m <= last.From {
		m = last.From + 60
	}
	return m
}

// Latest is the newest era, nil in an empty history.
func (h *History) Latest() *Era {
	if h == nil || len(h.Eras) == 0 {
		return nil
	}
	return &h.Eras[len(h.Eras)-1]
}

// Clone returns a deep copy.
func (h *History) Clone() *History {
	if h == nil {
		return &History{}
	}
	out := &History{ViewTTLSeconds: h.ViewTTLSeconds, Drains: slices.Clone(h.Drains)}
	for _, e := range h.Eras {
		e.Aggregators = slices.Clone(e.Aggregators)
		out.Eras = append(out.Eras, e)
	}
	for _, g := range h.Grants {
		g.Nodes = slices.Clone(g.Nodes)
		out.Grants = append(out.Grants, g)
	}
	return out
}

// Founding returns the first history: one era owning every minute.
func Founding(aggregators []string, now time.Time, ttl time.Duration) *History {
	ids := sortedUnique(aggregators)
	return &History{
		ViewTTLSeconds: int64(ttl / time.Second),
		Eras:           []Era{{From: 0, Aggregators: ids, Cause: "founded with " + fmt.Sprint(ids), ProposedAt: now.Unix()}},
	}
}

// Join returns the history with id added to the ring from the earliest
// minute a change proposed at now may take effect.
func (h *History) Join(id string, now time.Time) (*History, int64, error) {
	last := h.Latest()
	if last == nil {
		return nil, 0, errors.New("ring: empty history: found the ring first")
	}
	if slices.Contains(last.Aggregators, id) {
		return nil, 0, fmt.Errorf("%w: %s", ErrAlreadyMember, id)
	}
	if d := h.PendingDrain(id); d != nil {
		return nil, 0, fmt.Errorf("ring: %s is still draining (cut-over %s); it can join again once handed over", id, clock.MinuteTime(d.Cutover).Format(time.RFC3339))
	}
	from := h.EarliestChange(now)
	out := h.Clone()
	out.Eras = append(out.Eras, Era{From: from, Aggregators: sortedUnique(append(slices.Clone(last.Aggregators), id)), Cause: "join " + id, ProposedAt: now.Unix()})
	return out, from, nil
}

// Drain returns the history with id leaving the ring from the earliest
// minute a change proposed at now may take effect, heir taking over late
// clicks of its minutes once it has handed over.
func (h *History) Drain(id, heir string, now time.Time) (*History, int64, error) {
	last := h.Latest()
	if last == nil || !slices.Contains(last.Aggregators, id) {
		return nil, 0, fmt.Errorf("%w: %s", ErrNotActive, id)
	}
	if len(last.Aggregators) == 1 {
		return nil, 0, fmt.Errorf("%w: %s is the only aggregator; add another before draining it", ErrLastNode, id)
	}
	if heir == id || !slices.Contains(last.Aggregators, heir) {
		return nil, 0, fmt.Errorf("ring: heir %q of %s must be another aggregator of the newest era", heir, id)
	}
	from := h.EarliestChange(now)
	rest := slices.DeleteFunc(slices.Clone(last.Aggregators), func(s string) bool { return s == id })
	out := h.Clone()
	out.Eras = append(out.Eras, Era{From: from, Aggregators: rest, Cause: "drain " + id, ProposedAt: now.Unix()})
	out.Drains = append(out.Drains, Drain{Node: id, Cutover: from, Heir: heir, ProposedAt: now.Unix()})
	out.endGrantsOf(id, from)
	return out, from, nil
}

// HandOver returns the history with id's pending drain marked handed over.
func (h *History) HandOver(id string, forced bool) (*History, error) {
	out := h.Clone()
	for i := range out.Drains {
		if d := &out.Drains[i]; d.Node == id && !d.HandedOver {
			d.HandedOver, d.Forced = true, forced
			return out, nil
		}
	}
	return nil, fmt.Errorf("ring: %s has no pending drain", id)
}

// PendingDrain returns id's drain that is not handed over yet, or nil.
func (h *History) PendingDrain(id string) *Drain {
	if h == nil {
		return nil
	}
	for i := range h.Drains {
		if d := &h.Drains[i]; d.Node == id && !d.HandedOver {
			return d
		}
	}
	return nil
}

// HeirOfPending returns the nodes whose pending drains name id as heir.
// id must not hand over itself before they have: its copy of their click
// ids would otherwise miss from what it passes on.
func (h *History) HeirOfPending(id string) []string {
	var out []string
	for _, d := range h.Drains {
		if d.Heir == id && !d.HandedOver {
			out = append(out, d.Node)
		}
	}
	return out
}

// Validate checks the invariants every stored history keeps.
func (h *History) Validate() error {
	if len(h.Eras) == 0 {
		return errors.New("ring history has no era")
	}
	for i, e := range h.Eras {
		if len(e.Aggregators) == 0 {
			return fmt.Errorf("ring history: era %d has no aggregator", i)
		}
		if !slices.IsSorted(e.Aggregators) || len(slices.Compact(slices.Clone(e.Aggregators))) != len(e.Aggregators) {
			return fmt.Errorf("ring history: era %d aggregators not sorted and unique", i)
		}
		if i > 0 && e.From <= h.Eras[i-1].From {
			return fmt.Errorf("ring history: era %d starts at %d, not after era %d (%d)", i, e.From, i-1, h.Eras[i-1].From)
		}
		if e.From%60 != 0 {
			return fmt.Errorf("ring history: era %d starts at %d, not a minute boundary", i, e.From)
		}
	}
	return h.validateGrants()
}

// CheckAppendOnly tells whether next only appends to h: the same eras
// (then new ones, each at or after the earliest change at now), the same
// drains (a pending one may become handed over), new drains matching
// new eras, and the same grants (an open one may get its end, at or after
// the earliest change) then new ones from the earliest change on.
func CheckAppendOnly(h, next *History, now time.Time) error {
	if err := next.Validate(); err != nil {
		return err
	}
	if h == nil || len(h.Eras) == 0 {
		return nil
	}
	if next.ViewTTLSeconds != h.ViewTTLSeconds {
		return errors.New("ring history: the view TTL never changes")
	}
	if len(next.Eras) < len(h.Eras) || len(next.Drains) < len(h.Drains) {
		return errors.New("ring history: eras and drains are never removed")
	}
	for i, e := range h.Eras {
		n := next.Eras[i]
		if n.From != e.From || !slices.Equal(n.Aggregators, e.Aggregators) {
			return fmt.Errorf("ring history: era %d (from %d) would be rewritten", i, e.From)
		}
	}
	earliest := h.EarliestChange(now)
	for _, e := range next.Eras[len(h.Eras):] {
		if e.From < earliest {
			return fmt.Errorf("%w: era from %s is before the earliest allowed %s", ErrNotPast,
				clock.MinuteTime(e.From).Format(time.RFC3339), clock.MinuteTime(earliest).Format(time.RFC3339))
		}
	}
	for i, d := range h.Drains {
		n := next.Drains[i]
		if n.Node != d.Node || n.Cutover != d.Cutover || n.Heir != d.Heir || d.HandedOver && !n.HandedOver {
			return fmt.Errorf("ring history: drain of %s would be rewritten", d.Node)
		}
	}
	return checkGrantsAppendOnly(h, next, earliest)
}

// Span is a stretch of minutes [From, Until) an aggregator owns; Until is
// 0 when it is open-ended.
type Span struct{ From, Until int64 }

// Spans returns the minutes id owns, era by era merged.
func (h *History) Spans(id string) []Span {
	var out []Span
	for i, e := range h.Eras {
		if !slices.Contains(e.Aggregators, id) {
			continue
		}
		var until int64
		if i+1 < len(h.Eras) {
			until = h.Eras[i+1].From
		}
		if n := len(out); n > 0 && out[n-1].Until == e.From {
			out[n-1].Until = until
			continue
		}
		out = append(out, Span{From: e.From, Until: until})
	}
	return out
}

// State of an aggregator in the history, as `adclick admin status` shows it.
const (
	StateJoining  = "joining"  // owns from a future minute (or not yet in any era)
	StateActive   = "active"   // owns the current minute and the newest era
	StateDraining = "draining" // left the newest era, not yet handed over
	StateDrained  = "drained"  // left and handed over
)

// State tells id's state at now.
func (h *History) State(id string, now time.Time) string {
	last := h.Latest()
	if last != nil && slices.Contains(last.Aggregators, id) {
		spans := h.Spans(id)
		if s := spans[len(spans)-1]; s.From > clock.Minute(now) {
			return StateJoining
		}
		return StateActive
	}
	if h.PendingDrain(id) != nil {
		return StateDraining
	}
	for _, d := range h.Drains {
		if d.Node == id {
			return StateDrained
		}
	}
	return StateJoining
}

func sortedUnique(ids []string) []string {
	out := slices.Clone(ids)
	slices.Sort(out)
	return slices.Compact(out)
}

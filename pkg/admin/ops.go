package admin

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/adclick/adclick/pkg/clock"
	"github.com/adclick/adclick/pkg/membership"
	"github.com/adclick/adclick/pkg/ring"
)

// Drained is the outcome of a drain request.
type Drained struct {
	Node    string    `json:"node"`
	Heir    string    `json:"heir"`
	Cutover time.Time `json:"cutover"` // first minute the node does not own
	Already bool      `json:"already"` // the drain was recorded before
}

// Drain takes node off the ring from the earliest minute a change may take
// effect. Its heir, which will take late clicks of its minutes once it has
// handed over, is the live aggregator of the remaining ring with the lowest
// load (ties by id). Draining a node that is already draining reports
// that drain.
func (a *Admin) Drain(ctx context.Context, node string) (*Drained, error) {
	s, err := a.load(ctx)
	if err != nil {
		return nil, err
	}
	if s.hist == nil {
		return nil, errors.New("no ring history in etcd yet: nothing to drain")
	}
	if d := s.hist.PendingDrain(node); d != nil {
		return &Drained{Node: node, Heir: d.Heir, Cutover: clock.MinuteTime(d.Cutover), Already: true}, nil
	}
	peers, _ := a.gossipView(ctx, s)
	load := map[string]float64{}
	for _, p := range peers {
		if p.Role == "aggregator" {
			load[p.ID] = p.ClicksPerSec
		}
	}
	var out *Drained
	_, _, err = ring.Update(ctx, a.cli, a.clk, func(h *ring.History, now time.Time) (*ring.History, error) {
		last := h.Latest()
		if !slices.Contains(last.Aggregators, node) {
			return nil, fmt.Errorf("%s is not on the ring's newest era (state %s): nothing to drain; see adclick admin status", node, h.State(node, now))
		}
		var cands []string
		for _, id := range last.Aggregators {
			if _, live := s.liveAggs[id]; id != node && live {
				cands = append(cands, id)
			}
		}
		if len(cands) == 0 {
			if len(last.Aggregators) == 1 {
				return nil, fmt.Errorf("%s is the only aggregator: add another (start it; it joins by itself) before draining this one", node)
			}
			return nil, fmt.Errorf("no other aggregator of the ring is running to take over %s's late clicks: start one first", node)
		}
		sort.SliceStable(cands, func(i, j int) bool { return load[cands[i]] < load[cands[j]] })
		next, cut, err := h.Drain(node, cands[0], now)
		if err != nil {
			return nil, err
		}
		out = &Drained{Node: node, Heir: cands[0], Cutover: clock.MinuteTime(cut)}
		return next, nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// WaitDrained polls until node's drain is handed over (it is drained),
// calling progress with a line now and then, or until ctx ends.
func (a *Admin) WaitDrained(ctx context.Context, node string, progress func(string)) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	lastSaid := time.Time{}
	for {
		h, _, err := ring.LoadHistory(ctx, a.cli)
		if err == nil && h != nil {
			d := h.PendingDrain(node)
			if d == nil {
				if h.State(node, a.clk.Now()) == ring.StateDrained {
					return nil
				}
				return fmt.Errorf("%s has no drain recorded (state %s)", node, h.State(node, a.clk.Now()))
			}
			if now := a.clk.Now(); progress != nil && now.Sub(lastSaid) >= 10*time.Second {
				lastSaid = now
				cut := clock.MinuteTime(d.Cutover)
				if now.Before(cut) {
					progress(fmt.Sprintf("%s owns its minutes until the cut-over %s (in %s)", node, cut.Format(time.RFC3339), cut.Sub(now).Round(time.Second)))
				} else {
					progress(fmt.Sprintf("%s is closing its last minutes, delivering its partials and handing its click ids to %s", node, d.Heir))
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not drained yet: %w", node, ctx.Err())
		case <-t.C:
		}
	}
}

// Removed is the outcome of a removal.
type Removed struct {
	Node   string   `json:"node"`
	Kind   string   `json:"kind"` // aggregator or reducer
	Forced bool     `json:"forced"`
	Lost   []string `json:"lost,omitempty"` // what a forced removal gave up
}

// ErrRefused is returned when a removal would lose counts without --force.
var ErrRefused = errors.New("refused")

// Remove forgets node: a drained aggregator (its minutes already belong to
// its heir), or a reducer. Anything else is refused unless force, which
// drains the aggregator at once without a hand-over (what it had not
// delivered, and its click ids, are lost: Removed.Lost says what).
func (a *Admin) Remove(ctx context.Context, node string, force bool) (*Removed, error) {
	s, err := a.load(ctx)
	if err != nil {
		return nil, err
	}
	for _, m := range s.reds {
		if m.ID == node {
			if m.Live && !force {
				return nil, fmt.Errorf("%w: reducer %s is running; stop it first (or --force)", ErrRefused, node)
			}
			return &Removed{Node: node, Kind: "reducer", Forced: force}, a.deleteRecord(ctx, membership.Reducers, node)
		}
	}
	h := s.hist
	registered := slices.ContainsFunc(s.aggs, func(m membership.Member) bool { return m.ID == node })
	inHistory := h != nil && ring.NewVersions(h).Index(node) >= 0
	if !registered && !inHistory {
		return nil, fmt.Errorf("no aggregator or reducer %q in this cluster", node)
	}
	now := a.clk.Now()
	state := ring.StateJoining
	if h != nil {
		state = h.State(node, now)
	}
	out := &Removed{Node: node, Kind: "aggregator", Forced: force}
	if state != ring.StateDrained {
		lost := a.wouldLose(h, node, state, now)
		if !force {
			return nil, fmt.Errorf("%w: aggregator %s is %s, not drained: drain it first (adclick admin drain %s --wait); --force would lose:\n  - %s",
				ErrRefused, node, state, node, strings.Join(lost, "\n  - "))
		}
		out.Lost = lost
		if inHistory {
			if err := a.forceHandOver(ctx, s, node); err != nil {
				return nil, err
			}
		}
	}
	if _, live := s.liveAggs[node]; live && !force {
		return nil, fmt.Errorf("%w: aggregator %s is drained but still running; stop it first, or it joins the ring again when restarted", ErrRefused, node)
	}
	if registered {
		if err := a.deleteRecord(ctx, membership.Aggregators, node); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (a *Admin) wouldLose(h *ring.History, node, state string, now time.Time) []string {
	lost := []string{
		"the clicks it accepted in minutes it has not yet closed and delivered (they are in its log, which nobody will replay)",
		"its click ids of the late horizon: a retry of one of its clicks is counted again by its heir",
	}
	switch state {
	case ring.StateActive, ring.StateJoining:
		if h != nil {
			cut := clock.MinuteTime(h.EarliestChange(now))
			lost = append(lost, fmt.Sprintf("it leaves the ring at %s and its minutes go to its heir at once; if it is in fact still running, stop it first: clicks it takes before it sees the change could be counted twice", cut.Format(time.RFC3339)))
		}
	case ring.StateDraining:
		lost = append(lost, "the rest of its drain (closing, delivering and handing over)")
	}
	return append(lost, "completeness of the minutes it owned and had not closed: they stay incomplete")
}

// forceHandOver records node as drained without a hand-over: it leaves the
// newest era (if on it) and its minutes go to an heir at once.
func (a *Admin) forceHandOver(ctx context.Context, s *snapshot, node string) error {
	_, _, err := ring.Update(ctx, a.cli, a.clk, func(h *ring.History, now time.Time) (*ring.History, error) {
		if slices.Contains(h.Latest().Aggregators, node) {
			var heir string
			for _, id := range h.Latest().Aggregators {
				if _, live := s.liveAggs[id]; id != node && (heir == "" || live) {
					heir = id
				}
			}
			if heir == "" {
				return nil, fmt.Errorf("%s is the only aggregator: it cannot be removed", node)
			}
			var err error
			if h, _, err = h.Drain(node, heir, now); err != nil {
				return nil, err
			}
		}
		if h.PendingDrain(node) == nil {
			return nil, ring.ErrNoChange
		}
		return h.HandOver(node, true)
	})
	return err
}

func (a *Admin) deleteRecord(ctx context.Context, kind membership.Kind, id string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := a.cli.Delete(ctx, kind.Key(id)); err != nil {
		return fmt.Errorf("delete %s: %w", kind.Key(id), err)
	}
	return nil
}

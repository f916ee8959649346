package gossip

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
)

// meta is what a node gossips about itself, in memberlist's node meta (at
// most memberlist.MetaMaxSize bytes). Load travels here too: a change is
// one UpdateNode, which memberlist piggybacks on its gossip, and push/pull
// hands the current figures to a node that joins.
type meta struct {
	Role string  `json:"r"`
	ID   string  `json:"i"`
	GRPC string  `json:"g,omitempty"`
	Inc  int64   `json:"n,omitempty"`
	Load float64 `json:"l,omitempty"`
	// Leaving is announced by Leave just before memberlist's own leave
	// message, which peers cannot tell from a death (memberlist v0.5 does
	// not pass the node's state to NotifyLeave).
	Leaving bool `json:"x,omitempty"`
}

func (m meta) encode() []byte {
	b, err := json.Marshal(m)
	if err != nil { // only for NaN or ±Inf loads, which encodeMeta rules out
		panic(fmt.Sprintf("gossip: encode meta: %v", err))
	}
	return b
}

// checkMetaSize fails when self's meta could outgrow memberlist's limit,
// which would make memberlist panic on a later load update.
func checkMetaSize(self Self) error {
	worst := meta{Role: self.Role, ID: self.ID, GRPC: self.GRPCAddr, Inc: math.MinInt64, Load: -math.MaxFloat64, Leaving: true}
	if n := len(worst.encode()); n > memberlist.MetaMaxSize {
		return fmt.Errorf("gossip: node id and gRPC address too long for gossip meta (%d bytes, limit %d)", n, memberlist.MetaMaxSize)
	}
	return nil
}

// sanitizeLoad keeps a load figure encodable.
func sanitizeLoad(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return 0
	}
	return v
}

// decodeMeta reads a peer's meta; when it cannot (a node of another version),
// role and id still come from the node name.
func decodeMeta(n *memberlist.Node) (meta, error) {
	var m meta
	err := json.Unmarshal(n.Meta, &m)
	if err != nil || m.Role == "" || m.ID == "" {
		m.Role, m.ID, _ = strings.Cut(n.Name, "/")
		if err == nil {
			err = fmt.Errorf("meta %q lacks role or id", n.Meta)
		}
	}
	return m, err
}

// nodeName is the memberlist name of a node: stable for a node id, so a
// restart on another address is the same member coming back.
func nodeName(role, id string) string { return role + "/" + id }

// delegate receives memberlist's callbacks. memberlist calls them from its
// own goroutines, some under its node lock: they must not block and must not
// call back into memberlist.
type delegate struct{ g *Gossip }

var (
	_ memberlist.Delegate         = delegate{}
	_ memberlist.EventDelegate    = delegate{}
	_ memberlist.ConflictDelegate = delegate{}
)

// NodeMeta implements memberlist.Delegate.
func (d delegate) NodeMeta(limit int) []byte { return *d.g.meta.Load() }

// NotifyMsg implements memberlist.Delegate; no user messages are sent.
func (d delegate) NotifyMsg([]byte) {}

// GetBroadcasts implements memberlist.Delegate; everything rides in meta.
func (d delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }

// LocalState implements memberlist.Delegate; meta is already in push/pull.
func (d delegate) LocalState(join bool) []byte { return nil }

// MergeRemoteState implements memberlist.Delegate.
func (d delegate) MergeRemoteState(buf []byte, join bool) {}

// NotifyJoin implements memberlist.EventDelegate: a new node, or a dead or
// left one back (possibly at a new address).
func (d delegate) NotifyJoin(n *memberlist.Node) { d.g.observe(n, true) }

// NotifyLeave implements memberlist.EventDelegate: a death or a leave; the
// meta's Leaving flag tells them apart.
func (d delegate) NotifyLeave(n *memberlist.Node) { d.g.observe(n, false) }

// NotifyUpdate implements memberlist.EventDelegate: new meta (load).
func (d delegate) NotifyUpdate(n *memberlist.Node) { d.g.observe(n, true) }

// NotifyConflict implements memberlist.ConflictDelegate: a live member's
// name announced from another address. Either a node restarted on a new
// port before the others declared its old self dead (they take it back once
// they do; when the name is ours, the loop re-announces us until then), or
// two processes share one role and id.
func (d delegate) NotifyConflict(existing, other *memberlist.Node) {
	g := d.g
	if existing.Name == g.name {
		g.signalReannounce()
	}
	if !g.conflictLogDue(existing.Name) {
		return
	}
	g.log.Warn("two addresses claim one gossip name; fine right after a restart on a new port, otherwise two nodes share a role and id",
		"name", existing.Name, "known_addr", existing.Address(), "other_addr", other.Address())
}

// conflictLogEvery limits conflict warnings: a restarted node re-announces
// itself several times a second until its old self is declared dead.
const conflictLogEvery = 10 * time.Second

// conflictLogDue reports whether a conflict on name should be logged now.
func (g *Gossip) conflictLogDue(name string) bool {
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if last, ok := g.conflictLogged[name]; ok && now.Sub(last) < conflictLogEvery {
		return false
	}
	for n, t := range g.conflictLogged { // keep the map small
		if now.Sub(t) >= conflictLogEvery {
			delete(g.conflictLogged, n)
		}
	}
	g.conflictLogged[name] = now
	return true
}

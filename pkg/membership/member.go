package membership

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/adclick/adclick/pkg/etcdkv"
)

// Kind is a class of registered node.
type Kind string

const (
	// Aggregators own slices of the ad space and count clicks.
	Aggregators Kind = "aggregators"
	// Reducers merge partials and answer queries.
	Reducers Kind = "reducers"
	// Routers are stateless: they have only a liveness key.
	Routers Kind = "routers"
)

// Prefix returns the etcd prefix of the persistent records of this kind: a
// node is a member of the cluster from its first start until an operator
// removes it, whether it is running or not.
func (k Kind) Prefix() string { return etcdkv.Prefix + string(k) + "/" }

// Key returns the etcd key of node id's persistent record.
func (k Kind) Key(id string) string { return k.Prefix() + id }

// LivePrefix returns the etcd prefix of the leased liveness keys of this
// kind: a node's key exists while the node runs.
func (k Kind) LivePrefix() string { return etcdkv.Prefix + "live/" + string(k) + "/" }

// LiveKey returns the etcd liveness key of node id.
func (k Kind) LiveKey(id string) string { return k.LivePrefix() + id }

// Member is what a node publishes about itself.
type Member struct {
	ID   string `json:"id"`
	Addr string `json:"addr"` // gRPC address other nodes dial
	// HTTPAddr serves metrics and health.
	HTTPAddr string `json:"http_addr,omitempty"`
	// Incarnation identifies one run of the node's process (unix nanos at start).
	Incarnation int64 `json:"incarnation,omitempty"`
	// FirstMinute (aggregators) is the first minute, unix seconds, that this
	// node closes and reports. Earlier minutes get only late corrections.
	FirstMinute int64 `json:"first_minute,omitempty"`
	// GossipAddr is the node's memberlist address, for others to join.
	GossipAddr string `json:"gossip_addr,omitempty"`
	// AppliedRing is the revision of the ring history the node has applied
	// (liveness key only): the handshake `adclick admin` shows.
	AppliedRing int64 `json:"applied_ring,omitempty"`
	// Live tells whether the node's leased liveness key exists (not stored).
	Live bool `json:"-"`
}

// ParseMembers decodes a snapshot of kind's persistent records into members
// sorted by ID, marking those whose key is in live as Live. Values that do
// not decode are skipped and reported in the error.
func ParseMembers(kind Kind, kvs map[string][]byte, live map[string][]byte) ([]Member, error) {
	out := make([]Member, 0, len(kvs))
	var bad []string
	for k, v := range kvs {
		var m Member
		if err := json.Unmarshal(v, &m); err != nil || m.ID == "" || m.Addr == "" {
			bad = append(bad, k)
			continue
		}
		if want := kind.Key(m.ID); want != k {
			bad = append(bad, k)
			continue
		}
		_, m.Live = live[kind.LiveKey(m.ID)]
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	if len(bad) > 0 {
		sort.Strings(bad)
		return out, fmt.Errorf("membership: skipped malformed registrations: %s", strings.Join(bad, ", "))
	}
	return out, nil
}

// ParseLive decodes liveness values of kind (routers have nothing else),
// sorted by ID; values that do not decode are skipped.
func ParseLive(kind Kind, live map[string][]byte) []Member {
	out := make([]Member, 0, len(live))
	for k, v := range live {
		var m Member
		if err := json.Unmarshal(v, &m); err != nil || kind.LiveKey(m.ID) != k {
			continue
		}
		m.Live = true
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

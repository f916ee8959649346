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
)

// Prefix returns the etcd prefix under which nodes of this kind register.
func (k Kind) Prefix() string { return etcdkv.Prefix + string(k) + "/" }

// Key returns the etcd key of node id.
func (k Kind) Key(id string) string { return k.Prefix() + id }

// Member is what a node publishes about itself.
type Member struct {
	ID   string `json:"id"`
	Addr string `json:"addr"` // gRPC address other nodes dial
	// HTTPAddr serves metrics and health.
	HTTPAddr string `json:"http_addr,omitempty"`
	// Incarnation identifies one run of the node's process (unix nanos at start).
	Incarnation int64 `json:"incarnation,omitempty"`
	// FirstMinute (aggregators) is the first minute, unix seconds, that this
	// incarnation closes and reports. Earlier minutes get only late corrections.
	FirstMinute int64 `json:"first_minute,omitempty"`
}

// ParseMembers decodes a prefix snapshot into members sorted by ID. Values
// that do not decode are skipped and reported in the error.
func ParseMembers(kind Kind, kvs map[string][]byte) ([]Member, error) {
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
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	if len(bad) > 0 {
		sort.Strings(bad)
		return out, fmt.Errorf("membership: skipped malformed registrations: %s", strings.Join(bad, ", "))
	}
	return out, nil
}

package ring

import (
	"slices"

	"github.com/buraksezer/consistent"
	"github.com/cespare/xxhash/v2"
)

// Ring parameters. They are fixed: every router must compute the same owners.
const (
	// PartitionCount is prime (so hash mod PartitionCount spreads evenly) and
	// large enough that 2M ads give ~2k ads per partition and even 100
	// aggregators get ~10 partitions each, so shares stay within a few percent;
	// building the table stays well under a millisecond.
	PartitionCount = 1021
	// ReplicationFactor is the virtual nodes per member: 20 points per member
	// keeps the arcs even enough for the load bound to do the rest.
	ReplicationFactor = 20
	// LoadBound caps any member at 125% of the mean partition count (the bounded
	// loads of Mirrokni et al.), the library's well-tested default: tighter
	// bounds move more partitions on membership changes.
	LoadBound = 1.25
)

// hasher is xxhash, which Owner also uses directly to find the partition.
type hasher struct{}

func (hasher) Sum64(b []byte) uint64 { return xxhash.Sum64(b) }

// node is a ring member as the consistent library sees it: the aggregator
// id, so a restarted aggregator (new address or incarnation) keeps its ads.
type node string

func (n node) String() string { return string(n) }

// Ring maps ad ids to aggregator ids. Immutable; safe for concurrent use.
type Ring struct {
	ids   []string // sorted, unique
	owner [PartitionCount]int32
}

// New builds the ring of the aggregators ids (duplicates are kept once).
// The slice is copied.
func New(ids []string) *Ring {
	r := &Ring{ids: slices.Clone(ids)}
	slices.Sort(r.ids)
	r.ids = slices.Compact(r.ids)
	if len(r.ids) == 0 {
		return r
	}
	nodes := make([]consistent.Member, len(r.ids))
	index := make(map[string]int32, len(r.ids))
	for i, id := range r.ids {
		nodes[i] = node(id)
		index[id] = int32(i)
	}
	c := consistent.New(nodes, consistent.Config{
		Hasher:            hasher{},
		PartitionCount:    PartitionCount,
		ReplicationFactor: ReplicationFactor,
		Load:              LoadBound,
	})
	for p := range r.owner {
		r.owner[p] = index[c.GetPartitionOwner(p).String()]
	}
	return r
}

// Len is the number of members.
func (r *Ring) Len() int { return len(r.ids) }

// IDs returns the member ids sorted; Index values refer to it. The slice
// must not be modified.
func (r *Ring) IDs() []string { return r.ids }

// Partition returns the partition of adID, as consistent.FindPartitionID.
func Partition(adID string) int { return int(xxhash.Sum64String(adID) % PartitionCount) }

// Index returns the position in IDs of the owner of adID, or -1 when the
// ring is empty. It does not allocate.
func (r *Ring) Index(adID string) int {
	if len(r.ids) == 0 {
		return -1
	}
	return int(r.owner[Partition(adID)])
}

// Owner returns the id of the aggregator that owns adID, false when the
// ring is empty.
func (r *Ring) Owner(adID string) (string, bool) {
	i := r.Index(adID)
	if i < 0 {
		return "", false
	}
	return r.ids[i], true
}

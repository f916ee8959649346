package ring

import (
	"cmp"
	"slices"

	"github.com/buraksezer/consistent"
	"github.com/cespare/xxhash/v2"

	"github.com/adclick/adclick/pkg/membership"
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
	// Load caps any member at 125% of the mean partition count (the bounded
	// loads of Mirrokni et al.), the library's well-tested default: tighter
	// bounds move more partitions on membership changes.
	Load = 1.25
)

// hasher is xxhash, which Owner also uses directly to find the partition.
type hasher struct{}

func (hasher) Sum64(b []byte) uint64 { return xxhash.Sum64(b) }

// node is a ring member as the consistent library sees it: the member ID,
// so a restarted aggregator (new address or incarnation) keeps its ads.
type node string

func (n node) String() string { return string(n) }

// Ring maps ad ids to aggregators. Immutable; safe for concurrent use.
type Ring struct {
	members []membership.Member // sorted by ID
	owner   [PartitionCount]int32
}

// New builds the ring of members (duplicate IDs are kept once, the first
// wins). The slice is copied.
func New(members []membership.Member) *Ring {
	r := &Ring{}
	seen := make(map[string]bool, len(members))
	nodes := make([]consistent.Member, 0, len(members))
	for _, m := range members {
		if seen[m.ID] {
			continue
		}
		seen[m.ID] = true
		r.members = append(r.members, m)
		nodes = append(nodes, node(m.ID))
	}
	sortByID(r.members)
	if len(r.members) == 0 {
		return r
	}
	c := consistent.New(nodes, consistent.Config{
		Hasher:            hasher{},
		PartitionCount:    PartitionCount,
		ReplicationFactor: ReplicationFactor,
		Load:              Load,
	})
	index := make(map[string]int32, len(r.members))
	for i, m := range r.members {
		index[m.ID] = int32(i)
	}
	for p := range r.owner {
		r.owner[p] = index[c.GetPartitionOwner(p).String()]
	}
	return r
}

// Len is the number of members.
func (r *Ring) Len() int { return len(r.members) }

// Members returns the members sorted by ID; Index values refer to it. The
// slice must not be modified.
func (r *Ring) Members() []membership.Member { return r.members }

// Partition returns the partition of adID, as consistent.FindPartitionID.
func Partition(adID string) int { return int(xxhash.Sum64String(adID) % PartitionCount) }

// Index returns the position in Members of the owner of adID, or -1 when the
// ring is empty. It does not allocate.
func (r *Ring) Index(adID string) int {
	if len(r.members) == 0 {
		return -1
	}
	return int(r.owner[Partition(adID)])
}

// Owner returns the member that owns adID, false when the ring is empty.
func (r *Ring) Owner(adID string) (membership.Member, bool) {
	i := r.Index(adID)
	if i < 0 {
		return membership.Member{}, false
	}
	return r.members[i], true
}

func sortByID(ms []membership.Member) {
	slices.SortFunc(ms, func(a, b membership.Member) int { return cmp.Compare(a.ID, b.ID) })
}

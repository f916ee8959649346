// Package clusterwire holds the field numbers of the cluster protocol's
// messages that are encoded and decoded by hand rather than through
// proto.Marshal: aggregators write a closed minute's partials as bytes once
// (package aggregator, partial.go) and reducers read an ApplyRequest
// without building messages (package reducer, applywire.go). Both sides
// take the numbers from here, and the test holds them to the generated
// descriptors of adclick.cluster.v1, so renumbering a field in the .proto
// breaks the build's tests instead of the wire.
package clusterwire

import "google.golang.org/protobuf/encoding/protowire"

// Fields of clusterv1.ApplyRequest.
const (
	ApplyAggregator protowire.Number = 1 // aggregator_id
	ApplyInc        protowire.Number = 2 // incarnation
	ApplyPartials   protowire.Number = 3 // partials
)

// Fields of clusterv1.Partial.
const (
	PartialSequence protowire.Number = 1 // sequence
	PartialMinute   protowire.Number = 2 // minute
	PartialCloses   protowire.Number = 3 // closes_minute
	PartialCounts   protowire.Number = 4 // counts
)

// Fields of clusterv1.Count.
const (
	CountFilter protowire.Number = 1 // filter
	CountAd     protowire.Number = 2 // ad_id
	CountN      protowire.Number = 3 // count
)

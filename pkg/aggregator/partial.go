package aggregator

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/adclick/adclick/gen/adclick/cluster/v1"
	"github.com/adclick/adclick/pkg/clusterwire"
	"github.com/adclick/adclick/pkg/window"
)

// encodedPartial is a partial in its protobuf encoding (a
// clusterv1.Partial), as the outbox keeps it, the state stores it and
// reducers receive it. A closed minute's counts turn into bytes once, at
// the close: as messages (one per count, then marshaled for the state and
// again for each delivery) they were hundreds of MB for the garbage
// collector to scan at every close at full speed.
type encodedPartial struct {
	seq    uint64
	minute int64
	closes bool
	counts int
	b      []byte
	// before is the counts of every partial the outbox took before this
	// one, since the process started: what a reducer has yet to receive
	// from here on is a subtraction (outbox.pending).
	before int64
}

// encodePartial encodes p with sequence seq exactly as proto.Marshal
// encodes the equivalent clusterv1.Partial.
func encodePartial(p window.Partial, seq uint64) encodedPartial {
	size := 0
	for _, c := range p.Counts {
		n := countSize(c)
		size += 1 + protowire.SizeVarint(uint64(n)) + n
	}
	b := make([]byte, 0, size+32)
	b = appendVarintField(b, clusterwire.PartialSequence, seq)
	b = appendVarintField(b, clusterwire.PartialMinute, uint64(p.Minute))
	if p.Closes {
		b = appendVarintField(b, clusterwire.PartialCloses, 1)
	}
	for _, c := range p.Counts {
		b = protowire.AppendTag(b, clusterwire.PartialCounts, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(countSize(c)))
		b = appendVarintField(b, clusterwire.CountFilter, uint64(c.Filter))
		if c.Ad != "" {
			b = protowire.AppendTag(b, clusterwire.CountAd, protowire.BytesType)
			b = protowire.AppendString(b, c.Ad)
		}
		b = appendVarintField(b, clusterwire.CountN, uint64(c.N))
	}
	return encodedPartial{seq: seq, minute: p.Minute, closes: p.Closes, counts: len(p.Counts), b: b}
}

// encodeTaken builds and encodes the partials of taken minutes, numbered
// from seq on in order (as many per minute as its NumPartials).
func encodeTaken(taken []window.Taken, seq uint64) []encodedPartial {
	n := 0
	for _, t := range taken {
		n += t.NumPartials()
	}
	parts := make([]encodedPartial, 0, n)
	for _, t := range taken {
		t.EachPartial(func(p window.Partial) { // p.Counts is reused: encoded here, not kept
			parts = append(parts, encodePartial(p, seq))
			seq++
		})
	}
	return parts
}

func countSize(c window.Count) int {
	n := 0
	if c.Filter != 0 {
		n += 1 + protowire.SizeVarint(uint64(c.Filter))
	}
	if c.Ad != "" {
		n += 1 + protowire.SizeBytes(len(c.Ad))
	}
	if c.N != 0 {
		n += 1 + protowire.SizeVarint(uint64(c.N))
	}
	return n
}

// appendVarintField appends a varint field, omitted when zero (proto3).
func appendVarintField(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

// decodePartial reads back an encoded partial (from the state at a
// restart); b is kept.
func decodePartial(b []byte) (encodedPartial, error) {
	p := &clusterv1.Partial{}
	if err := proto.Unmarshal(b, p); err != nil {
		return encodedPartial{}, err
	}
	return encodedPartial{seq: p.Sequence, minute: p.Minute, closes: p.ClosesMinute, counts: len(p.Counts), b: b}, nil
}

// message decodes the partial (tests and diagnostics).
func (e encodedPartial) message() (*clusterv1.Partial, error) {
	p := &clusterv1.Partial{}
	if err := proto.Unmarshal(e.b, p); err != nil {
		return nil, fmt.Errorf("partial %d: %w", e.seq, err)
	}
	return p, nil
}

// appendApplyRequest appends the encoding of an ApplyRequest carrying batch.
func appendApplyRequest(b []byte, aggregator string, incarnation int64, batch []encodedPartial) []byte {
	b = protowire.AppendTag(b, clusterwire.ApplyAggregator, protowire.BytesType)
	b = protowire.AppendString(b, aggregator)
	b = appendVarintField(b, clusterwire.ApplyInc, uint64(incarnation))
	for _, p := range batch {
		b = protowire.AppendTag(b, clusterwire.ApplyPartials, protowire.BytesType)
		b = protowire.AppendBytes(b, p.b)
	}
	return b
}

package reducer

import (
	"reflect"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/adclick/adclick/gen/adclick/cluster/v1"
)

// seedApplies are encodings parseApply must read as proto.Unmarshal does:
// real requests, and the odd things a decoder meets (unknown fields, known
// numbers with other wire types, repeated scalars, bad UTF-8, cut bytes).
func seedApplies(t testing.TB) [][]byte {
	real, err := proto.Marshal(&clusterv1.ApplyRequest{AggregatorId: "aggregator-1", Incarnation: 7, Partials: []*clusterv1.Partial{
		{Sequence: 3, Minute: 1740826800, ClosesMinute: true, Counts: []*clusterv1.Count{{AdId: "ad-1", Count: 5}, {Filter: 2, AdId: "ad-1", Count: 1}}},
		{Sequence: 4, Minute: -60, Counts: []*clusterv1.Count{{AdId: "ünï", Count: -3}}},
		{Sequence: 5},
	}})
	if err != nil {
		t.Fatal(err)
	}
	count := func(fields ...[]byte) []byte {
		var b []byte
		for _, f := range fields {
			b = append(b, f...)
		}
		return b
	}
	varint := func(n protowire.Number, v uint64) []byte {
		return protowire.AppendVarint(protowire.AppendTag(nil, n, protowire.VarintType), v)
	}
	bytesField := func(n protowire.Number, v []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, n, protowire.BytesType), v)
	}
	fixed := func(n protowire.Number) []byte {
		return protowire.AppendFixed64(protowire.AppendTag(nil, n, protowire.Fixed64Type), 9)
	}
	odd := count(
		bytesField(1, []byte("a")), bytesField(1, []byte("b")), // last one wins
		varint(2, 1), varint(2, 1<<63), // a negative incarnation, last wins
		varint(3, 4), // partials with a varint: unknown
		fixed(99),
		bytesField(3, count(varint(1, 1), bytesField(2, []byte("x")), varint(2, 60), varint(3, 2),
			bytesField(4, count(bytesField(2, []byte("ad")), varint(3, 1), varint(3, 2), fixed(1), bytesField(7, []byte("?")))),
			bytesField(4, count(varint(2, 5))), // ad_id as a varint: unknown, so no ad
			bytesField(4, nil))),
	)
	badUTF8 := count(bytesField(3, bytesField(4, bytesField(2, []byte{0xff, 'a'}))))
	return [][]byte{real, odd, badUTF8, real[:len(real)-1], nil, {0x1a, 0x05, 0x08}, {0x80}}
}

// TestParseApplyAsProto checks the seeds, so `go test` (without -fuzz)
// already compares parseApply with proto.Unmarshal.
func TestParseApplyAsProto(t *testing.T) {
	for i, b := range seedApplies(t) {
		if err := sameAsProto(b); err != "" {
			t.Errorf("seed %d (%x): %s", i, b, err)
		}
	}
}

// FuzzParseApply compares parseApply with proto.Unmarshal on any bytes:
// the same requests decode, to the same content.
func FuzzParseApply(f *testing.F) {
	for _, b := range seedApplies(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := sameAsProto(b); err != "" {
			t.Fatal(err)
		}
	})
}

func sameAsProto(b []byte) string {
	var m clusterv1.ApplyRequest
	perr := proto.Unmarshal(b, &m)
	sc := &applyScratch{}
	werr := parseApply(b, sc)
	switch {
	case (perr == nil) != (werr == nil):
		return "proto.Unmarshal: " + errString(perr) + "; parseApply: " + errString(werr)
	case perr != nil:
		return ""
	}
	want := fromMessage(&m)
	got := sc.req
	// Empty and nil slices of counts are the same request.
	for _, r := range []*applyReq{&want, &got} {
		for i := range r.partials {
			if len(r.partials[i].counts) == 0 {
				r.partials[i].counts = nil
			}
		}
		if len(r.partials) == 0 {
			r.partials = nil
		}
	}
	if !reflect.DeepEqual(got, want) {
		return "parseApply read " + describeReq(got) + "; proto.Unmarshal " + describeReq(want)
	}
	return ""
}

func errString(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

func describeReq(r applyReq) string {
	b, _ := proto.Marshal(toMessage(r))
	return protowireString(b)
}

func toMessage(r applyReq) *clusterv1.ApplyRequest {
	m := &clusterv1.ApplyRequest{AggregatorId: r.aggregator, Incarnation: r.incarnation}
	for _, p := range r.partials {
		mp := &clusterv1.Partial{Sequence: p.seq, Minute: p.minute, ClosesMinute: p.closes}
		for _, c := range p.counts {
			mp.Counts = append(mp.Counts, &clusterv1.Count{Filter: c.filter, AdId: c.ad, Count: c.n})
		}
		m.Partials = append(m.Partials, mp)
	}
	return m
}

func protowireString(b []byte) string {
	const hex = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, hex[c>>4], hex[c&15])
	}
	return string(out)
}

package reducer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"unicode/utf8"
	"unsafe"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	clusterv1 "github.com/adclick/adclick/gen/adclick/cluster/v1"
	"github.com/adclick/adclick/pkg/clusterwire"
	"github.com/adclick/adclick/pkg/grpcbuf"
)

// applyReq is an ApplyRequest read in place: a closing minute reaches a
// reducer as thousands of requests of 16k counts each, and decoding them
// into messages (one per count, each with its ad as a new string) made a
// tenth of what the cluster allocated in the seconds after a close. The
// strings alias the request's bytes: what keeps one beyond the call copies
// it (the store encodes keys, the index clones the ads it did not know,
// Apply clones the aggregator id it remembers).
type applyReq struct {
	aggregator  string
	incarnation int64
	partials    []wirePartial
}

type wirePartial struct {
	seq    uint64
	minute int64
	closes bool
	counts []wireCount
}

type wireCount struct {
	filter int64
	ad     string
	n      int64
}

// applyScratch is the reusable memory of one ApplyFrame call.
type applyScratch struct {
	req    applyReq
	counts []wireCount // every partial's counts, back to back
}

var applyScratchPool = sync.Pool{New: func() any { return new(applyScratch) }}

// fields calls fn for every field of the message b, with its value: a
// varint, or the bytes of a length-delimited field; other wire types are
// skipped, as are fields fn does not know (proto.Unmarshal keeps them as
// unknown fields). It reads what proto.Unmarshal reads and fails where it
// fails, except for the checks fn makes on values.
func fields(b []byte, fn func(num protowire.Number, typ protowire.Type, v uint64, bs []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		if num > protowire.MaxValidNumber {
			return protowire.ParseError(-2)
		}
		b = b[n:]
		switch typ {
		case protowire.VarintType:
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return protowire.ParseError(m)
			}
			b = b[m:]
			if err := fn(num, typ, v, nil); err != nil {
				return err
			}
		case protowire.BytesType:
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return protowire.ParseError(m)
			}
			b = b[m:]
			if err := fn(num, typ, 0, v); err != nil {
				return err
			}
		default:
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				return protowire.ParseError(m)
			}
			b = b[m:]
		}
	}
	return nil
}

var errNotUTF8 = errors.New("string field contains invalid UTF-8")

func wireString(v []byte) (string, error) {
	if !utf8.Valid(v) {
		return "", errNotUTF8
	}
	return unsafe.String(unsafe.SliceData(v), len(v)), nil
}

// parseApply reads an encoded ApplyRequest into sc.req (reusing sc's
// memory); the strings alias b.
func parseApply(b []byte, sc *applyScratch) error {
	sc.req = applyReq{partials: sc.req.partials[:0]}
	sc.counts = sc.counts[:0]
	req := &sc.req
	// Counts are appended to one slice; a partial records where its own
	// start, and they are cut out once all are read (appends may move them).
	type span struct{ from, to int }
	var spans []span
	err := fields(b, func(num protowire.Number, typ protowire.Type, v uint64, bs []byte) error {
		switch {
		case num == clusterwire.ApplyAggregator && typ == protowire.BytesType:
			s, err := wireString(bs)
			req.aggregator = s
			return err
		case num == clusterwire.ApplyInc && typ == protowire.VarintType:
			req.incarnation = int64(v)
		case num == clusterwire.ApplyPartials && typ == protowire.BytesType:
			p := wirePartial{}
			from := len(sc.counts)
			err := fields(bs, func(num protowire.Number, typ protowire.Type, v uint64, bs []byte) error {
				switch {
				case num == clusterwire.PartialSequence && typ == protowire.VarintType:
					p.seq = v
				case num == clusterwire.PartialMinute && typ == protowire.VarintType:
					p.minute = int64(v)
				case num == clusterwire.PartialCloses && typ == protowire.VarintType:
					p.closes = v != 0
				case num == clusterwire.PartialCounts && typ == protowire.BytesType:
					c := wireCount{}
					if err := fields(bs, func(num protowire.Number, typ protowire.Type, v uint64, bs []byte) error {
						switch {
						case num == clusterwire.CountFilter && typ == protowire.VarintType:
							c.filter = int64(v)
						case num == clusterwire.CountAd && typ == protowire.BytesType:
							s, err := wireString(bs)
							c.ad = s
							return err
						case num == clusterwire.CountN && typ == protowire.VarintType:
							c.n = int64(v)
						}
						return nil
					}); err != nil {
						return err
					}
					sc.counts = append(sc.counts, c)
				}
				return nil
			})
			if err != nil {
				return err
			}
			req.partials = append(req.partials, p)
			spans = append(spans, span{from, len(sc.counts)})
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i, s := range spans {
		req.partials[i].counts = sc.counts[s.from:s.to:s.to]
	}
	return nil
}

// fromMessage is the applyReq of a decoded ApplyRequest.
func fromMessage(m *clusterv1.ApplyRequest) applyReq {
	req := applyReq{aggregator: m.GetAggregatorId(), incarnation: m.GetIncarnation(), partials: make([]wirePartial, len(m.GetPartials()))}
	for i, p := range m.GetPartials() {
		counts := make([]wireCount, len(p.GetCounts()))
		for j, c := range p.GetCounts() {
			counts[j] = wireCount{filter: c.GetFilter(), ad: c.GetAdId(), n: c.GetCount()}
		}
		req.partials[i] = wirePartial{seq: p.GetSequence(), minute: p.GetMinute(), closes: p.GetClosesMinute(), counts: counts}
	}
	return req
}

// ApplyFrame is Apply for a request in its encoding, read in place.
func (r *Reducer) ApplyFrame(ctx context.Context, f *grpcbuf.Frame) (*clusterv1.ApplyResponse, error) {
	sc := applyScratchPool.Get().(*applyScratch)
	defer func() {
		clear(sc.counts) // drop the references into the request
		clear(sc.req.partials)
		sc.req = applyReq{partials: sc.req.partials[:0]}
		applyScratchPool.Put(sc)
	}()
	if err := parseApply(f.B, sc); err != nil {
		r.m.applyRejected.WithLabelValues("invalid").Inc()
		return nil, status.Errorf(codes.InvalidArgument, "apply request could not be decoded: %v", err)
	}
	return r.apply(ctx, &sc.req)
}

// Register registers ReducerService on s, its Apply taking requests in
// their encoding (ApplyFrame).
func (r *Reducer) Register(s grpc.ServiceRegistrar) {
	s.RegisterService(grpcbuf.WithFrameMethod(&clusterv1.ReducerService_ServiceDesc, "Apply",
		func(r *Reducer, ctx context.Context, f *grpcbuf.Frame) (any, error) { return r.ApplyFrame(ctx, f) }), r)
}

// describe names a partial in validation errors.
func (p *wirePartial) describe(i int) string {
	return fmt.Sprintf("partial %d (sequence %d)", i, p.seq)
}

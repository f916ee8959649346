package aggregator

import (
	"context"
	"maps"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/adclick/adclick/gen/adclick/cluster/v1"
	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
	"github.com/adclick/adclick/pkg/clock"
	"github.com/adclick/adclick/pkg/grpcbuf"
	"github.com/adclick/adclick/pkg/window"
)

// TestForwardFrameReadsInPlace sends a ForwardRequest as bytes, as routers
// do: each event is answered on its own (one that does not decode is
// rejected by its index), the client's lower-case country still matches
// its filter, and nothing counted refers to the request's buffer, which
// is overwritten after the call as gRPC reuses it.
func TestForwardFrameReadsInPlace(t *testing.T) {
	env := newTestAggregator(t, start, testFilters(t, clock.Minute(start)+3600), nil)
	enc := func(ev *adclickv1.ClickEvent) []byte {
		b, err := proto.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	c1 := click("1", "ad-a", start)
	c1.Country = "us"
	c2 := click("2", "ad-b", start)
	c2.Country = "US"
	noTime := click("3", "ad-a", start)
	noTime.ClickTime = nil
	badAd := protowire.AppendTag(enc(click("4", "", start)), 2, protowire.BytesType)
	badAd = protowire.AppendString(badAd, "ad-\xff")

	var req []byte
	for _, ev := range [][]byte{enc(c1), badAd, enc(noTime), enc(c2), enc(c1)} {
		req = protowire.AppendTag(req, 1, protowire.BytesType)
		req = protowire.AppendBytes(req, ev)
	}
	resp, err := env.agg.ForwardFrame(context.Background(), &grpcbuf.Frame{B: req})
	if err != nil {
		t.Fatal(err)
	}
	want := []clusterv1.EventStatus{clusterv1.EventStatus_EVENT_STATUS_ACCEPTED, clusterv1.EventStatus_EVENT_STATUS_REJECTED,
		clusterv1.EventStatus_EVENT_STATUS_REJECTED, clusterv1.EventStatus_EVENT_STATUS_ACCEPTED, clusterv1.EventStatus_EVENT_STATUS_DUPLICATE}
	for i, s := range resp.Status {
		if s != want[i] {
			t.Fatalf("event %d: %s, want %s (reasons %v)", i, s, want[i], resp.Reasons)
		}
	}
	if r := resp.Reasons[1]; !strings.Contains(r, "ad_id is not valid UTF-8") {
		t.Fatalf("reason for the undecodable event: %q", r)
	}
	if r := resp.Reasons[2]; !strings.Contains(r, "click_time is missing") {
		t.Fatalf("reason for the event without a time: %q", r)
	}
	for i := range req {
		req[i] = 'x'
	}
	m := clock.Minute(start)
	truth := map[countKey]int64{{0, "ad-a", m}: 1, {1, "ad-a", m}: 1, {0, "ad-b", m}: 1, {1, "ad-b", m}: 1}
	if got := emitted(t, env.agg); !maps.Equal(got, truth) {
		t.Fatalf("counts\n got %v\nwant %v", got, truth)
	}
	if _, err := env.agg.ForwardFrame(context.Background(), &grpcbuf.Frame{B: []byte{0x0a, 0x05}}); err == nil || !strings.Contains(err.Error(), "does not decode") {
		t.Fatalf("a truncated request: %v", err)
	}
}

// TestEncodePartialAsProto checks that a partial encoded at the close is
// what proto.Marshal makes of the same clusterv1.Partial, zero values
// included, and that an ApplyRequest built around it decodes.
func TestEncodePartialAsProto(t *testing.T) {
	for _, p := range []window.Partial{
		{Minute: 1735787040, Closes: true, Counts: []window.Count{{Key: window.Key{Filter: 0, Ad: "ad-1"}, N: 3}, {Key: window.Key{Filter: 7, Ad: "ad-é"}, N: 1 << 40}}},
		{Minute: -60, Counts: []window.Count{{Key: window.Key{Filter: -1, Ad: ""}, N: 0}}},
		{Minute: 0, Closes: true},
	} {
		e := encodePartial(p, 42)
		want := &clusterv1.Partial{Sequence: 42, Minute: p.Minute, ClosesMinute: p.Closes}
		for _, c := range p.Counts {
			want.Counts = append(want.Counts, &clusterv1.Count{Filter: c.Filter, AdId: c.Ad, Count: c.N})
		}
		wb, err := proto.MarshalOptions{Deterministic: true}.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		if string(e.b) != string(wb) || e.counts != len(p.Counts) || e.seq != 42 {
			t.Fatalf("encoded %x (%d counts), proto.Marshal %x", e.b, e.counts, wb)
		}
		back, err := decodePartial(e.b)
		if err != nil || back.seq != 42 || back.minute != p.Minute || back.closes != p.Closes || back.counts != len(p.Counts) {
			t.Fatalf("decoded %+v, %v", back, err)
		}
		var req clusterv1.ApplyRequest
		if err := proto.Unmarshal(appendApplyRequest(nil, "agg-1", 9, []encodedPartial{e, e}), &req); err != nil {
			t.Fatal(err)
		}
		if req.AggregatorId != "agg-1" || req.Incarnation != 9 || len(req.Partials) != 2 || !proto.Equal(req.Partials[1], want) {
			t.Fatalf("ApplyRequest %v", &req)
		}
	}
}

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

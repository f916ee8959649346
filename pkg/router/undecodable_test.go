package router

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
	"github.com/adclick/adclick/pkg/event"
)

// rawCodec sends a hand-encoded request ([]byte) as is, so a test can send
// what proto.Marshal refuses (strings that are not UTF-8), and decodes
// answers as protobuf. Named "proto", so the server decodes with its own
// codec.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return proto.Unmarshal(data.Materialize(), v.(proto.Message))
}

// badUTF8Batch hand-encodes n events over many ads, of which those at
// the returned indexes carry a string field that is not UTF-8, and returns
// the expected reasons by index and the click ids that must be counted.
func badUTF8Batch(prefix string, n int) (req []byte, reasons map[int32]string, counted []string) {
	reasons = map[int32]string{}
	sec := uint64(testNow.Unix())
	for i := range n {
		id, ad, ip := fmt.Sprintf("%s-%d", prefix, i), fmt.Sprintf("ad-%d", i%29), "192.0.2.1"
		switch i % 9 {
		case 3:
			ip = "10.0.0.\xff"
			reasons[int32(i)] = "ip is not valid UTF-8"
		case 7:
			id += "\xc3"
			reasons[int32(i)] = "click_id is not valid UTF-8"
		default:
			counted = append(counted, id)
		}
		var ev []byte
		for _, f := range []struct {
			num protowire.Number
			s   string
		}{{1, id}, {2, ad}, {5, ip}} {
			ev = protowire.AppendTag(ev, f.num, protowire.BytesType)
			ev = protowire.AppendString(ev, f.s)
		}
		ts := protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), sec)
		ev = protowire.AppendBytes(protowire.AppendTag(ev, 3, protowire.BytesType), ts)
		req = protowire.AppendBytes(protowire.AppendTag(req, 1, protowire.BytesType), ev)
	}
	return req, reasons, counted
}

// checkUndecodable compares an answer with the batch's ground truth.
func checkUndecodable(t *testing.T, resp *adclickv1.IngestResponse, reasons map[int32]string, counted []string) {
	t.Helper()
	if resp.Accepted != int64(len(counted)) || resp.Duplicates != 0 || len(resp.Rejected) != len(reasons) {
		t.Fatalf("accepted %d, duplicates %d, rejected %v; want %d accepted and %d rejected",
			resp.Accepted, resp.Duplicates, resp.Rejected, len(counted), len(reasons))
	}
	for _, r := range resp.Rejected {
		if want := reasons[r.Index]; r.Reason != want {
			t.Fatalf("event %d rejected with %q, want %q", r.Index, r.Reason, want)
		}
	}
}

// receivedIDs is every click id the fake aggregators were sent, sorted.
func receivedIDs(aggs ...*aggNode) []string {
	var out []string
	for _, a := range aggs {
		a.fake.mu.Lock()
		for id := range a.fake.seen {
			out = append(out, id)
		}
		a.fake.mu.Unlock()
	}
	slices.Sort(out)
	return out
}

// TestIngestUndecodableEvent sends batches in which some events hold a
// string that is not UTF-8 (which proto3 refuses to decode) over gRPC
// Ingest, IngestStream and REST: the rest of each batch must be counted,
// exactly, and the bad events rejected by index with the field named.
func TestIngestUndecodableEvent(t *testing.T) {
	a1, a2 := startAggregator(t, "agg-1"), startAggregator(t, "agg-2")
	e := newEnv(t, DefaultConfig(), []*aggNode{a1, a2}, []*redNode{startReducer(t, "red-1", 0)})
	var want []string

	t.Run("Ingest", func(t *testing.T) {
		raw, reasons, counted := badUTF8Batch("unary", 60)
		var resp adclickv1.IngestResponse
		if err := e.conn.Invoke(ctxT(t), "/adclick.v1.IngestService/Ingest", raw, &resp, grpc.ForceCodecV2(rawCodec{})); err != nil {
			t.Fatal(err)
		}
		checkUndecodable(t, &resp, reasons, counted)
		want = append(want, counted...)
	})
	t.Run("IngestStream", func(t *testing.T) {
		st, err := e.conn.NewStream(ctxT(t), &grpc.StreamDesc{ClientStreams: true, ServerStreams: true},
			"/adclick.v1.IngestService/IngestStream", grpc.ForceCodecV2(rawCodec{}))
		if err != nil {
			t.Fatal(err)
		}
		for round := range 3 {
			raw, reasons, counted := badUTF8Batch(fmt.Sprint("stream-", round), 40)
			if err := st.SendMsg(raw); err != nil {
				t.Fatal(err)
			}
			var resp adclickv1.IngestResponse
			if err := st.RecvMsg(&resp); err != nil {
				t.Fatal(err)
			}
			checkUndecodable(t, &resp, reasons, counted)
			want = append(want, counted...)
		}
		if err := st.CloseSend(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("REST", func(t *testing.T) {
		srv := startGateway(t, e)
		ts := testNow.Format("2006-01-02T15:04:05Z")
		var evs []string
		reasons := map[int32]string{}
		var counted []string
		for i := range 20 {
			id, ip := fmt.Sprint("rest-", i), "::1"
			switch i % 6 {
			case 1:
				ip = "10.0.0.\xff"
				reasons[int32(i)] = "ip is not valid UTF-8"
			case 4:
				id += "\xed\xa0\x80" // an encoded surrogate: not UTF-8
				reasons[int32(i)] = "click_id is not valid UTF-8"
			default:
				counted = append(counted, id)
			}
			evs = append(evs, fmt.Sprintf(`{"clickId":"%s","adId":"ad-%d","clickTime":"%s","ip":"%s"}`, id, i, ts, ip))
		}
		got := doJSON(t, "POST", srv.URL+"/v1/clicks", `{"events":[`+strings.Join(evs, ",")+`]}`, http.StatusOK)
		if got["accepted"] != fmt.Sprint(len(counted)) {
			t.Fatalf("response %v; want %d accepted", got, len(counted))
		}
		rej := got["rejected"].([]any)
		if len(rej) != len(reasons) {
			t.Fatalf("rejected %v, want %v", rej, reasons)
		}
		for _, r := range rej {
			r := r.(map[string]any)
			if want := reasons[int32(r["index"].(float64))]; r["reason"] != want {
				t.Fatalf("rejection %v, want reason %q", r, want)
			}
		}
		want = append(want, counted...)
	})
	slices.Sort(want)
	if got := receivedIDs(a1, a2); !slices.Equal(got, want) {
		t.Fatalf("aggregators got %d click ids, want exactly the %d valid ones", len(got), len(want))
	}
}

// FuzzGatewayIngestJSON checks the REST path from a body to the events the
// router validates (decodeIngestJSON: protojson, then event by event): it
// never panics; a body protojson accepts decodes as protojson decodes it;
// otherwise, when the event-by-event decoding accepts it, each event is valid
// and marshals or is rejected with a reason that marshals.
func FuzzGatewayIngestJSON(f *testing.F) {
	ts := testNow.Format("2006-01-02T15:04:05Z")
	ev := func(extra string) string {
		return `{"clickId":"c1","adId":"ad-1","clickTime":"` + ts + `"` + extra + `}`
	}
	f.Add([]byte(`{"events":[` + ev(`,"ip":"::1","country":"de"`) + `]}`))
	f.Add([]byte(`{"events":[` + ev(`,"ip":"10.0.0.`+"\xff"+`"`) + `,` + ev("") + `]}`))
	f.Add([]byte(`{"events":[` + ev(`,"user_id":"u\udc00"`) + `]}`))
	f.Add([]byte(`{"events":[{"click_id":"c","adId":"a","clickTime":"yesterday","x":1}]}`))
	f.Add([]byte(`{"events":[],"events":[]}`))
	f.Add([]byte(`{"events":null}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"events":[` + ev(`,"click_id":"twice"`) + `]}`))
	opts := protojson.UnmarshalOptions{DiscardUnknown: true}
	f.Fuzz(func(t *testing.T, body []byte) {
		var strict, got adclickv1.IngestRequest
		strictErr := opts.Unmarshal(body, &strict)
		err := decodeIngestJSON(body, &got, opts)
		if strictErr == nil {
			if err != nil || !proto.Equal(&strict, &got) {
				t.Fatalf("a body protojson accepts decoded differently: %v", err)
			}
			return
		}
		if err != nil {
			return
		}
		for i, ev := range got.Events {
			r := event.Validate(ev)
			if r == "" {
				if _, err := proto.Marshal(ev); err != nil {
					t.Fatalf("event %d is valid but does not marshal: %v", i, err)
				}
			} else if _, err := proto.Marshal(&adclickv1.Rejection{Index: int32(i), Reason: r}); err != nil {
				t.Fatalf("event %d rejected with a reason that does not marshal: %q", i, r)
			}
		}
	})
}

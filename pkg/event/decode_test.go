package event

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
)

// encodeEvent hand-encodes a ClickEvent whose string fields may hold any
// bytes (proto.Marshal refuses invalid UTF-8), with click_time seconds sec.
func encodeEvent(clickID, adID, user, ip, country string, sec int64) []byte {
	var b []byte
	str := func(num protowire.Number, s string) {
		if s != "" {
			b = protowire.AppendTag(b, num, protowire.BytesType)
			b = protowire.AppendString(b, s)
		}
	}
	str(1, clickID)
	str(2, adID)
	ts := protowire.AppendTag(nil, 1, protowire.VarintType)
	ts = protowire.AppendVarint(ts, uint64(sec))
	b = protowire.AppendTag(b, 3, protowire.BytesType)
	b = protowire.AppendBytes(b, ts)
	str(4, user)
	str(5, ip)
	str(6, country)
	return b
}

// encodeRequest frames events as an IngestRequest.
func encodeRequest(events ...[]byte) []byte {
	var b []byte
	for _, e := range events {
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendBytes(b, e)
	}
	return b
}

func TestUnmarshalIngest(t *testing.T) {
	const sec = 1735787045
	good := func(id string) []byte { return encodeEvent(id, "ad-1", "u", "192.0.2.1", "us", sec) }
	tests := []struct {
		name string
		bad  []byte
		want string
	}{
		{"ip", encodeEvent("c3", "ad-1", "", "10.0.0.\xff", "", sec), "ip is not valid UTF-8"},
		{"click_id", encodeEvent("c\xc3", "ad-1", "", "", "", sec), "click_id is not valid UTF-8"},
		{"ad_id", encodeEvent("c3", "\xed\xa0\x80", "", "", "", sec), "ad_id is not valid UTF-8"},
		{"user_id", encodeEvent("c3", "ad-1", "\xff\xfe", "", "", sec), "user_id is not valid UTF-8"},
		{"country", encodeEvent("c3", "ad-1", "", "", "u\xff", sec), "country is not valid UTF-8"},
		{"malformed click_time", append(encodeEvent("c3", "ad-1", "", "", "", sec), 0x1a, 0x02, 0x08, 0xff), "event could not be decoded: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := encodeRequest(good("c0"), good("c1"), good("c2"), tt.bad, good("c4"))
			if err := proto.Unmarshal(b, &adclickv1.IngestRequest{}); err == nil {
				t.Fatal("the whole request decodes: the test does not exercise the fallback")
			}
			var req adclickv1.IngestRequest
			if err := UnmarshalIngest(b, &req); err != nil {
				t.Fatal(err)
			}
			if len(req.Events) != 5 {
				t.Fatalf("%d events, want 5", len(req.Events))
			}
			for i, ev := range req.Events {
				r := Validate(ev)
				if i != 3 {
					if r != "" || ev.ClickId != "c"+string(rune('0'+i)) || ev.ClickTime.GetSeconds() != sec {
						t.Fatalf("event %d: %v rejected %q", i, ev, r)
					}
					continue
				}
				if !strings.HasPrefix(r, tt.want) {
					t.Fatalf("event 3 rejected with %q, want %q", r, tt.want)
				}
			}
			resp := &adclickv1.IngestResponse{Rejected: []*adclickv1.Rejection{{Index: 3, Reason: Validate(req.Events[3])}}}
			if _, err := proto.Marshal(resp); err != nil {
				t.Fatalf("the rejection does not marshal: %v", err)
			}
		})
	}
	t.Run("broken framing still fails", func(t *testing.T) {
		b := encodeRequest(good("c0"))
		if err := UnmarshalIngest(b[:len(b)-3], &adclickv1.IngestRequest{}); err == nil {
			t.Fatal("a truncated request decoded")
		}
	})
	t.Run("unknown request fields kept", func(t *testing.T) {
		b := protowire.AppendTag(encodeRequest(good("c0")), 7, protowire.VarintType)
		b = protowire.AppendVarint(b, 5)
		var req adclickv1.IngestRequest
		if err := UnmarshalIngest(b, &req); err != nil {
			t.Fatal(err)
		}
		var want adclickv1.IngestRequest
		if err := proto.Unmarshal(b, &want); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(&req, &want) {
			t.Fatalf("got %v, want %v", &req, &want)
		}
	})
}

func TestUnmarshalIngestJSON(t *testing.T) {
	opts := protojson.UnmarshalOptions{DiscardUnknown: true}
	ev := func(id, extra string) string {
		return `{"clickId":"` + id + `","adId":"ad-1","clickTime":"2025-01-02T03:04:05Z"` + extra + `}`
	}
	tests := []struct {
		name, bad, want string
	}{
		{"ip invalid UTF-8", ev("c1", `,"ip":"10.0.0.`+"\xff"+`"`), "ip is not valid UTF-8"},
		{"user_id lone surrogate", ev("c1", `,"user_id":"u\udc00"`), "user_id is not valid UTF-8"},
		{"click_time malformed", `{"clickId":"c1","adId":"a","clickTime":"yesterday"}`, "click_time could not be decoded: "},
		{"country not a string", ev("c1", `,"country":5`), "country could not be decoded: "},
		{"field twice", ev("c1", `,"click_id":"c9"`), "click_id is set twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := []byte(`{"events":[` + ev("c0", "") + "," + tt.bad + "," + ev("c2", `,"ip":"::1"`) + `]}`)
			if err := opts.Unmarshal(body, &adclickv1.IngestRequest{}); err == nil {
				t.Fatal("the whole body decodes: the test does not exercise the fallback")
			}
			var req adclickv1.IngestRequest
			if err := UnmarshalIngestJSON(body, &req, opts); err != nil {
				t.Fatal(err)
			}
			if len(req.Events) != 3 || req.Events[0].ClickId != "c0" || req.Events[2].Ip != "::1" {
				t.Fatalf("events %v", req.Events)
			}
			if r := Validate(req.Events[0]); r != "" {
				t.Fatalf("event 0 rejected: %q", r)
			}
			if r := Validate(req.Events[1]); !strings.HasPrefix(r, tt.want) {
				t.Fatalf("event 1 rejected with %q, want %q", r, tt.want)
			}
		})
	}
	for _, body := range []string{`[]`, `{"events":5}`, `{"events":[1]}`, `{"events":[null]}`, `{"events":[],"events":[]}`, `{"events":[{}]`} {
		if err := UnmarshalIngestJSON([]byte(body), &adclickv1.IngestRequest{}, opts); err == nil {
			t.Errorf("%s decoded; want an error, as protojson gives", body)
		}
	}
}

func TestValidateRejectsUndecodable(t *testing.T) {
	if r := Validate(Undecodable("ip is not valid UTF-8")); r != "ip is not valid UTF-8" {
		t.Fatalf("Validate = %q", r)
	}
	// A forged carrier only rejects its own event, with valid UTF-8.
	ev := validEvent()
	ev.ProtoReflect().SetUnknown(Undecodable("x\xff").ProtoReflect().GetUnknown())
	if r := Validate(ev); r != "x\uFFFD" {
		t.Fatalf("Validate = %q", r)
	}
	// Other unknown fields leave a valid event valid.
	ev = validEvent()
	ev.ProtoReflect().SetUnknown(protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 1))
	if r := Validate(ev); r != "" {
		t.Fatalf("Validate = %q", r)
	}
}

// FuzzUnmarshalIngest checks the lenient protobuf decoder of the router's
// codec: it never panics; where proto.Unmarshal succeeds it decodes the
// same; where only it succeeds, every field-1 entry of the request is an
// event at its index, each either valid (and then marshals, as forwarding
// needs) or rejected by Validate with a reason that is valid UTF-8 (the
// response carrying it must marshal).
func FuzzUnmarshalIngest(f *testing.F) {
	f.Add(encodeRequest(encodeEvent("c1", "ad-1", "u", "192.0.2.1", "us", 1735787045)))
	f.Add(encodeRequest(encodeEvent("c1", "ad-1", "", "10.0.0.\xff", "", 1735787045), encodeEvent("c\xc3", "a", "", "", "", 1)))
	f.Add(encodeRequest([]byte{0x1a, 0x02, 0x08, 0xff}))
	f.Add([]byte{0x0a, 0x05, 0x0a, 0x03, 0xff, 0xfe, 0xfd})
	f.Add([]byte{0x0a})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var strict, lenient adclickv1.IngestRequest
		strictErr := proto.Unmarshal(b, &strict)
		err := UnmarshalIngest(b, &lenient)
		if strictErr == nil {
			if err != nil || !proto.Equal(&strict, &lenient) {
				t.Fatalf("valid request decoded differently: %v, %v vs %v", err, &lenient, &strict)
			}
			return
		}
		if err != nil {
			return
		}
		entries := 0
		for rest := b; len(rest) > 0; {
			num, typ, n := protowire.ConsumeTag(rest)
			if n < 0 {
				t.Fatalf("decoded a request whose framing is broken")
			}
			m := protowire.ConsumeFieldValue(num, typ, rest[n:])
			if m < 0 {
				t.Fatalf("decoded a request whose framing is broken")
			}
			if num == 1 && typ == protowire.BytesType {
				entries++
			}
			rest = rest[n+m:]
		}
		if entries != len(lenient.Events) {
			t.Fatalf("%d events decoded from %d entries", len(lenient.Events), entries)
		}
		checkEvents(t, lenient.Events)
	})
}

// checkEvents checks that each event is valid and marshals, or is rejected
// with a reason that marshals.
func checkEvents(t *testing.T, evs []*adclickv1.ClickEvent) {
	t.Helper()
	for i, ev := range evs {
		r := Validate(ev)
		if r == "" {
			if _, err := proto.Marshal(ev); err != nil {
				t.Fatalf("event %d is valid but does not marshal: %v", i, err)
			}
			continue
		}
		if _, err := proto.Marshal(&adclickv1.Rejection{Index: int32(i), Reason: r}); err != nil {
			t.Fatalf("event %d rejected with a reason that does not marshal: %q", i, r)
		}
	}
}

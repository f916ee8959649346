package event

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
)

func TestParseEvent(t *testing.T) {
	const sec = 1735787045
	// Two click_time fields merge (seconds from the first, nanos from the
	// second); a repeated string field keeps its last value; an unknown
	// field and a known number with another wire type are skipped.
	merged := encodeEvent("c1", "ad-1", "u", "192.0.2.1", "de", sec)
	nanos := protowire.AppendTag(nil, 2, protowire.VarintType)
	nanos = protowire.AppendVarint(nanos, 7)
	merged = protowire.AppendTag(merged, 3, protowire.BytesType)
	merged = protowire.AppendBytes(merged, nanos)
	merged = protowire.AppendTag(merged, 2, protowire.BytesType)
	merged = protowire.AppendString(merged, "ad-2")
	merged = protowire.AppendTag(merged, 99, protowire.VarintType)
	merged = protowire.AppendVarint(merged, 1)
	merged = protowire.AppendTag(merged, 1, protowire.Fixed32Type)
	merged = protowire.AppendFixed32(merged, 1)

	tests := []struct {
		name       string
		b          []byte
		wantParse  string // prefix of ParseEvent's reason
		wantValid  string // prefix of Validate's reason, when it parses
		wantFields Fields
	}{
		{name: "valid", b: encodeEvent("c1", "ad-1", "u", "192.0.2.1", "us", sec),
			wantFields: Fields{ClickID: "c1", AdID: "ad-1", UserID: "u", IP: "192.0.2.1", Country: "US", Seconds: sec, HasTime: true}},
		{name: "merged", b: merged,
			wantFields: Fields{ClickID: "c1", AdID: "ad-2", UserID: "u", IP: "192.0.2.1", Country: "DE", Seconds: sec, Nanos: 7, HasTime: true}},
		{name: "ad_id not UTF-8", b: encodeEvent("c1", "\xed\xa0\x80", "", "", "", sec), wantParse: "ad_id is not valid UTF-8"},
		{name: "country not UTF-8", b: encodeEvent("c1", "a", "", "", "u\xff", sec), wantParse: "country is not valid UTF-8"},
		{name: "malformed click_time", b: append(encodeEvent("c1", "a", "", "", "", sec), 0x1a, 0x02, 0x08, 0xff), wantParse: "event could not be decoded: "},
		{name: "truncated", b: encodeEvent("c1", "a", "", "", "", sec)[:3], wantParse: "event could not be decoded: "},
		{name: "no click_time", b: encodeEvent("c1", "a", "", "", "", sec)[:7], wantValid: "click_time is missing"},
		{name: "click_time out of range", b: encodeEvent("c1", "a", "", "", "", 253402300800), wantValid: "click_time is not a valid timestamp: "},
		{name: "placeholder", b: mustMarshal(t, Undecodable("user_id is not valid UTF-8")), wantValid: "user_id is not valid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f Fields
			r := ParseEvent(tt.b, &f)
			if tt.wantParse != "" || r != "" {
				if tt.wantParse == "" || !strings.HasPrefix(r, tt.wantParse) {
					t.Fatalf("ParseEvent = %q, want %q", r, tt.wantParse)
				}
				return
			}
			v := f.Validate()
			if tt.wantValid != "" || v != "" {
				if tt.wantValid == "" || !strings.HasPrefix(v, tt.wantValid) {
					t.Fatalf("Validate = %q, want %q", v, tt.wantValid)
				}
				return
			}
			tt.wantFields.utf8Checked = true
			if f != tt.wantFields {
				t.Fatalf("fields %+v, want %+v", f, tt.wantFields)
			}
		})
	}
}

func mustMarshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseEventDoesNotAllocate(t *testing.T) {
	b := encodeEvent("c-123456", "ad-42", "user-9", "2001:db8::1", "gb", 1735787045)
	var f Fields
	if n := testing.AllocsPerRun(100, func() {
		if r := ParseEvent(b, &f); r != "" {
			t.Fatal(r)
		}
		if r := f.Validate(); r != "" {
			t.Fatal(r)
		}
	}); n != 0 {
		t.Fatalf("%v allocations per event", n)
	}
}

func TestSplitEvents(t *testing.T) {
	e1 := encodeEvent("c1", "ad-1", "", "", "", 1)
	e2 := encodeEvent("c2", "ad-2", "", "", "", 2)
	req := encodeRequest(e1)
	req = protowire.AppendTag(req, 7, protowire.VarintType) // unknown, skipped
	req = protowire.AppendVarint(req, 3)
	req = append(req, encodeRequest(e2)...)
	evs, err := SplitEvents(req, nil)
	if err != nil || len(evs) != 2 || string(evs[0]) != string(e1) || string(evs[1]) != string(e2) {
		t.Fatalf("SplitEvents = %q, %v", evs, err)
	}
	if _, err := SplitEvents(req[:len(req)-1], nil); err == nil {
		t.Fatal("a truncated request was split")
	}
	var again []byte
	for _, e := range evs {
		again = AppendEvent(again, e)
	}
	if string(again) != string(encodeRequest(e1, e2)) {
		t.Fatal("AppendEvent does not frame as an IngestRequest does")
	}
}

// FuzzParseEvent checks the in-place reader against proto.Unmarshal: the
// same bytes decode with both or with neither, to the same fields, and
// Validate gives the same answer on both forms.
func FuzzParseEvent(f *testing.F) {
	f.Add(encodeEvent("c1", "ad-1", "u", "192.0.2.1", "us", 1735787045))
	f.Add(encodeEvent("c1", "ad-1", "", "10.0.0.\xff", "", 1735787045))
	f.Add(append(encodeEvent("c1", "a", "", "", "", 1), 0x1a, 0x02, 0x08, 0xff))
	f.Add([]byte{0x1a, 0x04, 0x08, 0x01, 0x10, 0x80})
	f.Add([]byte{0x0b, 0x0c})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var ev adclickv1.ClickEvent
		perr := proto.Unmarshal(b, &ev)
		var fs Fields
		r := ParseEvent(b, &fs)
		if (perr == nil) != (r == "") {
			t.Fatalf("proto.Unmarshal: %v; ParseEvent: %q", perr, r)
		}
		if perr != nil {
			if !isValidUTF8(r) {
				t.Fatalf("reason %q is not UTF-8", r)
			}
			return
		}
		want := Fields{ClickID: ev.ClickId, AdID: ev.AdId, UserID: ev.UserId, IP: ev.Ip, Country: ev.Country}
		if ev.ClickTime != nil {
			want.HasTime, want.Seconds, want.Nanos = true, ev.ClickTime.Seconds, ev.ClickTime.Nanos
		}
		got := fs
		got.undecodable, got.utf8Checked = "", false
		if got != want {
			t.Fatalf("fields %+v, proto.Unmarshal %+v", got, want)
		}
		if v1, v2 := Validate(&ev), fs.Validate(); v1 != v2 || (v1 == "" && ev.Country != fs.Country) {
			t.Fatalf("Validate: %q (country %q) on the message, %q (%q) in place", v1, ev.Country, v2, fs.Country)
		}
	})
}

// FuzzSplitEvents checks the request framing against proto.Unmarshal.
func FuzzSplitEvents(f *testing.F) {
	f.Add(encodeRequest(encodeEvent("c1", "ad-1", "u", "192.0.2.1", "us", 1735787045)))
	f.Add([]byte{0x0a, 0x05, 0x0a, 0x03, 0xff, 0xfe, 0xfd})
	f.Add([]byte{0x0a})
	f.Fuzz(func(t *testing.T, b []byte) {
		var req adclickv1.IngestRequest
		perr := proto.Unmarshal(b, &req)
		evs, err := SplitEvents(b, nil)
		if perr == nil && err != nil {
			t.Fatalf("proto.Unmarshal decodes, SplitEvents: %v", err)
		}
		if perr != nil || err != nil {
			return
		}
		if len(evs) != len(req.Events) {
			t.Fatalf("%d events split, %d decoded", len(evs), len(req.Events))
		}
		for i, e := range evs {
			var ev adclickv1.ClickEvent
			if err := proto.Unmarshal(e, &ev); err != nil || !proto.Equal(&ev, req.Events[i]) {
				t.Fatalf("event %d: %v", i, err)
			}
		}
	})
}

func isValidUTF8(s string) bool { return strings.ToValidUTF8(s, "") == s }

package event

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func validEvent() *adclickv1.ClickEvent {
	return &adclickv1.ClickEvent{
		ClickId:   "c-1",
		AdId:      "ad-1",
		ClickTime: timestamppb.New(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)),
		UserId:    "u-1",
		Ip:        "192.0.2.1",
		Country:   "US",
	}
}

func TestValidate(t *testing.T) {
	long := strings.Repeat("x", 200)
	tests := []struct {
		name        string
		mutate      func(*adclickv1.ClickEvent)
		want        string
		wantCountry string
	}{
		{name: "valid", mutate: func(*adclickv1.ClickEvent) {}, wantCountry: "US"},
		{name: "optional fields empty", mutate: func(e *adclickv1.ClickEvent) { e.UserId, e.Ip, e.Country = "", "", "" }},
		{name: "country lower case normalized", mutate: func(e *adclickv1.ClickEvent) { e.Country = "de" }, wantCountry: "DE"},
		{name: "country mixed case normalized", mutate: func(e *adclickv1.ClickEvent) { e.Country = "gB" }, wantCountry: "GB"},
		{name: "ipv6", mutate: func(e *adclickv1.ClickEvent) { e.Ip = "2001:db8::1" }, wantCountry: "US"},
		{name: "ids at the limit", mutate: func(e *adclickv1.ClickEvent) {
			e.ClickId, e.AdId, e.UserId = long[:128], long[:128], long[:128]
		}, wantCountry: "US"},
		{name: "nil event", want: "event is empty"},
		{name: "click_id empty", mutate: func(e *adclickv1.ClickEvent) { e.ClickId = "" }, want: "click_id is empty"},
		{name: "click_id too long", mutate: func(e *adclickv1.ClickEvent) { e.ClickId = long }, want: "click_id is 200 bytes; at most 128 allowed"},
		{name: "click_id bad utf8", mutate: func(e *adclickv1.ClickEvent) { e.ClickId = "a\xffb" }, want: "click_id is not valid UTF-8"},
		{name: "ad_id empty", mutate: func(e *adclickv1.ClickEvent) { e.AdId = "" }, want: "ad_id is empty"},
		{name: "ad_id too long", mutate: func(e *adclickv1.ClickEvent) { e.AdId = long }, want: "ad_id is 200 bytes; at most 128 allowed"},
		{name: "click_time missing", mutate: func(e *adclickv1.ClickEvent) { e.ClickTime = nil }, want: "click_time is missing"},
		{name: "click_time invalid", mutate: func(e *adclickv1.ClickEvent) { e.ClickTime = &timestamppb.Timestamp{Seconds: 1, Nanos: -1} },
			want: "click_time is not a valid timestamp: "},
		{name: "user_id too long", mutate: func(e *adclickv1.ClickEvent) { e.UserId = long[:129] }, want: "user_id is 129 bytes; at most 128 allowed"},
		{name: "ip truncated", mutate: func(e *adclickv1.ClickEvent) { e.Ip = "1.2.3" }, want: `ip "1.2.3" is not an IPv4 or IPv6 address`},
		{name: "ip hostname", mutate: func(e *adclickv1.ClickEvent) { e.Ip = "example.com" }, want: `ip "example.com" is not an IPv4 or IPv6 address`},
		{name: "ip with zone", mutate: func(e *adclickv1.ClickEvent) { e.Ip = "fe80::1%eth0" }, want: `ip "fe80::1%eth0" is not an IPv4 or IPv6 address`},
		{name: "country three letters", mutate: func(e *adclickv1.ClickEvent) { e.Country = "USA" }, want: `country "USA" is not an ISO 3166-1 alpha-2 code`},
		{name: "country digits", mutate: func(e *adclickv1.ClickEvent) { e.Country = "U1" }, want: `country "U1" is not an ISO 3166-1 alpha-2 code`},
		{name: "country one letter", mutate: func(e *adclickv1.ClickEvent) { e.Country = "u" }, want: `country "u" is not an ISO 3166-1 alpha-2 code`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ev *adclickv1.ClickEvent
			if tt.mutate != nil {
				ev = validEvent()
				tt.mutate(ev)
			}
			got := Validate(ev)
			if tt.want == "" {
				if got != "" {
					t.Fatalf("Validate = %q, want valid", got)
				}
				if ev.Country != tt.wantCountry {
					t.Fatalf("country = %q, want %q", ev.Country, tt.wantCountry)
				}
				return
			}
			if !strings.HasPrefix(got, tt.want) || (got != tt.want && !strings.HasSuffix(tt.want, ": ")) {
				t.Fatalf("Validate = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestValidateDoesNotAllocate(t *testing.T) {
	ev := validEvent()
	ev.Ip = "2001:db8::1"
	allocs := testing.AllocsPerRun(100, func() {
		ev.Country = "fr"
		if r := Validate(ev); r != "" {
			t.Fatal(r)
		}
	})
	if allocs != 0 {
		t.Fatalf("Validate allocates %v times per valid event, want 0", allocs)
	}
}

// FuzzValidate checks that Validate never panics, that what it accepts obeys
// the documented invariants (and so can be marshaled to aggregators), and
// that it is idempotent.
func FuzzValidate(f *testing.F) {
	f.Add("c-1", "ad-1", int64(1700000000), int32(0), "u", "192.0.2.1", "us")
	f.Add("", "ad", int64(0), int32(0), "", "", "")
	f.Add("c", "", int64(-1), int32(-5), "", "::1", "USA")
	f.Add("c", "a", int64(253402300800), int32(0), "", "1.2.3", "é")
	f.Add("c\xff", "a", int64(1), int32(999999999), "", "fe80::1%eth0", "zz")
	f.Add(strings.Repeat("c", 129), "a", int64(1), int32(0), "", "", "")
	f.Fuzz(func(t *testing.T, clickID, adID string, sec int64, nanos int32, user, ip, country string) {
		ev := &adclickv1.ClickEvent{ClickId: clickID, AdId: adID, ClickTime: &timestamppb.Timestamp{Seconds: sec, Nanos: nanos},
			UserId: user, Ip: ip, Country: country}
		if Validate(ev) != "" {
			return
		}
		if ev.ClickId == "" || len(ev.ClickId) > MaxIDBytes || ev.AdId == "" || len(ev.AdId) > MaxIDBytes || len(ev.UserId) > MaxIDBytes {
			t.Fatalf("accepted bad ids: %v", ev)
		}
		if !ev.ClickTime.IsValid() {
			t.Fatalf("accepted invalid time %v", ev.ClickTime)
		}
		if ev.Ip != "" {
			if _, err := netip.ParseAddr(ev.Ip); err != nil {
				t.Fatalf("accepted ip %q", ev.Ip)
			}
		}
		if ev.Country != "" && (len(ev.Country) != 2 || strings.ToUpper(ev.Country) != ev.Country || !strings.EqualFold(ev.Country, country)) {
			t.Fatalf("country %q normalized to %q", country, ev.Country)
		}
		if _, err := proto.Marshal(ev); err != nil {
			t.Fatalf("accepted event does not marshal: %v", err)
		}
		before := proto.Clone(ev)
		if r := Validate(ev); r != "" || !proto.Equal(before, ev) {
			t.Fatalf("second Validate changed the event or rejected it: %q", r)
		}
	})
}

func BenchmarkValidate(b *testing.B) {
	ev := validEvent()
	b.ReportAllocs()
	for b.Loop() {
		ev.Country = "us"
		if r := Validate(ev); r != "" {
			b.Fatal(r)
		}
	}
}

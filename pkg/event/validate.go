package event

import (
	"net/netip"
	"strconv"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"

	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
)

// MaxIDBytes bounds click_id, ad_id and user_id: room for any UUID, URL-safe
// hash or composite key, while keeping dedup state per click small.
const MaxIDBytes = 128

// Validate checks one event and normalizes it in place (country upper-cased).
// It returns "" when the event is valid, else a reason a person understands
// (always valid UTF-8, so the response carrying it marshals). An Undecodable
// placeholder is rejected with the reason it carries.
// It does not allocate for valid events, and is safe to call concurrently on distinct events.
func Validate(ev *adclickv1.ClickEvent) string {
	if ev == nil {
		return "event is empty"
	}
	if u := ev.ProtoReflect().GetUnknown(); len(u) > 0 {
		if r := undecodableReason(u); r != "" {
			return r // an Undecodable placeholder
		}
	}
	f := Fields{ClickID: ev.ClickId, AdID: ev.AdId, UserID: ev.UserId, IP: ev.Ip, Country: ev.Country}
	if ev.ClickTime != nil {
		f.HasTime, f.Seconds, f.Nanos = true, ev.ClickTime.Seconds, ev.ClickTime.Nanos
	}
	r := f.Validate()
	ev.Country = f.Country
	return r
}

// Validate checks the fields of one event and normalizes them in place
// (country upper-cased), as Validate does a ClickEvent. It does not
// allocate for valid events.
func (f *Fields) Validate() string {
	if f.undecodable != "" {
		return f.undecodable
	}
	if !f.utf8Checked {
		for _, s := range [...]struct{ name, v string }{{"click_id", f.ClickID}, {"ad_id", f.AdID}, {"user_id", f.UserID}, {"ip", f.IP}, {"country", f.Country}} {
			if !utf8.ValidString(s.v) {
				return s.name + " is not valid UTF-8"
			}
		}
	}
	if r := checkID("click_id", f.ClickID, true); r != "" {
		return r
	}
	if r := checkID("ad_id", f.AdID, true); r != "" {
		return r
	}
	if !f.HasTime {
		return "click_time is missing"
	}
	if f.Seconds < minTimestamp || f.Seconds > maxTimestamp || f.Nanos < 0 || f.Nanos >= 1e9 {
		ts := &timestamppb.Timestamp{Seconds: f.Seconds, Nanos: f.Nanos}
		return "click_time is not a valid timestamp: " + ts.CheckValid().Error()
	}
	if r := checkID("user_id", f.UserID, false); r != "" {
		return r
	}
	if f.IP != "" {
		if a, err := netip.ParseAddr(f.IP); err != nil || a.Zone() != "" {
			return "ip " + strconv.Quote(f.IP) + " is not an IPv4 or IPv6 address"
		}
	}
	if f.Country != "" {
		c, ok := upperCountry(f.Country)
		if !ok {
			return "country " + strconv.Quote(f.Country) + " is not an ISO 3166-1 alpha-2 code"
		}
		f.Country = c
	}
	return ""
}

// The range google.protobuf.Timestamp allows: 0001-01-01 to 9999-12-31.
const (
	minTimestamp = -62135596800
	maxTimestamp = 253402300799
)

// NormalizeCountry returns a valid country in its canonical (upper-case)
// form, without allocating: aggregators read the client's bytes, which the
// router validated but did not rewrite.
func NormalizeCountry(c string) string {
	u, _ := upperCountry(c)
	return u
}

// checkID checks the size and encoding of an id field.
func checkID(name, v string, required bool) string {
	switch {
	case v == "":
		if required {
			return name + " is empty"
		}
		return ""
	case len(v) > MaxIDBytes:
		return name + " is " + strconv.Itoa(len(v)) + " bytes; at most " + strconv.Itoa(MaxIDBytes) + " allowed"
	}
	return ""
}

// upperCodes interns every two-letter upper-case code, so normalizing a
// lower-case country never allocates.
var upperCodes = func() (t [26 * 26]string) {
	for i := range t {
		t[i] = string([]byte{'A' + byte(i/26), 'A' + byte(i%26)})
	}
	return t
}()

// upperCountry returns s as two upper-case ASCII letters.
func upperCountry(s string) (string, bool) {
	if len(s) != 2 {
		return s, false
	}
	a, b := s[0], s[1]
	if !isLetter(a) || !isLetter(b) {
		return s, false
	}
	if a <= 'Z' && b <= 'Z' {
		return s, true
	}
	return upperCodes[int((a&^0x20)-'A')*26+int((b&^0x20)-'A')], true
}

func isLetter(c byte) bool { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') }

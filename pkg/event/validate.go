package event

import (
	"net/netip"
	"strconv"
	"unicode/utf8"

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
	if r := checkID("click_id", ev.ClickId, true); r != "" {
		return r
	}
	if r := checkID("ad_id", ev.AdId, true); r != "" {
		return r
	}
	if ev.ClickTime == nil {
		return "click_time is missing"
	}
	if err := ev.ClickTime.CheckValid(); err != nil {
		return "click_time is not a valid timestamp: " + err.Error()
	}
	if r := checkID("user_id", ev.UserId, false); r != "" {
		return r
	}
	if ev.Ip != "" {
		if !utf8.ValidString(ev.Ip) {
			return "ip is not valid UTF-8"
		}
		if a, err := netip.ParseAddr(ev.Ip); err != nil || a.Zone() != "" {
			return "ip " + strconv.Quote(ev.Ip) + " is not an IPv4 or IPv6 address"
		}
	}
	if ev.Country != "" {
		if !utf8.ValidString(ev.Country) {
			return "country is not valid UTF-8"
		}
		c, ok := upperCountry(ev.Country)
		if !ok {
			return "country " + strconv.Quote(ev.Country) + " is not an ISO 3166-1 alpha-2 code"
		}
		ev.Country = c
	}
	return ""
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
	case !utf8.ValidString(v):
		return name + " is not valid UTF-8"
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

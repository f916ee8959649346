package filter

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
	"github.com/adclick/adclick/pkg/clock"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// ErrInvalid marks a filter definition that cannot be accepted.
var ErrInvalid = errors.New("invalid filter")

// Limits on a filter definition, so one filter cannot slow every click down.
const (
	MaxValues = 1000 // per field
)

// Filter is a stored filter definition.
type Filter struct {
	ID            int64    `json:"id"`
	Countries     []string `json:"countries,omitempty"` // upper case ISO 3166-1 alpha-2
	IPs           []string `json:"ips,omitempty"`       // addresses or CIDR prefixes
	UserIDs       []string `json:"user_ids,omitempty"`
	EffectiveFrom int64    `json:"effective_from"` // minute, unix seconds
}

// Normalize checks a definition and returns it in canonical form: countries
// upper case, addresses and prefixes in their canonical text.
func Normalize(f Filter) (Filter, error) {
	if len(f.Countries)+len(f.IPs)+len(f.UserIDs) == 0 {
		return f, fmt.Errorf("%w: set at least one of countries, ips, user_ids (filter 0 already means all clicks)", ErrInvalid)
	}
	for name, n := range map[string]int{"countries": len(f.Countries), "ips": len(f.IPs), "user_ids": len(f.UserIDs)} {
		if n > MaxValues {
			return f, fmt.Errorf("%w: %s has %d values, at most %d allowed", ErrInvalid, name, n, MaxValues)
		}
	}
	out := Filter{ID: f.ID, EffectiveFrom: f.EffectiveFrom}
	for _, c := range f.Countries {
		u := strings.ToUpper(strings.TrimSpace(c))
		if !IsCountryCode(u) {
			return f, fmt.Errorf("%w: country %q is not an ISO 3166-1 alpha-2 code (two letters, e.g. \"US\")", ErrInvalid, c)
		}
		out.Countries = append(out.Countries, u)
	}
	for _, s := range f.IPs {
		s = strings.TrimSpace(s)
		if strings.Contains(s, "/") {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return f, fmt.Errorf("%w: ip %q is not an address or CIDR prefix: %v", ErrInvalid, s, err)
			}
			out.IPs = append(out.IPs, p.Masked().String())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return f, fmt.Errorf("%w: ip %q is not an address or CIDR prefix: %v", ErrInvalid, s, err)
		}
		out.IPs = append(out.IPs, a.Unmap().String())
	}
	for _, u := range f.UserIDs {
		if u == "" || len(u) > 128 {
			return f, fmt.Errorf("%w: user id %q must be 1..128 bytes", ErrInvalid, u)
		}
		out.UserIDs = append(out.UserIDs, u)
	}
	return out, nil
}

// IsCountryCode reports whether s is two upper-case ASCII letters.
func IsCountryCode(s string) bool {
	return len(s) == 2 && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z'
}

// FromProto converts an API filter (ID and EffectiveFrom are taken as given).
func FromProto(p *adclickv1.Filter) Filter {
	f := Filter{ID: p.GetId(), Countries: p.GetCountries(), IPs: p.GetIps(), UserIDs: p.GetUserIds()}
	if p.GetEffectiveFrom() != nil {
		f.EffectiveFrom = clock.Minute(p.GetEffectiveFrom().AsTime())
	}
	return f
}

// ToProto converts to the API form.
func (f Filter) ToProto() *adclickv1.Filter {
	return &adclickv1.Filter{
		Id:            f.ID,
		Countries:     f.Countries,
		Ips:           f.IPs,
		UserIds:       f.UserIDs,
		EffectiveFrom: timestamppb.New(clock.MinuteTime(f.EffectiveFrom)),
	}
}

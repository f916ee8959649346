package filter

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
)

// Matcher is a compiled filter. Immutable, safe for concurrent use.
type Matcher struct {
	ID            int64
	EffectiveFrom int64
	countries     map[string]struct{}
	addrs         map[netip.Addr]struct{}
	prefixes      []netip.Prefix
	users         map[string]struct{}
}

// Compile prepares f for matching. f must be normalized.
func Compile(f Filter) (*Matcher, error) {
	m := &Matcher{ID: f.ID, EffectiveFrom: f.EffectiveFrom}
	if len(f.Countries) > 0 {
		m.countries = make(map[string]struct{}, len(f.Countries))
		for _, c := range f.Countries {
			m.countries[strings.ToUpper(c)] = struct{}{}
		}
	}
	for _, s := range f.IPs {
		if strings.Contains(s, "/") {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, fmt.Errorf("filter %d: %w", f.ID, err)
			}
			m.prefixes = append(m.prefixes, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("filter %d: %w", f.ID, err)
		}
		if m.addrs == nil {
			m.addrs = make(map[netip.Addr]struct{})
		}
		m.addrs[a.Unmap()] = struct{}{}
	}
	if len(f.UserIDs) > 0 {
		m.users = make(map[string]struct{}, len(f.UserIDs))
		for _, u := range f.UserIDs {
			m.users[u] = struct{}{}
		}
	}
	return m, nil
}

// Click is the part of a click a filter looks at. Country must be upper
// case; IP is the parsed address (zero if the click has none or it is
// invalid).
type Click struct {
	Country string
	IP      netip.Addr
	UserID  string
}

// Match reports whether c matches every non-empty field of the filter.
func (m *Matcher) Match(c *Click) bool {
	if m.countries != nil {
		if _, ok := m.countries[c.Country]; !ok {
			return false
		}
	}
	if m.addrs != nil || m.prefixes != nil {
		if !c.IP.IsValid() || !m.matchIP(c.IP.Unmap()) {
			return false
		}
	}
	if m.users != nil {
		if _, ok := m.users[c.UserID]; !ok {
			return false
		}
	}
	return true
}

func (m *Matcher) matchIP(a netip.Addr) bool {
	if _, ok := m.addrs[a]; ok {
		return true
	}
	for _, p := range m.prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Set is an immutable snapshot of the active filters, sorted by ID.
type Set struct {
	matchers []*Matcher
	byID     map[int64]Filter
}

// NewSet compiles filters into a Set. Filters that do not compile are
// returned in the error and left out.
func NewSet(filters []Filter) (*Set, error) {
	s := &Set{byID: make(map[int64]Filter, len(filters))}
	var errs []string
	for _, f := range filters {
		m, err := Compile(f)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		s.matchers = append(s.matchers, m)
		s.byID[f.ID] = f
	}
	sort.Slice(s.matchers, func(i, j int) bool { return s.matchers[i].ID < s.matchers[j].ID })
	if len(errs) > 0 {
		return s, fmt.Errorf("filters left out: %s", strings.Join(errs, "; "))
	}
	return s, nil
}

// Len is the number of filters.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	return len(s.matchers)
}

// Get returns the definition of filter id.
func (s *Set) Get(id int64) (Filter, bool) {
	if s == nil {
		return Filter{}, false
	}
	f, ok := s.byID[id]
	return f, ok
}

// All returns the definitions sorted by ID.
func (s *Set) All() []Filter {
	if s == nil {
		return nil
	}
	out := make([]Filter, 0, len(s.matchers))
	for _, m := range s.matchers {
		out = append(out, s.byID[m.ID])
	}
	return out
}

// AppendMatching appends to dst the IDs of filters in effect at minute that c
// matches, and returns the extended slice. It does not allocate when dst has
// room.
func (s *Set) AppendMatching(dst []int64, c *Click, minute int64) []int64 {
	if s == nil {
		return dst
	}
	for _, m := range s.matchers {
		if minute >= m.EffectiveFrom && m.Match(c) {
			dst = append(dst, m.ID)
		}
	}
	return dst
}

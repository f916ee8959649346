package filter

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestNormalize(t *testing.T) {
	tests := []struct {
		name    string
		in      Filter
		want    Filter
		wantErr string
	}{
		{"countries upper-cased", Filter{Countries: []string{"us", " De "}}, Filter{Countries: []string{"US", "DE"}}, ""},
		{"ips canonical", Filter{IPs: []string{"10.1.2.3/8", "::ffff:1.2.3.4", "2001:DB8::1"}}, Filter{IPs: []string{"10.0.0.0/8", "1.2.3.4", "2001:db8::1"}}, ""},
		{"users kept", Filter{UserIDs: []string{"u1"}}, Filter{UserIDs: []string{"u1"}}, ""},
		{"empty", Filter{}, Filter{}, "at least one"},
		{"bad country", Filter{Countries: []string{"USA"}}, Filter{}, "ISO 3166-1"},
		{"bad ip", Filter{IPs: []string{"1.2.3"}}, Filter{}, "not an address"},
		{"bad cidr", Filter{IPs: []string{"1.2.3.4/40"}}, Filter{}, "CIDR"},
		{"empty user", Filter{UserIDs: []string{""}}, Filter{}, "1..128"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Normalize(tc.in)
			if tc.wantErr != "" {
				if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want ErrInvalid mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestMatch(t *testing.T) {
	ip := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	tests := []struct {
		name  string
		f     Filter
		click Click
		want  bool
	}{
		{"country hit", Filter{Countries: []string{"US", "DE"}}, Click{Country: "DE"}, true},
		{"country miss", Filter{Countries: []string{"US"}}, Click{Country: "FR"}, false},
		{"country missing", Filter{Countries: []string{"US"}}, Click{}, false},
		{"exact v4", Filter{IPs: []string{"1.2.3.4"}}, Click{IP: ip("1.2.3.4")}, true},
		{"exact v4 mapped in v6", Filter{IPs: []string{"1.2.3.4"}}, Click{IP: ip("::ffff:1.2.3.4")}, true},
		{"exact miss", Filter{IPs: []string{"1.2.3.4"}}, Click{IP: ip("1.2.3.5")}, false},
		{"cidr v4", Filter{IPs: []string{"10.0.0.0/8"}}, Click{IP: ip("10.200.1.1")}, true},
		{"cidr v4 miss", Filter{IPs: []string{"10.0.0.0/8"}}, Click{IP: ip("11.0.0.1")}, false},
		{"cidr v6", Filter{IPs: []string{"2001:db8::/32"}}, Click{IP: ip("2001:db8:1::9")}, true},
		{"cidr v6 miss", Filter{IPs: []string{"2001:db8::/32"}}, Click{IP: ip("2001:db9::1")}, false},
		{"v4 cidr does not match v6", Filter{IPs: []string{"0.0.0.0/0"}}, Click{IP: ip("2001:db8::1")}, false},
		{"no ip", Filter{IPs: []string{"0.0.0.0/0"}}, Click{}, false},
		{"user", Filter{UserIDs: []string{"u1", "u2"}}, Click{UserID: "u2"}, true},
		{"all fields must match", Filter{Countries: []string{"US"}, UserIDs: []string{"u1"}}, Click{Country: "US", UserID: "u2"}, false},
		{"all fields match", Filter{Countries: []string{"US"}, IPs: []string{"10.0.0.0/8"}, UserIDs: []string{"u1"}}, Click{Country: "US", IP: ip("10.0.0.1"), UserID: "u1"}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Normalize(tc.f)
			if err != nil {
				t.Fatal(err)
			}
			m, err := Compile(f)
			if err != nil {
				t.Fatal(err)
			}
			if got := m.Match(&tc.click); got != tc.want {
				t.Fatalf("Match = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSetAppendMatchingRespectsEffectiveFrom(t *testing.T) {
	s, err := NewSet([]Filter{
		{ID: 2, Countries: []string{"US"}, EffectiveFrom: 120},
		{ID: 1, Countries: []string{"US", "FR"}, EffectiveFrom: 60},
		{ID: 3, Countries: []string{"FR"}, EffectiveFrom: 0},
	})
	if err != nil {
		t.Fatal(err)
	}
	c := &Click{Country: "US"}
	buf := make([]int64, 0, 4)
	if got := s.AppendMatching(buf[:0], c, 60); !reflect.DeepEqual(got, []int64{1}) {
		t.Fatalf("minute 60: %v", got)
	}
	if got := s.AppendMatching(buf[:0], c, 120); !reflect.DeepEqual(got, []int64{1, 2}) {
		t.Fatalf("minute 120: %v", got)
	}
	if allocs := testing.AllocsPerRun(100, func() { buf = s.AppendMatching(buf[:0], c, 120) }); allocs != 0 {
		t.Fatalf("AppendMatching allocates %v times", allocs)
	}
	if f, ok := s.Get(2); !ok || f.EffectiveFrom != 120 {
		t.Fatalf("Get(2) = %+v %v", f, ok)
	}
	if got := len(s.All()); got != 3 {
		t.Fatalf("All: %d", got)
	}
}

package gossip

import (
	"flag"
	"log/slog"
	"reflect"
	"strings"
	"testing"

	"github.com/adclick/adclick/pkg/flagenv"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // "" means valid
	}{
		{"default", DefaultConfig(), ""},
		{"zero tuning takes defaults", Config{BindAddr: "127.0.0.1:7946"}, ""},
		{"port 0", Config{BindAddr: "127.0.0.1:0"}, ""},
		{"ipv6 loopback", Config{BindAddr: "[::1]:0"}, ""},
		{"0.0.0.0 without advertise", Config{BindAddr: "0.0.0.0:7946"}, "set --gossip-advertise-addr"},
		{"[::] without advertise", Config{BindAddr: "[::]:7946"}, "set --gossip-advertise-addr"},
		{"empty host without advertise", Config{BindAddr: ":7946"}, "set --gossip-advertise-addr"},
		{"0.0.0.0 with advertise", Config{BindAddr: "0.0.0.0:7946", AdvertiseAddr: "10.0.0.5:7946"}, ""},
		{"advertise without port", Config{BindAddr: "0.0.0.0:0", AdvertiseAddr: "node-1.example"}, ""},
		{"advertise unspecified", Config{BindAddr: "0.0.0.0:7946", AdvertiseAddr: "0.0.0.0:7946"}, "cannot reach"},
		{"bind host name", Config{BindAddr: "localhost:7946"}, "must be an IP"},
		{"bind without port", Config{BindAddr: "127.0.0.1"}, "want ip:port"},
		{"bad join", Config{BindAddr: "127.0.0.1:0", Join: []string{"a:1", "b"}}, `"b" is not host:port`},
		{"probe timeout too long", Config{BindAddr: "127.0.0.1:0", ProbeTimeout: DefaultConfig().ProbeInterval}, "ProbeTimeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestRegisterFlags(t *testing.T) {
	t.Setenv("ADCLICK_GOSSIP_JOIN", "10.0.0.1:7946, 10.0.0.2:7946")
	t.Setenv("ADCLICK_GOSSIP_ADVERTISE_ADDR", "10.0.0.9")
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	var c Config
	c.RegisterFlags(fs)
	if err := flagenv.Parse(fs, []string{"--gossip-addr=0.0.0.0:0"}); err != nil {
		t.Fatal(err)
	}
	want := Config{BindAddr: "0.0.0.0:0", AdvertiseAddr: "10.0.0.9", Join: []string{"10.0.0.1:7946", "10.0.0.2:7946"}}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got %+v, want %+v", c, want)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}

	var d Config
	d.RegisterFlags(flag.NewFlagSet("y", flag.ContinueOnError))
	if d.BindAddr != DefaultBindAddr || d.Join != nil {
		t.Fatalf("defaults: %+v", d)
	}
}

func TestParseMemberlistLine(t *testing.T) {
	for _, tc := range []struct {
		line  string
		level slog.Level
		msg   string
	}{
		{"[DEBUG] memberlist: Stream connection from=127.0.0.1:1\n", slog.LevelDebug, "Stream connection from=127.0.0.1:1"},
		{"[INFO] memberlist: Suspect red-1 has failed\n", slog.LevelInfo, "Suspect red-1 has failed"},
		{"[WARN] memberlist: Refuting a suspect message\n", slog.LevelWarn, "Refuting a suspect message"},
		{"[ERR] memberlist: Failed fallback TCP ping\n", slog.LevelError, "Failed fallback TCP ping"},
		{"[ERR] Failed to shutdown transport: x\n", slog.LevelError, "Failed to shutdown transport: x"},
		{"no level at all\n", slog.LevelInfo, "no level at all"},
		{"[odd] memberlist: x", slog.LevelInfo, "[odd] memberlist: x"},
	} {
		level, msg := parseMemberlistLine(tc.line)
		if level != tc.level || msg != tc.msg {
			t.Errorf("parse(%q) = %v %q, want %v %q", tc.line, level, msg, tc.level, tc.msg)
		}
	}
}

func TestLoadChanged(t *testing.T) {
	for _, tc := range []struct {
		sent, v float64
		want    bool
	}{
		{0, 0, false},
		{0, 0.1, true},
		{10, 0, true},
		{1000, 1010, false},
		{1000, 1030, true},
		{1000, 970, true},
	} {
		if got := loadChanged(tc.sent, tc.v, 0.02); got != tc.want {
			t.Errorf("loadChanged(%v, %v) = %v, want %v", tc.sent, tc.v, got, tc.want)
		}
	}
}

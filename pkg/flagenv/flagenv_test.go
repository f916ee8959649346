package flagenv

import (
	"errors"
	"flag"
	"strings"
	"testing"
)

func TestParseEnvFallback(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"default", nil, nil, "def"},
		{"env", nil, map[string]string{"ADCLICK_GRPC_ADDR": "env"}, "env"},
		{"flag wins", []string{"--grpc-addr=flag"}, map[string]string{"ADCLICK_GRPC_ADDR": "env"}, "flag"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			fs := flag.NewFlagSet("x", flag.ContinueOnError)
			got := fs.String("grpc-addr", "def", "")
			if err := Parse(fs, tc.args); err != nil {
				t.Fatal(err)
			}
			if *got != tc.want {
				t.Fatalf("got %q, want %q", *got, tc.want)
			}
		})
	}
}

func TestParseBadEnv(t *testing.T) {
	t.Setenv("ADCLICK_N", "notanumber")
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.Int("n", 1, "")
	if err := Parse(fs, nil); err == nil {
		t.Fatal("want error for a bad environment value")
	}
}

func TestStringList(t *testing.T) {
	var l StringList
	if err := l.Set(" a, b,,c "); err != nil {
		t.Fatal(err)
	}
	if l.String() != "a,b,c" {
		t.Fatalf("got %q", l.String())
	}
}

// TestHelpTellsOfEnvironment checks that --help names the ADCLICK_*
// variables, with an example from the flag set itself.
func TestHelpTellsOfEnvironment(t *testing.T) {
	fs := flag.NewFlagSet("router", flag.ContinueOnError)
	var out strings.Builder
	fs.SetOutput(&out)
	fs.String("grpc-addr", "127.0.0.1:7070", "gRPC listen address")
	fs.Int("max-batch", 10000, "most events per request")
	if err := Parse(fs, []string{"--help"}); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("Parse(--help) = %v, want flag.ErrHelp", err)
	}
	for _, want := range []string{"Usage of router:", "-max-batch", "(default 10000)", "-grpc-addr as ADCLICK_GRPC_ADDR", "command line wins"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("--help output lacks %q:\n%s", want, out.String())
		}
	}
}

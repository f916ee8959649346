package flagenv

import (
	"flag"
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

package porttest

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

func TestAddrIsBelowTheEphemeralRangeAndDistinct(t *testing.T) {
	seen := map[string]bool{}
	for range 20 {
		addr := Addr(t)
		if seen[addr] {
			t.Fatalf("Addr returned %s twice", addr)
		}
		seen[addr] = true
		_, p, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		port, _ := strconv.Atoi(p)
		if port < lowest || port >= ephemeralLow() {
			t.Fatalf("port %d outside [%d, %d)", port, lowest, ephemeralLow())
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("listen on %s: %v", addr, err)
		}
		l.Close()
	}
}

// Another test binary asking for the same port finds it locked: flock
// conflicts between two open files even within one process.
func TestAddrIsReservedAgainstOtherPickers(t *testing.T) {
	addr := Addr(t)
	_, p, _ := net.SplitHostPort(addr)
	if f, ok := lock(filepath.Join(os.TempDir(), "adclick-test-ports", p)); ok {
		f.Close()
		t.Fatalf("port %s could be locked again while reserved", p)
	}
}

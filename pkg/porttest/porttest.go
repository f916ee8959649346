// Package porttest hands tests loopback addresses to give a process that
// must listen on a port known before it starts (a node restarted in place,
// a port published by Docker).
//
// An address taken from a listener on port 0 and closed again is a race:
// the kernel hands the same ephemeral range to every other bind on port 0
// and to the source port of every outgoing connection, so on a busy machine
// the port is often taken before the child process binds it ("bind: address
// already in use"). Addr picks below the ephemeral range instead, where the
// kernel never picks on its own, and holds an flock on a file named after
// the port for the life of the test process, so two test binaries running
// at once (go test runs packages in parallel) never pick the same one.
package porttest

import (
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// lowest is the first port Addr considers: well above the ports services
// usually take.
const lowest = 20000

var (
	mu    sync.Mutex
	locks []*os.File // held until the process exits
)

// Addr returns "127.0.0.1:port" for a port nothing listens on, outside the
// kernel's ephemeral range and reserved against other test processes that
// use this package. The reservation lasts as long as the test binary, so a
// process restarted on the address finds it still free of other tests.
func Addr(t testing.TB) string {
	t.Helper()
	lo, hi := lowest, ephemeralLow()-1
	if hi-lo < 1000 {
		t.Fatalf("porttest: the ephemeral range starts at %d, leaving no room below it above %d", hi+1, lo)
	}
	dir := filepath.Join(os.TempDir(), "adclick-test-ports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		t.Fatalf("porttest: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	for range 200 {
		port := lo + rand.IntN(hi-lo+1)
		f, ok := lock(filepath.Join(dir, strconv.Itoa(port)))
		if !ok {
			continue
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if !free(addr) {
			f.Close()
			continue
		}
		locks = append(locks, f)
		return addr
	}
	t.Fatalf("porttest: no free port found in [%d, %d] after 200 tries", lo, hi)
	return ""
}

// lock takes an exclusive flock on path without waiting; the kernel drops
// it when the file is closed or the process dies, so nothing goes stale.
func lock(path string) (*os.File, bool) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return nil, false
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, false
	}
	return f, true
}

// free reports whether both a TCP listener and a UDP socket can bind addr
// (gossip listens on both at one port).
func free(addr string) bool {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	l.Close()
	p, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	p.Close()
	return true
}

// ephemeralLow is the first port of the kernel's ephemeral range (Linux
// default 32768).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	fields := strings.Fields(string(b))
	if len(fields) != 2 {
		return 32768
	}
	n, err := strconv.Atoi(fields[0])
	if err != nil {
		return 32768
	}
	return n
}

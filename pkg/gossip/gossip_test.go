package gossip

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func TestThreeNodesSeeEachOther(t *testing.T) {
	agg, rtr, red := cluster(t)
	for _, n := range []*testNode{agg, rtr, red} {
		peers := n.Peers()
		if len(peers) != 3 {
			t.Fatalf("%s sees %d peers, want 3: %+v", n.name, len(peers), peers)
		}
		// Sorted by role, then id.
		want := []*testNode{agg, red, rtr}
		for i, p := range peers {
			w := want[i]
			if p.Role != w.self.Role || p.ID != w.self.ID || p.GRPCAddr != w.self.GRPCAddr ||
				p.GossipAddr != w.AdvertiseAddr() || !p.Alive || p.Incarnation != 1 {
				t.Errorf("%s: peer %d = %+v, want %s/%s at %s, grpc %s", n.name, i, p, w.self.Role, w.self.ID, w.AdvertiseAddr(), w.self.GRPCAddr)
			}
		}
	}
	if alive, known := agg.Alive(RoleAggregator, "nobody"); alive || known {
		t.Fatalf("Alive(unknown) = %v, %v; want false, false", alive, known)
	}
	if got := value(t, agg.m.alive); got != 3 {
		t.Fatalf("adclick_gossip_members{state=alive} = %v, want 3", got)
	}
}

func TestJoinSeeds(t *testing.T) {
	a := startNode(t, RoleAggregator, "a", 0)
	// Only itself: the first node of a cluster.
	if n, err := a.Join([]string{a.AdvertiseAddr(), " "}); n != 0 || err != nil {
		t.Fatalf("Join(self) = %d, %v; want 0, nil", n, err)
	}
	// Nobody answers: an error the caller can retry on.
	dead := freeTCPAddr(t)
	if n, err := a.Join([]string{dead}); n != 0 || err == nil {
		t.Fatalf("Join(unreachable) = %d, %v; want 0 and an error", n, err)
	}
	// One seed answers among itself and an unreachable one: joined.
	b := startNode(t, RoleAggregator, "b", 0)
	n, err := b.Join([]string{b.AdvertiseAddr(), dead, a.AdvertiseAddr()})
	if n != 1 || err != nil {
		t.Fatalf("Join(self, unreachable, a) = %d, %v; want 1, nil", n, err)
	}
	eventually(t, "a sees b", func() bool { alive, _ := a.Alive(RoleAggregator, "b"); return alive })
}

// freeTCPAddr returns a loopback address nobody listens on.
func freeTCPAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

func TestDeadNodeDetected(t *testing.T) {
	for _, size := range []int{3, 6} {
		t.Run(fmt.Sprintf("%d nodes", size), func(t *testing.T) {
			agg, rtr, red := cluster(t)
			watchers := []*testNode{agg, rtr}
			for i := 3; i < size; i++ {
				n := startNode(t, RoleAggregator, fmt.Sprintf("agg-%d", i), 1)
				n.join(t, agg.AdvertiseAddr())
				watchers = append(watchers, n)
			}
			eventually(t, "everyone sees everyone", func() bool {
				for _, w := range watchers {
					if alive := countAlive(w); alive != size {
						return false
					}
				}
				return true
			})
			sub := agg.Subscribe()
			red.kill(t)
			took := eventually(t, "reducer seen dead by all", func() bool {
				for _, w := range watchers {
					if alive, _ := w.Alive(RoleReducer, "red-1"); alive {
						return false
					}
				}
				return true
			})
			t.Logf("%d nodes: node shut down without leave seen dead by all %d peers after %s", size, size-1, took)
			select {
			case <-sub:
			default:
				t.Fatal("no notification after a death")
			}
			p, _ := agg.peer(RoleReducer, "red-1")
			if p.Alive || p.Left {
				t.Fatalf("peer = %+v, want dead, not left", p)
			}
			if got := value(t, agg.m.deaths); got != 1 {
				t.Fatalf("adclick_gossip_member_deaths_total = %v, want 1", got)
			}
			if got := value(t, agg.m.dead); got != 1 {
				t.Fatalf("adclick_gossip_members{state=dead} = %v, want 1", got)
			}
		})
	}
}

func countAlive(n *testNode) int {
	c := 0
	for _, p := range n.Peers() {
		if p.Alive {
			c++
		}
	}
	return c
}

// TestHelperProcess is a gossip node run as a child process by
// TestKilledProcessDetected; it is skipped otherwise.
func TestHelperProcess(t *testing.T) {
	seed := os.Getenv("GOSSIP_HELPER_JOIN")
	if seed == "" {
		t.Skip("child process of TestKilledProcessDetected")
	}
	n := startNode(t, RoleAggregator, "victim", 1)
	n.join(t, seed)
	fmt.Printf("ADDR %s\n", n.AdvertiseAddr())
	time.Sleep(time.Minute) // the parent kills us long before
}

func TestKilledProcessDetected(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	agg := startNode(t, RoleAggregator, "agg-1", 1)
	rtr := startNode(t, RoleRouter, "rtr-1", 1)
	rtr.join(t, agg.AdvertiseAddr())
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), "GOSSIP_HELPER_JOIN="+agg.AdvertiseAddr())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "ADDR "); ok {
				addrc <- a
			}
		}
		close(addrc)
	}()
	var addr string
	select {
	case addr = <-addrc:
	case <-time.After(waitLimit):
		t.Fatal("child did not start")
	}
	eventually(t, "child seen alive", func() bool {
		p, _ := rtr.peer(RoleAggregator, "victim")
		q, _ := agg.peer(RoleAggregator, "victim")
		return p.Alive && q.Alive && p.GossipAddr == addr
	})
	if err := cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	took := eventually(t, "SIGKILLed child seen dead by both", func() bool {
		a1, _ := agg.Alive(RoleAggregator, "victim")
		a2, _ := rtr.Alive(RoleAggregator, "victim")
		return !a1 && !a2
	})
	t.Logf("SIGKILLed process seen dead by both peers after %s", took)
}

func TestGracefulLeave(t *testing.T) {
	agg, rtr, red := cluster(t)
	start := time.Now()
	if err := red.Leave(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	leaveTook := time.Since(start)
	if err := red.Leave(5 * time.Second); err != nil {
		t.Fatalf("second Leave: %v", err)
	}
	eventually(t, "reducer seen left by both", func() bool {
		p, _ := agg.peer(RoleReducer, "red-1")
		q, _ := rtr.peer(RoleReducer, "red-1")
		return !p.Alive && p.Left && !q.Alive && q.Left
	})
	t.Logf("graceful leave seen by both peers after %s (Leave returned after %s)", time.Since(start), leaveTook)
	if got := value(t, agg.m.deaths); got != 0 {
		t.Fatalf("adclick_gossip_member_deaths_total = %v after a leave, want 0", got)
	}
	if got := value(t, agg.m.left); got != 1 {
		t.Fatalf("adclick_gossip_members{state=left} = %v, want 1", got)
	}
}

func TestLoadPropagates(t *testing.T) {
	agg, rtr, _ := cluster(t)
	sub := rtr.Subscribe()
	agg.load.set(1234.5)
	took := eventually(t, "router sees the aggregator's load", func() bool {
		p, _ := rtr.peer(RoleAggregator, "agg-1")
		return p.ClicksPerSec == 1234.5
	})
	t.Logf("load reached a peer after %s (sampled every %s)", took, agg.cfg.LoadInterval)
	select {
	case <-sub:
	default:
		t.Fatal("no notification after a load change")
	}
	// Back to zero is a change too.
	agg.load.set(0)
	eventually(t, "router sees the load back at zero", func() bool {
		p, _ := rtr.peer(RoleAggregator, "agg-1")
		return p.ClicksPerSec == 0
	})
}

func TestRestartOnNewPort(t *testing.T) {
	for _, tc := range []struct {
		name     string
		waitDead bool // restart only once the others declared the old process dead
	}{
		{"after its death is seen", true},
		{"before its death is seen", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			agg, rtr, red := cluster(t)
			oldAddr := red.AdvertiseAddr()
			red.kill(t)
			if tc.waitDead {
				eventually(t, "old reducer seen dead", func() bool {
					a, _ := agg.Alive(RoleReducer, "red-1")
					return !a
				})
			}
			red2 := startNode(t, RoleReducer, "red-1", 2)
			if red2.AdvertiseAddr() == oldAddr {
				t.Skipf("port 0 picked the old port %s again", oldAddr)
			}
			red2.join(t, agg.AdvertiseAddr())
			took := eventually(t, "restarted reducer seen alive at its new address", func() bool {
				for _, n := range []*testNode{agg, rtr} {
					p, _ := n.peer(RoleReducer, "red-1")
					if !p.Alive || p.GossipAddr != red2.AdvertiseAddr() || p.Incarnation != 2 {
						return false
					}
				}
				return true
			})
			t.Logf("restarted node on a new port accepted by both peers after %s", took)
			eventually(t, "restarted reducer sees the others", func() bool {
				a, _ := red2.Alive(RoleAggregator, "agg-1")
				r, _ := red2.Alive(RoleRouter, "rtr-1")
				return a && r
			})
		})
	}
}

func TestPortZeroBindsTCPAndUDP(t *testing.T) {
	n := startNode(t, RoleRouter, "r", 0)
	_, ps, err := net.SplitHostPort(n.AdvertiseAddr())
	if err != nil || ps == "0" {
		t.Fatalf("AdvertiseAddr() = %q, want a picked port", n.AdvertiseAddr())
	}
	if l, err := net.Listen("tcp", n.AdvertiseAddr()); err == nil {
		_ = l.Close()
		t.Fatal("TCP port is not held by memberlist")
	}
	if l, err := net.ListenPacket("udp", n.AdvertiseAddr()); err == nil {
		_ = l.Close()
		t.Fatal("UDP port is not held by memberlist")
	}
}

func TestPickPort(t *testing.T) {
	port, err := pickPort(net.IPv4(127, 0, 0, 1))
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	tl, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("TCP %s: %v", addr, err)
	}
	defer tl.Close()
	ul, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatalf("UDP %s: %v", addr, err)
	}
	_ = ul.Close()
}

func TestStartRefuses(t *testing.T) {
	cfg := DefaultConfig()
	cfg.BindAddr = "127.0.0.1:0"
	for _, tc := range []struct {
		name string
		cfg  Config
		self Self
		want string
	}{
		{"bad role", cfg, Self{ID: "x", Role: "boss"}, "role"},
		{"no id", cfg, Self{Role: RoleRouter}, "id is empty"},
		{"meta too long", cfg, Self{ID: strings.Repeat("x", 600), Role: RoleRouter}, "too long"},
		{"every interface, no advertise", Config{BindAddr: "0.0.0.0:0"}, Self{ID: "x", Role: RoleRouter}, "--gossip-advertise-addr"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := Start(tc.cfg, tc.self, Deps{Log: testLog()})
			if err == nil {
				_ = g.Leave(0)
				t.Fatal("Start succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestAdvertiseOnEveryInterface(t *testing.T) {
	g, err := Start(Config{BindAddr: "0.0.0.0:0", AdvertiseAddr: "127.0.0.1"}, Self{ID: "x", Role: RoleRouter}, Deps{Log: testLog()})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Leave(0)
	host, port, _ := net.SplitHostPort(g.AdvertiseAddr())
	if host != "127.0.0.1" || port == "0" {
		t.Fatalf("AdvertiseAddr() = %q, want 127.0.0.1 and the bound port", g.AdvertiseAddr())
	}
	// A seed naming this node through loopback is itself.
	if n, err := g.Join([]string{"127.0.0.1:" + port}); n != 0 || err != nil {
		t.Fatalf("Join(self via loopback) = %d, %v", n, err)
	}
}

// value reads a gauge or counter.
func value(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

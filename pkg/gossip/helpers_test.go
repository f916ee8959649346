package gossip

import (
	"log/slog"
	"math"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// waitLimit bounds every wait: generous, so tests hold on a loaded 2-core
// box; detection times are logged, not asserted.
const waitLimit = 15 * time.Second

// eventually polls cond until it holds and returns how long that took.
func eventually(t testing.TB, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > waitLimit {
			t.Fatalf("%s: not within %s", what, waitLimit)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// testLog discards memberlist's chatter unless GOSSIP_TEST_LOG is set
// (it may log after a test ends, when t.Log would panic).
func testLog() *slog.Logger {
	if os.Getenv("GOSSIP_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// loadVar is a settable Deps.Load.
type loadVar struct{ bits atomic.Uint64 }

func (l *loadVar) set(v float64)      { l.bits.Store(math.Float64bits(v)) }
func (l *loadVar) get() float64       { return math.Float64frombits(l.bits.Load()) }
func (l *loadVar) fn() func() float64 { return l.get }

type testNode struct {
	*Gossip
	load *loadVar
	reg  *prometheus.Registry
}

// startNode starts a node on a loopback port of its own; it leaves at
// cleanup unless the test stopped it first.
func startNode(t testing.TB, role, id string, inc int64) *testNode {
	t.Helper()
	n := &testNode{load: &loadVar{}, reg: prometheus.NewRegistry()}
	cfg := DefaultConfig()
	cfg.BindAddr = "127.0.0.1:0"
	g, err := Start(cfg, Self{ID: id, Role: role, GRPCAddr: "127.0.0.1:" + id, Incarnation: inc},
		Deps{Log: testLog().With("node", id), Reg: n.reg, Load: n.load.fn()})
	if err != nil {
		t.Fatalf("start %s/%s: %v", role, id, err)
	}
	t.Cleanup(func() { _ = g.Leave(time.Second) })
	n.Gossip = g
	return n
}

// kill stops n without a leave message, as a crash would.
func (n *testNode) kill(t testing.TB) {
	t.Helper()
	if err := n.shutdown(false, 0); err != nil {
		t.Fatal(err)
	}
}

func (n *testNode) peer(role, id string) (Peer, bool) {
	for _, p := range n.Peers() {
		if p.Role == role && p.ID == id {
			return p, true
		}
	}
	return Peer{}, false
}

func (n *testNode) join(t testing.TB, seeds ...string) {
	t.Helper()
	if _, err := n.Join(seeds); err != nil {
		t.Fatalf("join %v: %v", seeds, err)
	}
}

// cluster starts one node of each role, joined through the aggregator.
func cluster(t testing.TB) (agg, rtr, red *testNode) {
	t.Helper()
	agg = startNode(t, RoleAggregator, "agg-1", 1)
	rtr = startNode(t, RoleRouter, "rtr-1", 1)
	red = startNode(t, RoleReducer, "red-1", 1)
	rtr.join(t, agg.AdvertiseAddr())
	red.join(t, agg.AdvertiseAddr())
	all := []*testNode{agg, rtr, red}
	eventually(t, "three nodes see each other", func() bool {
		for _, n := range all {
			for _, o := range all {
				if alive, _ := n.Alive(o.self.Role, o.self.ID); !alive {
					return false
				}
			}
		}
		return true
	})
	return agg, rtr, red
}

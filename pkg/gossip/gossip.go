package gossip

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
)

// Roles a node gossips as.
const (
	RoleRouter     = "router"
	RoleAggregator = "aggregator"
	RoleReducer    = "reducer"
)

// Self is what this node gossips about itself.
type Self struct {
	ID          string
	Role        string // RoleRouter, RoleAggregator or RoleReducer
	GRPCAddr    string // where peers dial this node's gRPC
	Incarnation int64  // the caller's restart counter or registration revision, passed on as is
}

// Deps are what Start takes from its process.
type Deps struct {
	Log *slog.Logger          // nil: slog.Default()
	Reg prometheus.Registerer // nil: no metrics
	// Load returns this node's clicks/s now. It is called about once a
	// second from one goroutine and must be quick. nil: load is always 0.
	Load func() float64
}

// Peer is one node as gossip last saw it.
type Peer struct {
	ID, Role, GRPCAddr string
	GossipAddr         string // host:port of its memberlist
	Alive              bool   // answering probes (a suspected node still is); false once it announced its leave
	Left               bool   // not alive because it left gracefully rather than failed
	ClicksPerSec       float64
	Incarnation        int64     // Self.Incarnation it announced
	Updated            time.Time // when this node last heard a change about it
}

// Gossip is this node's membership in the gossip cluster. Safe for
// concurrent use.
type Gossip struct {
	cfg  Config
	self Self
	name string
	log  *slog.Logger
	m    *metrics
	load func() float64
	meta atomic.Pointer[[]byte] // what NodeMeta hands memberlist
	ml   *memberlist.Memberlist // set once Start returns

	bindIP, advIP     net.IP // fixed by Start
	bindPort, advPort int

	mu             sync.Mutex
	peers          map[string]*Peer // by memberlist name
	subs           []chan struct{}
	conflictLogged map[string]time.Time // by memberlist name

	stopOnce   sync.Once
	stopErr    error
	reannounce chan struct{} // after a join, or our name seen at another address
	stop       chan struct{}
	loopDone   chan struct{}
}

// Start binds the gossip port and starts memberlist with self as its only
// member; Join connects it to the others.
func Start(cfg Config, self Self, deps Deps) (*Gossip, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := self.validate(); err != nil {
		return nil, err
	}
	if deps.Log == nil {
		deps.Log = slog.Default()
	}
	g := &Gossip{
		cfg:            cfg,
		self:           self,
		name:           nodeName(self.Role, self.ID),
		log:            deps.Log.With("component", "gossip"),
		m:              newMetrics(deps.Reg),
		load:           deps.Load,
		peers:          map[string]*Peer{},
		conflictLogged: map[string]time.Time{},
		reannounce:     make(chan struct{}, 1),
		stop:           make(chan struct{}),
		loopDone:       make(chan struct{}),
	}
	g.setMeta(meta{Load: g.sampleLoad()})
	var err error
	if g.bindIP, g.bindPort, err = splitBind(cfg.BindAddr); err != nil {
		return nil, err
	}
	// A port picked here may be taken by someone else before memberlist binds
	// it: pick again a few times.
	for try := 0; ; try++ {
		port := g.bindPort
		if port == 0 {
			if port, err = pickPort(g.bindIP); err != nil {
				return nil, err
			}
		}
		if g.ml, err = g.create(port); err == nil {
			g.bindPort = port
			break
		}
		if g.bindPort != 0 || try == 4 || !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("gossip: start memberlist on %s: %w", cfg.BindAddr, err)
	}
	go g.loop()
	g.log.Info("gossip started", "name", g.name, "bind", net.JoinHostPort(g.bindIP.String(), strconv.Itoa(g.bindPort)), "advertise", g.AdvertiseAddr())
	return g, nil
}

func (s Self) validate() error {
	switch s.Role {
	case RoleRouter, RoleAggregator, RoleReducer:
	default:
		return fmt.Errorf("gossip: role %q is not router, aggregator or reducer", s.Role)
	}
	if s.ID == "" {
		return errors.New("gossip: node id is empty")
	}
	return checkMetaSize(s)
}

// create starts memberlist bound to port.
func (g *Gossip) create(port int) (*memberlist.Memberlist, error) {
	advIP, advPort, err := resolveAdvertise(g.cfg.AdvertiseAddr, g.bindIP, port)
	if err != nil {
		return nil, err
	}
	c := g.cfg
	mc := memberlist.DefaultLANConfig()
	mc.Name = g.name
	mc.BindAddr, mc.BindPort = g.bindIP.String(), port
	mc.AdvertiseAddr, mc.AdvertisePort = advIP.String(), advPort
	mc.ProbeInterval = c.ProbeInterval
	mc.ProbeTimeout = c.ProbeTimeout
	mc.SuspicionMult = c.SuspicionMult
	mc.SuspicionMaxTimeoutMult = c.SuspicionMaxTimeoutMult
	mc.GossipInterval = c.GossipInterval
	mc.GossipNodes = c.GossipNodes
	mc.PushPullInterval = c.PushPullInterval
	mc.TCPTimeout = c.TCPTimeout
	mc.DeadNodeReclaimTime = c.DeadNodeReclaimTime
	mc.Delegate = delegate{g}
	mc.Events = delegate{g}
	mc.Conflict = delegate{g}
	mc.Logger = newMemberlistLogger(g.log)
	// The cluster's state is a few hundred bytes a node: compressing it
	// saves nothing worth the compressor's tables, allocated anew for
	// every push-pull and every compressed gossip message. memberlist reads
	// compressed messages whatever this says, so nodes of older versions
	// still understand each other.
	mc.EnableCompression = false
	t, err := newTransport(g.bindIP, port, g.log)
	if err != nil {
		return nil, err
	}
	mc.Transport = t
	ml, err := memberlist.Create(mc)
	if err != nil {
		_ = t.Shutdown()
		return nil, err
	}
	g.advIP, g.advPort = advIP, advPort
	return ml, nil
}

// Join contacts seeds (host:port), in parallel, and returns how many
// answered. Seeds naming this node are skipped; unreachable ones are
// tolerated as long as one answers. With no other seed it returns 0, nil: this
// node is the first. After a join the node announces itself again for a few
// seconds, so peers that still held its name at an old address (a restart on
// a new port) take the new one as soon as they declare the old one dead.
func (g *Gossip) Join(seeds []string) (int, error) {
	var others []string
	for _, s := range seeds {
		if s = strings.TrimSpace(s); s != "" && !isSelf(s, g.advIP, g.advPort, g.bindIP, g.bindPort) {
			others = append(others, s)
		}
	}
	if len(others) == 0 {
		return 0, nil
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		n    int
		errs []error
	)
	for _, s := range others {
		wg.Go(func() {
			k, err := g.ml.Join([]string{s})
			mu.Lock()
			defer mu.Unlock()
			n += k
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", s, err))
			}
		})
	}
	wg.Wait()
	if n == 0 {
		return 0, fmt.Errorf("gossip: join: no seed answered: %w", errors.Join(errs...))
	}
	g.signalReannounce()
	if len(errs) > 0 {
		g.log.Info("gossip joined; some seeds did not answer", "joined", n, "errs", errors.Join(errs...))
	}
	return n, nil
}

// signalReannounce asks the loop to announce this node again for a while.
// It never blocks.
func (g *Gossip) signalReannounce() {
	select {
	case g.reannounce <- struct{}{}:
	default:
	}
}

// AdvertiseAddr returns the host:port other nodes should join this one at.
func (g *Gossip) AdvertiseAddr() string {
	return net.JoinHostPort(g.advIP.String(), strconv.Itoa(g.advPort))
}

// Alive reports whether gossip currently sees node (role, id) alive; known
// is false when gossip never heard of it (or forgot it long after its death).
func (g *Gossip) Alive(role, id string) (alive, known bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	p, ok := g.peers[nodeName(role, id)]
	if !ok {
		return false, false
	}
	return p.Alive, true
}

// Peers returns every node seen (this one included, dead ones with
// Alive=false until ForgetDeadAfter), sorted by role, then id.
func (g *Gossip) Peers() []Peer {
	g.mu.Lock()
	out := make([]Peer, 0, len(g.peers))
	for _, p := range g.peers {
		out = append(out, *p)
	}
	g.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Role != out[j].Role {
			return out[i].Role < out[j].Role
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Subscribe returns a channel that receives a value after any join, leave,
// death or load change; changes that come while a value is pending are
// folded into it, so the receiver re-reads Peers. The channel is never
// closed.
func (g *Gossip) Subscribe() <-chan struct{} {
	ch := make(chan struct{}, 1)
	g.mu.Lock()
	g.subs = append(g.subs, ch)
	g.mu.Unlock()
	return ch
}

// DefaultLeaveTimeout is what Leave waits at most when given no timeout.
const DefaultLeaveTimeout = 2 * time.Second

// Leave tells the others this node is going (they see it left at once,
// without suspicion, and do not count a death), waits up to timeout (<= 0:
// DefaultLeaveTimeout) for that to go out, then shuts memberlist down. Later
// calls return the first call's result.
func (g *Gossip) Leave(timeout time.Duration) error {
	if timeout <= 0 {
		timeout = DefaultLeaveTimeout
	}
	return g.shutdown(true, timeout)
}

// shutdown stops the load loop, optionally leaves, and shuts memberlist
// down, once. Without leave, peers must find out by probing, as after a crash.
func (g *Gossip) shutdown(leave bool, timeout time.Duration) error {
	g.stopOnce.Do(func() {
		close(g.stop)
		<-g.loopDone
		var errs []error
		if leave {
			deadline := time.Now().Add(timeout)
			// First the Leaving flag, so peers record a leave, not a death;
			// then memberlist's leave, which ends probing at once.
			g.setMeta(meta{Load: g.sampleLoad(), Leaving: true})
			if err := g.ml.UpdateNode(timeout / 2); err != nil {
				g.log.Debug("gossip leaving flag not yet sent", "err", err)
			}
			if err := g.ml.Leave(max(time.Until(deadline), time.Millisecond)); err != nil {
				errs = append(errs, fmt.Errorf("gossip: leave: %w", err))
			}
		}
		if err := g.ml.Shutdown(); err != nil {
			errs = append(errs, fmt.Errorf("gossip: shutdown: %w", err))
		}
		g.stopErr = errors.Join(errs...)
		g.log.Info("gossip stopped", "left", leave, "err", g.stopErr)
	})
	return g.stopErr
}

// loop samples the load, refreshes the health gauge and forgets long-dead
// peers every LoadInterval, and re-announces this node for a while after a
// join or a conflict on its name.
func (g *Gossip) loop() {
	defer close(g.loopDone)
	t := time.NewTicker(g.cfg.LoadInterval)
	defer t.Stop()
	sent := g.sampleLoad()
	var (
		again      *time.Ticker
		againC     <-chan time.Time
		againUntil time.Time
	)
	for {
		select {
		case <-g.stop:
			if again != nil {
				again.Stop()
			}
			return
		case <-g.reannounce:
			// The others may still hold our name at an old address (a restart
			// on a new port): they refuse our announcement until they declare
			// the old process dead, which takes at most the suspicion timeout.
			// Announce again until then, so the first announcement after that
			// is taken at once: a few small broadcasts per join.
			againUntil = time.Now().Add(g.reclaimWindow())
			if again == nil {
				again = time.NewTicker(2 * g.cfg.ProbeInterval)
				againC = again.C
			}
		case <-againC:
			if time.Now().After(againUntil) {
				again.Stop()
				again, againC = nil, nil
				continue
			}
			g.update("re-announce")
		case <-t.C:
			g.m.health.Set(float64(g.ml.GetHealthScore()))
			g.forget(time.Now().Add(-g.cfg.ForgetDeadAfter))
			if v := g.sampleLoad(); loadChanged(sent, v, g.cfg.LoadChange) {
				sent = v
				g.setMeta(meta{Load: v})
				g.m.loadBroadcasts.Inc()
				g.update("load")
			}
		}
	}
}

// reclaimWindow is how long the others may take to declare our old self dead:
// the longest suspicion (no confirmations) for this cluster size, twice.
func (g *Gossip) reclaimWindow() time.Duration {
	scale := math.Max(1, math.Log10(float64(g.ml.NumMembers())))
	return time.Duration(2 * scale * float64(g.cfg.SuspicionMult*g.cfg.SuspicionMaxTimeoutMult) * float64(g.cfg.ProbeInterval))
}

// update announces this node with its current meta and a new incarnation.
// memberlist delivers it either way; the wait only paces the loop.
func (g *Gossip) update(why string) {
	if err := g.ml.UpdateNode(g.cfg.LoadInterval); err != nil {
		g.log.Debug("gossip update not yet fully gossiped", "why", why, "err", err)
	}
}

func (g *Gossip) sampleLoad() float64 {
	if g.load == nil {
		return 0
	}
	return sanitizeLoad(g.load())
}

// loadChanged reports whether v differs enough from the last sent figure to
// gossip it: by more than rel of the larger, or to or from zero.
func loadChanged(sent, v, rel float64) bool {
	if (sent == 0) != (v == 0) {
		return true
	}
	return math.Abs(v-sent) > rel*math.Max(sent, v)
}

// setMeta publishes m's load and leaving flag with self's identity.
func (g *Gossip) setMeta(m meta) {
	m.Role, m.ID, m.GRPC, m.Inc = g.self.Role, g.self.ID, g.self.GRPCAddr, g.self.Incarnation
	b := m.encode()
	g.meta.Store(&b)
}

// observe records what memberlist says about n. Called from memberlist's
// callbacks, so it must not block.
func (g *Gossip) observe(n *memberlist.Node, alive bool) {
	md, err := decodeMeta(n)
	if err != nil {
		g.log.Warn("gossip: peer meta unreadable; role and id taken from its name", "name", n.Name, "err", err)
	}
	alive = alive && !md.Leaving
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	old, seen := g.peers[n.Name]
	p := &Peer{
		ID: md.ID, Role: md.Role, GRPCAddr: md.GRPC, GossipAddr: n.Address(),
		Alive: alive, Left: md.Leaving,
		ClicksPerSec: md.Load, Incarnation: md.Inc, Updated: now,
	}
	g.peers[n.Name] = p
	switch {
	case alive && (!seen || !old.Alive):
		g.log.Info("gossip peer alive", "name", n.Name, "gossip_addr", p.GossipAddr, "grpc_addr", p.GRPCAddr)
	case p.Left:
		if !seen || !old.Left {
			g.log.Info("gossip peer left", "name", n.Name, "gossip_addr", p.GossipAddr)
		}
	case !alive:
		if seen && old.Alive {
			g.m.deaths.Inc()
		}
		g.log.Warn("gossip peer dead", "name", n.Name, "gossip_addr", p.GossipAddr)
	}
	g.updateGaugesLocked()
	for _, ch := range g.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// forget drops peers dead or left before cutoff.
func (g *Gossip) forget(cutoff time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for name, p := range g.peers {
		if !p.Alive && p.Updated.Before(cutoff) {
			delete(g.peers, name)
		}
	}
	g.updateGaugesLocked()
}

func (g *Gossip) updateGaugesLocked() {
	var alive, dead, left int
	for _, p := range g.peers {
		switch {
		case p.Alive:
			alive++
		case p.Left:
			left++
		default:
			dead++
		}
	}
	g.m.alive.Set(float64(alive))
	g.m.dead.Set(float64(dead))
	g.m.left.Set(float64(left))
}

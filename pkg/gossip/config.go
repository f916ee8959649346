package gossip

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/adclick/adclick/pkg/flagenv"
)

// Config configures one node's gossip. The first three fields are flags;
// the rest is tuning for a LAN, where a zero value takes the default from
// DefaultConfig.
type Config struct {
	BindAddr      string   // --gossip-addr: ip:port for memberlist's TCP and UDP (port 0 picks one)
	AdvertiseAddr string   // --gossip-advertise-addr: host[:port] others use to reach us; required on 0.0.0.0 / [::]
	Join          []string // --gossip-join: seeds; empty means the caller supplies them (from etcd)

	ProbeInterval           time.Duration // how often each node probes one random peer
	ProbeTimeout            time.Duration // how long a direct probe waits for its ack
	SuspicionMult           int           // suspicion lasts at least SuspicionMult * max(1, log10(n)) * ProbeInterval
	SuspicionMaxTimeoutMult int           // cap on suspicion without independent confirmations, as a multiple of the above
	GossipInterval          time.Duration // how often queued state changes are piggybacked to GossipNodes peers
	GossipNodes             int           // peers gossiped to per GossipInterval
	PushPullInterval        time.Duration // full state sync with one random peer
	TCPTimeout              time.Duration // dial and I/O limit of a TCP exchange (join, push/pull, fallback ping)
	DeadNodeReclaimTime     time.Duration // after this, a dead node's name may come back from a new address
	LoadInterval            time.Duration // how often Deps.Load is sampled
	LoadChange              float64       // relative change of clicks/s worth a new broadcast
	ForgetDeadAfter         time.Duration // how long a dead or left peer stays in Peers
}

// DefaultBindAddr is the default --gossip-addr (memberlist's usual port).
const DefaultBindAddr = "127.0.0.1:7946"

// DefaultConfig returns the defaults, tuned so that a dead peer on a LAN is
// seen by the others in about 1.5 s; BindAddr is DefaultBindAddr.
func DefaultConfig() Config {
	return Config{
		BindAddr: DefaultBindAddr,
		// memberlist's LAN default is 1s; 250ms finds a dead peer 4x sooner, at 4 small UDP packets/s per node.
		ProbeInterval: 250 * time.Millisecond,
		// LAN round trips are well under a millisecond; 100ms leaves room for GC pauses and a busy CPU, and the
		// indirect and TCP probes still get the rest of the interval.
		ProbeTimeout: 100 * time.Millisecond,
		// memberlist's default: 4 probe intervals (1s at n < 10) of suspicion before death lets a slow but live
		// node refute, which is what keeps a loaded box from flapping.
		SuspicionMult: 4,
		// 3 instead of 6: without independent confirmations (few peers) suspicion ends after at most 3s, not 6s.
		SuspicionMaxTimeoutMult: 3,
		// 100ms instead of 200ms: suspicion, death and load reach every peer within a few hundred ms.
		GossipInterval: 100 * time.Millisecond,
		// memberlist's default: three peers per round reach the whole cluster in O(log n) rounds.
		GossipNodes: 3,
		// 5s instead of 30s: a full sync repairs whatever gossip missed (a lost packet, a restarted node's
		// announcement refused while its old self was still alive) within seconds; it is ~100 bytes a node.
		PushPullInterval: 5 * time.Second,
		// 3s instead of 10s: on a LAN a peer that cannot take a TCP stream in 3s is as good as gone, and Join
		// on an unreachable seed gives up sooner.
		TCPTimeout: 3 * time.Second,
		// memberlist's 0 would refuse a dead name at a new address forever; names are role/id and etcd keeps ids
		// unique, so a dead name coming back at a new address is that node restarted: take it back at once.
		DeadNodeReclaimTime: time.Millisecond,
		// Load is a per-second rate; sampling it faster only adds noise.
		LoadInterval: time.Second,
		// A change under 2% does not change a routing or hot-ad decision, and not sending it keeps gossip quiet.
		LoadChange: 0.02,
		// Long enough for `admin status` to show a dead node; short enough that router ids (new per process)
		// do not pile up.
		ForgetDeadAfter: time.Hour,
	}
}

// RegisterFlags registers --gossip-addr, --gossip-advertise-addr and
// --gossip-join; flagenv.Parse also reads each from ADCLICK_GOSSIP_*.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.BindAddr, "gossip-addr", DefaultBindAddr,
		"memberlist (gossip) bind ip:port, TCP and UDP (port 0 picks a port free for both)")
	fs.StringVar(&c.AdvertiseAddr, "gossip-advertise-addr", "",
		"gossip host[:port] other nodes reach this one at (default: --gossip-addr; required when it binds 0.0.0.0 or [::])")
	fs.Var((*flagenv.StringList)(&c.Join), "gossip-join",
		"comma-separated gossip host:port seeds (default: the gossip addresses registered in etcd)")
}

// withDefaults fills every zero tuning field from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	setDur := func(v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		}
	}
	setDur(&c.ProbeInterval, d.ProbeInterval)
	setDur(&c.ProbeTimeout, d.ProbeTimeout)
	setDur(&c.GossipInterval, d.GossipInterval)
	setDur(&c.PushPullInterval, d.PushPullInterval)
	setDur(&c.TCPTimeout, d.TCPTimeout)
	setDur(&c.DeadNodeReclaimTime, d.DeadNodeReclaimTime)
	setDur(&c.LoadInterval, d.LoadInterval)
	setDur(&c.ForgetDeadAfter, d.ForgetDeadAfter)
	if c.SuspicionMult == 0 {
		c.SuspicionMult = d.SuspicionMult
	}
	if c.SuspicionMaxTimeoutMult == 0 {
		c.SuspicionMaxTimeoutMult = d.SuspicionMaxTimeoutMult
	}
	if c.GossipNodes == 0 {
		c.GossipNodes = d.GossipNodes
	}
	if c.LoadChange == 0 {
		c.LoadChange = d.LoadChange
	}
	return c
}

// Validate checks the flags and the tuning (zero tuning fields take their
// defaults).
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	bindIP, _, err := splitBind(c.BindAddr)
	if err != nil {
		errs = append(errs, err)
	}
	if c.AdvertiseAddr == "" {
		if err == nil && bindIP.IsUnspecified() {
			errs = append(errs, fmt.Errorf("--gossip-addr=%s binds every interface: set --gossip-advertise-addr to the ip[:port] other nodes can reach this one at", c.BindAddr))
		}
	} else if _, _, err := splitAdvertise(c.AdvertiseAddr); err != nil {
		errs = append(errs, err)
	}
	for _, s := range c.Join {
		if _, port, err := net.SplitHostPort(s); err != nil || port == "" {
			errs = append(errs, fmt.Errorf("--gossip-join: %q is not host:port", s))
		}
	}
	if c.ProbeTimeout >= c.ProbeInterval {
		errs = append(errs, fmt.Errorf("gossip ProbeTimeout %s must be shorter than ProbeInterval %s", c.ProbeTimeout, c.ProbeInterval))
	}
	if c.SuspicionMult < 1 || c.SuspicionMaxTimeoutMult < 1 || c.GossipNodes < 1 {
		errs = append(errs, errors.New("gossip SuspicionMult, SuspicionMaxTimeoutMult and GossipNodes must be at least 1"))
	}
	if c.LoadChange < 0 {
		errs = append(errs, fmt.Errorf("gossip LoadChange %g must not be negative", c.LoadChange))
	}
	return errors.Join(errs...)
}

// splitBind parses --gossip-addr: an IP literal (memberlist binds IPs, not
// names) and a port; an empty host means every interface.
func splitBind(addr string) (net.IP, int, error) {
	host, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, 0, fmt.Errorf("--gossip-addr=%q: want ip:port: %w", addr, err)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return nil, 0, fmt.Errorf("--gossip-addr=%q: host must be an IP address (memberlist binds addresses, not names)", addr)
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < 0 || port > 65535 {
		return nil, 0, fmt.Errorf("--gossip-addr=%q: bad port", addr)
	}
	return ip, port, nil
}

// splitAdvertise parses --gossip-advertise-addr: host or host:port, where a
// missing or zero port means the bound port.
func splitAdvertise(addr string) (string, int, error) {
	host, ps, err := net.SplitHostPort(addr)
	if err != nil {
		// A bare host (or bare IPv6 address) without a port.
		host, ps = addr, "0"
	}
	if host == "" {
		return "", 0, fmt.Errorf("--gossip-advertise-addr=%q: host is empty", addr)
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return "", 0, fmt.Errorf("--gossip-advertise-addr=%q: other nodes cannot reach an unspecified address", addr)
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("--gossip-advertise-addr=%q: bad port", addr)
	}
	return host, port, nil
}

package node

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/adclick/adclick/pkg/clock"
	"github.com/adclick/adclick/pkg/flagenv"
	"github.com/adclick/adclick/pkg/gossip"
	"github.com/adclick/adclick/pkg/membership"
	"github.com/adclick/adclick/pkg/ring"
	"github.com/adclick/adclick/pkg/server"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Role names a kind of node.
type Role string

// The three server roles.
const (
	RoleRouter     Role = "router"
	RoleAggregator Role = "aggregator"
	RoleReducer    Role = "reducer"
)

// defaultAddrs keeps the three roles from colliding on one machine.
var defaultAddrs = map[Role]struct{ grpc, http string }{
	RoleRouter:     {"127.0.0.1:7070", "127.0.0.1:8080"},
	RoleAggregator: {"127.0.0.1:7171", "127.0.0.1:8181"},
	RoleReducer:    {"127.0.0.1:7272", "127.0.0.1:8282"},
}

// Common holds the flags every server role shares.
type Common struct {
	EtcdEndpoints   flagenv.StringList
	GRPCAddr        string
	HTTPAddr        string
	AdvertiseAddr   string // address other nodes dial; default: the bound gRPC address
	NodeID          string
	DataDir         string
	MaxMsgBytes     int
	Pprof           bool
	LeaseTTL        time.Duration
	ShutdownTimeout time.Duration
	// InitialAggregators (aggregators) founds the ring history when there
	// is none yet: these aggregators own every minute from the start.
	// Aggregators not in it, or started once a history exists, join at a
	// future minute (ring.History.Join).
	InitialAggregators flagenv.StringList
	// RingViewTTL (aggregators) is written into the ring history when this
	// node founds it: how long a node may act on an unconfirmed view.
	RingViewTTL time.Duration
	Gossip      gossip.Config // --gossip-* (memberlist)
}

// RegisterFlags registers the shared flags with role-specific defaults.
func (c *Common) RegisterFlags(fs *flag.FlagSet, role Role) {
	c.EtcdEndpoints = flagenv.StringList{"127.0.0.1:2379"}
	fs.Var(&c.EtcdEndpoints, "etcd-endpoints", "comma-separated etcd client endpoints")
	def := defaultAddrs[role]
	fs.StringVar(&c.GRPCAddr, "grpc-addr", def.grpc, "gRPC listen address (port 0 picks a free port)")
	httpHelp := "HTTP listen address for /metrics, /healthz and /debug/pprof"
	if role == RoleRouter {
		httpHelp += ", and the REST API"
	}
	fs.StringVar(&c.HTTPAddr, "http-addr", def.http, httpHelp)
	fs.StringVar(&c.AdvertiseAddr, "advertise-addr", "", "gRPC address other nodes dial (default: the bound --grpc-addr; set it when listening on 0.0.0.0)")
	if role != RoleRouter {
		host, _ := os.Hostname()
		fs.StringVar(&c.NodeID, "node-id", host, "unique, stable id of this node in the cluster (default: the host name)")
		fs.StringVar(&c.DataDir, "data-dir", "./data/"+string(role), "directory for this node's data")
	}
	// 16 MiB fits a 10,000-event batch with long ids several times over.
	fs.IntVar(&c.MaxMsgBytes, "max-msg-bytes", 16<<20, "largest gRPC message accepted, in bytes")
	fs.BoolVar(&c.Pprof, "pprof", false, "serve /debug/pprof on --http-addr")
	fs.DurationVar(&c.LeaseTTL, "lease-ttl", membership.DefaultTTL, "etcd lease TTL of this node's registration")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 10*time.Second, "how long a stop may take to finish in-flight work")
	c.Gossip = gossip.DefaultConfig()
	c.Gossip.RegisterFlags(fs)
	if role == RoleAggregator {
		fs.Var(&c.InitialAggregators, "initial-aggregators",
			"comma-separated ids of the aggregators that found the ring when none exists yet (the same list on each; default: this node alone); later ones join at a future minute")
	}
	if role == RoleAggregator {
		fs.DurationVar(&c.RingViewTTL, "ring-view-ttl", ring.DefaultViewTTL,
			"when this node founds the ring history: how long any node may act on its view of it without confirming it with etcd; every ring change takes effect at least 75s plus this ahead")
	}
	if role == RoleRouter {
		fs.StringVar(&c.NodeID, "node-id", "", "id of this router in the cluster, shown by `adclick admin status` (default: host name and gRPC port)")
	}
}

// Validate checks the shared flags.
func (c Common) Validate(role Role) error {
	var errs []error
	if len(c.EtcdEndpoints) == 0 {
		errs = append(errs, errors.New("--etcd-endpoints is empty"))
	}
	if c.GRPCAddr == "" || c.HTTPAddr == "" {
		errs = append(errs, errors.New("--grpc-addr and --http-addr are required"))
	}
	if role != RoleRouter {
		if c.NodeID == "" {
			errs = append(errs, errors.New("--node-id is required"))
		}
		if c.DataDir == "" {
			errs = append(errs, errors.New("--data-dir is required"))
		}
	}
	if c.MaxMsgBytes < 1<<10 {
		errs = append(errs, fmt.Errorf("--max-msg-bytes=%d is too small (at least 1024)", c.MaxMsgBytes))
	}
	if err := c.Gossip.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.RingViewTTL != 0 && (c.RingViewTTL < 5*time.Second || c.RingViewTTL%time.Second != 0) {
		errs = append(errs, fmt.Errorf("--ring-view-ttl=%s: a whole number of seconds, at least 5s (views are confirmed every second or so)", c.RingViewTTL))
	}
	if c.LeaseTTL < time.Second {
		errs = append(errs, fmt.Errorf("--lease-ttl=%s: at least 1s", c.LeaseTTL))
	}
	return errors.Join(errs...)
}

func (c Common) serverConfig() server.Config {
	return server.Config{GRPCAddr: c.GRPCAddr, HTTPAddr: c.HTTPAddr, MaxMsgBytes: c.MaxMsgBytes, Pprof: c.Pprof}
}

func (c Common) advertise(s *server.Server) string {
	if c.AdvertiseAddr != "" {
		return c.AdvertiseAddr
	}
	return s.GRPCAddr()
}

// Env is what every node takes from its process.
type Env struct {
	Clock clock.Clock
	Log   *slog.Logger
}

func (e Env) withDefaults() Env {
	if e.Clock == nil {
		e.Clock = clock.Real{}
	}
	if e.Log == nil {
		e.Log = slog.Default()
	}
	return e
}

func etcdClient(endpoints []string) (*clientv3.Client, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		// Find out quickly that etcd is gone; the client reconnects by itself.
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client for %v: %w", endpoints, err)
	}
	return cli, nil
}

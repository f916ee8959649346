package node

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"time"

	"github.com/adclick/adclick/pkg/aggregator"
	"github.com/adclick/adclick/pkg/etcdembed"
	"github.com/adclick/adclick/pkg/gossip"
	"github.com/adclick/adclick/pkg/reducer"
	"github.com/adclick/adclick/pkg/ring"
	"github.com/adclick/adclick/pkg/router"
)

// ClusterConfig describes a whole cluster in one process (`adclick dev` and
// integration tests): an embedded etcd, reducers, aggregators and a router,
// all on loopback sockets, each node with its own data dir under DataDir.
type ClusterConfig struct {
	DataDir     string
	EtcdAddr    string // embedded etcd client address; port 0 picks one
	GRPCAddr    string // router gRPC
	HTTPAddr    string // router REST, metrics
	Aggregators int
	Reducers    int
	Aggregator  aggregator.Config
	Reducer     reducer.Config
	Router      router.Config
	Pprof       bool
}

// TestClusterConfig returns the configuration of a cluster for tests: every
// component at its defaults, all addresses on free loopback ports, data
// under dir, the given numbers of aggregators and reducers.
func TestClusterConfig(dir string, aggregators, reducers int) ClusterConfig {
	cfg := ClusterConfig{DataDir: dir, EtcdAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
		Aggregators: aggregators, Reducers: reducers}
	fs := flag.NewFlagSet("defaults", flag.ContinueOnError)
	cfg.Aggregator.RegisterFlags(fs)
	cfg.Reducer.RegisterFlags(fs)
	cfg.Router.RegisterFlags(fs)
	return cfg
}

// Cluster is a running in-process cluster.
type Cluster struct {
	Etcd        *etcdembed.Server
	Router      *Router
	Aggregators []*Aggregator
	Reducers    []*Reducer
	fatal       chan error
	done        chan struct{}
}

// StartCluster starts etcd, then reducers, aggregators and the router, and
// returns once every node serves and is registered.
func StartCluster(cfg ClusterConfig, env Env) (*Cluster, error) {
	env = env.withDefaults()
	if cfg.Aggregators < 1 || cfg.Reducers < 1 {
		return nil, fmt.Errorf("a cluster needs at least one aggregator and one reducer (got %d and %d)", cfg.Aggregators, cfg.Reducers)
	}
	etcd, err := etcdembed.Start(filepath.Join(cfg.DataDir, "etcd"), cfg.EtcdAddr, env.Log)
	if err != nil {
		return nil, err
	}
	cl := &Cluster{Etcd: etcd}
	common := func(id, grpcAddr, httpAddr string) Common {
		return Common{
			EtcdEndpoints: []string{etcd.Endpoint}, GRPCAddr: grpcAddr, HTTPAddr: httpAddr,
			NodeID: id, DataDir: filepath.Join(cfg.DataDir, id), MaxMsgBytes: 16 << 20, Pprof: cfg.Pprof,
			LeaseTTL: 5 * time.Second, ShutdownTimeout: 10 * time.Second,
			Gossip: gossip.Config{BindAddr: "127.0.0.1:0"},
		}
	}
	fail := func(err error) (*Cluster, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = cl.Stop(ctx)
		return nil, err
	}
	for i := 1; i <= cfg.Reducers; i++ {
		id := fmt.Sprintf("reducer-%d", i)
		r, err := StartReducer(common(id, "127.0.0.1:0", "127.0.0.1:0"), cfg.Reducer, Env{Clock: env.Clock, Log: env.Log.With("node", id)})
		if err != nil {
			return fail(fmt.Errorf("%s: %w", id, err))
		}
		cl.Reducers = append(cl.Reducers, r)
	}
	n, err := aggregatorsToStart(etcd, cfg.Aggregators, env)
	if err != nil {
		return fail(err)
	}
	var founders []string
	for i := 1; i <= n; i++ {
		founders = append(founders, fmt.Sprintf("aggregator-%d", i))
	}
	for _, id := range founders {
		c := common(id, "127.0.0.1:0", "127.0.0.1:0")
		c.InitialAggregators = founders
		a, err := StartAggregator(c, cfg.Aggregator, Env{Clock: env.Clock, Log: env.Log.With("node", id)})
		if err != nil {
			return fail(fmt.Errorf("%s: %w", id, err))
		}
		cl.Aggregators = append(cl.Aggregators, a)
	}
	rt, err := StartRouter(common("router", cfg.GRPCAddr, cfg.HTTPAddr), cfg.Router, Env{Clock: env.Clock, Log: env.Log.With("node", "router")})
	if err != nil {
		return fail(fmt.Errorf("router: %w", err))
	}
	// The router started last, so its first listing of etcd already holds
	// every node started above.
	cl.Router = rt
	cl.watchFatal()
	return cl, nil
}

// aggregatorsToStart is how many aggregators a cluster on an existing data
// dir must run: at least every aggregator-N the ring history still has on
// the ring (a member that is not started would leave its ads with no one to
// count them). More than before join at a future minute.
func aggregatorsToStart(etcd *etcdembed.Server, want int, env Env) (int, error) {
	cli, err := etcd.Client()
	if err != nil {
		return 0, err
	}
	defer cli.Close()
	h, _, err := ring.LoadHistory(context.Background(), cli)
	if err != nil || h == nil {
		return want, err
	}
	n := want
	for _, id := range h.Latest().Aggregators {
		var k int
		if _, err := fmt.Sscanf(id, "aggregator-%d", &k); err == nil && k > n {
			n = k
		}
	}
	if n > want {
		env.Log.Warn("the data dir's ring has more aggregators than asked for: starting all of them; to shrink, drain the extra ones (adclick admin drain aggregator-N)",
			"asked", want, "starting", n)
	}
	return n, nil
}

// Err delivers the first fatal error of any aggregator (the nodes whose
// storage can fail) until Stop.
func (cl *Cluster) Err() <-chan error { return cl.fatal }

// watchFatal forwards the aggregators' fatal errors to cl.fatal until Stop.
func (cl *Cluster) watchFatal() {
	fatal, done := make(chan error, 1), make(chan struct{})
	cl.fatal, cl.done = fatal, done
	for _, a := range cl.Aggregators {
		go func(ch <-chan error) {
			select {
			case err := <-ch:
				select {
				case fatal <- err:
				default:
				}
			case <-done:
			}
		}(a.Err())
	}
}

// Stop stops the router, then aggregators (delivering their outboxes), then
// reducers, then etcd.
func (cl *Cluster) Stop(ctx context.Context) error {
	if cl.done != nil {
		close(cl.done)
		cl.done = nil
	}
	var errs []error
	if cl.Router != nil {
		errs = append(errs, cl.Router.Stop(ctx))
	}
	for _, a := range cl.Aggregators {
		errs = append(errs, a.Stop(ctx))
	}
	for _, r := range cl.Reducers {
		errs = append(errs, r.Stop(ctx))
	}
	if cl.Etcd != nil {
		cl.Etcd.Close()
	}
	return errors.Join(errs...)
}

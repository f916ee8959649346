package node

import (
	"context"
	"net"
	"os"
	"time"

	"github.com/adclick/adclick/pkg/filter"
	"github.com/adclick/adclick/pkg/gossip"
	"github.com/adclick/adclick/pkg/membership"
	"github.com/adclick/adclick/pkg/router"
)

// Router is a running router node.
type Router struct {
	*base
	rt *router.Router
}

// StartRouter starts a router: the public gRPC API and the REST API.
func StartRouter(c Common, cfg router.Config, env Env) (*Router, error) {
	env = env.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b, err := newBase(c, env, RoleRouter)
	if err != nil {
		return nil, err
	}
	n := &Router{base: b}
	if err := n.start(cfg, env); err != nil {
		b.stopAll()
		return nil, err
	}
	return n, nil
}

func (n *Router) start(cfg router.Config, env Env) error {
	aggs, err := membership.Watch(n.ctx, n.etcd, membership.Aggregators, env.Log)
	if err != nil {
		return err
	}
	reds, err := membership.Watch(n.ctx, n.etcd, membership.Reducers, env.Log)
	if err != nil {
		return err
	}
	filters, err := filter.Watch(n.ctx, n.etcd, env.Log)
	if err != nil {
		return err
	}
	if err := n.watchRing(); err != nil {
		return err
	}
	id := n.common.NodeID
	if id == "" {
		host, _ := os.Hostname()
		_, port, _ := net.SplitHostPort(n.srv.GRPCAddr())
		id = host + "-" + port
	}
	if err := n.startGossip(gossip.RoleRouter, id, n.common.advertise(n.srv), 0, nil); err != nil {
		return err
	}
	n.rt, err = router.New(cfg, router.Deps{
		Clock: env.Clock, Log: env.Log, Reg: n.srv.Registry,
		Aggregators: aggs, Reducers: reds, Filters: filters, Ring: n.ring, Liveness: n.gossip,
		FilterStore: n.filterStore(env),
	})
	if err != nil {
		return err
	}
	n.goRun(n.rt.Run)
	n.rt.Register(n.srv.GRPC)
	gw, err := n.rt.Gateway(n.ctx)
	if err != nil {
		return err
	}
	n.srv.Handle("/v1/", gw)
	n.srv.Serve()
	return n.register(membership.Routers, membership.Member{ID: id, Addr: n.common.advertise(n.srv), HTTPAddr: n.srv.HTTPAddr()})
}

// Stop finishes in-flight requests and closes connections.
func (n *Router) Stop(ctx context.Context) error {
	n.deregister(ctx)
	n.srv.Stop(ctx)
	n.stopAll()
	return n.rt.Close()
}

// filterStore makes new filters take effect as far ahead as a ring change
// (the ring's view TTL is also how long an aggregator may go without
// confirming its filters).
func (n *Router) filterStore(env Env) *filter.Store {
	s := filter.NewStore(n.etcd, env.Clock)
	s.SetLead(func() time.Duration { return n.ring.Current().History().Lead() })
	return s
}

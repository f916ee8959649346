package node

import (
	"context"
	"errors"
	"fmt"

	clusterv1 "github.com/adclick/adclick/gen/adclick/cluster/v1"
	"github.com/adclick/adclick/pkg/aggregator"
	"github.com/adclick/adclick/pkg/filter"
	"github.com/adclick/adclick/pkg/membership"
)

// Aggregator is a running aggregator node.
type Aggregator struct {
	*base
	agg     *aggregator.Aggregator
	filters *filter.Watcher
}

// Filters is the filter set this aggregator counts with now.
func (n *Aggregator) Filters() *filter.Set { return n.filters.Current() }

// StartAggregator starts an aggregator node and registers it once it serves.
func StartAggregator(c Common, cfg aggregator.Config, env Env) (*Aggregator, error) {
	env = env.withDefaults()
	cfg.NodeID, cfg.DataDir = c.NodeID, c.DataDir
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b, err := newBase(c, env, RoleAggregator)
	if err != nil {
		return nil, err
	}
	n := &Aggregator{base: b}
	if err := n.start(c, cfg, env); err != nil {
		b.stopAll()
		if n.agg != nil {
			_ = n.agg.Close()
		}
		return nil, err
	}
	return n, nil
}

func (n *Aggregator) start(c Common, cfg aggregator.Config, env Env) error {
	filters, err := filter.Watch(n.ctx, n.etcd, env.Log)
	if err != nil {
		return err
	}
	n.filters = filters
	reducers, err := membership.Watch(n.ctx, n.etcd, membership.Reducers, env.Log)
	if err != nil {
		return err
	}
	n.agg, err = aggregator.New(cfg, aggregator.Deps{Clock: env.Clock, Log: env.Log, Reg: n.srv.Registry, Filters: filters, Reducers: reducers})
	if err != nil {
		return err
	}
	ownsFrom, err := membership.OwnsFrom(n.ctx, n.etcd, env.Clock.Now(), c.JoinDelay)
	if err != nil {
		return err
	}
	clusterv1.RegisterAggregatorServiceServer(n.srv.GRPC, n.agg)
	n.goRun(func(ctx context.Context) {
		if err := n.agg.Run(ctx); err != nil && ctx.Err() == nil {
			n.fail(fmt.Errorf("aggregator %s stopped counting: %w", c.NodeID, err))
		}
	})
	n.srv.Serve()
	return n.register(membership.Aggregators, membership.Member{
		ID: c.NodeID, Addr: c.advertise(n.srv), HTTPAddr: n.srv.HTTPAddr(),
		Incarnation: n.agg.Incarnation(), FirstMinute: n.agg.FirstMinute(), OwnsFrom: ownsFrom,
	})
}

// Stop leaves the cluster, finishes in-flight batches, syncs the log,
// delivers what the outbox holds until ctx ends, and closes the log and
// state. Open minutes are not sent early: the next start recovers them.
func (n *Aggregator) Stop(ctx context.Context) error {
	n.deregister(ctx)
	n.srv.Stop(ctx)
	var err error
	if n.agg != nil {
		if ferr := n.agg.Flush(ctx); ferr != nil {
			err = fmt.Errorf("aggregator %s: undelivered partials at shutdown: %w", n.common.NodeID, ferr)
		}
	}
	n.stopAll()
	if cerr := n.agg.Close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("aggregator %s: close log and state: %w", n.common.NodeID, cerr))
	}
	return err
}

package node

import (
	"context"
	"errors"

	"github.com/adclick/adclick/pkg/gossip"
	"github.com/adclick/adclick/pkg/membership"
	"github.com/adclick/adclick/pkg/reducer"
)

// Reducer is a running reducer node.
type Reducer struct {
	*base
	red *reducer.Reducer
}

// StartReducer opens the reducer's store, serves, and registers.
func StartReducer(c Common, cfg reducer.Config, env Env) (*Reducer, error) {
	env = env.withDefaults()
	cfg.NodeID, cfg.DataDir = c.NodeID, c.DataDir
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b, err := newBase(c, env, RoleReducer)
	if err != nil {
		return nil, err
	}
	n := &Reducer{base: b}
	if err := n.start(c, cfg, env); err != nil {
		b.stopAll()
		if n.red != nil {
			n.red.Close()
		}
		return nil, err
	}
	return n, nil
}

func (n *Reducer) start(c Common, cfg reducer.Config, env Env) error {
	aggs, err := membership.Watch(n.ctx, n.etcd, membership.Aggregators, env.Log)
	if err != nil {
		return err
	}
	if err := n.watchRing(); err != nil {
		return err
	}
	n.red, err = reducer.Open(cfg, reducer.Deps{Clock: env.Clock, Log: env.Log, Reg: n.srv.Registry, Aggregators: aggs, Ring: n.ring})
	if err != nil {
		return err
	}
	n.goRun(n.red.Run) // deletes minutes older than --retention
	n.red.Register(n.srv.GRPC)
	n.srv.Serve()
	if err := n.startGossip(gossip.RoleReducer, c.NodeID, c.advertise(n.srv), 0, nil); err != nil {
		return err
	}
	return n.register(membership.Reducers, membership.Member{ID: c.NodeID, Addr: c.advertise(n.srv), HTTPAddr: n.srv.HTTPAddr()})
}

// Stop leaves the cluster, finishes in-flight calls and closes the store.
func (n *Reducer) Stop(ctx context.Context) error {
	n.deregister(ctx)
	n.srv.Stop(ctx)
	n.stopAll()
	return errors.Join(n.red.Close())
}

package node

import (
	"context"
	"fmt"
	"sync"

	"github.com/adclick/adclick/pkg/gossip"
	"github.com/adclick/adclick/pkg/membership"
	"github.com/adclick/adclick/pkg/ring"
	"github.com/adclick/adclick/pkg/server"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// base is what every node role has: an etcd client, the listeners, a
// registration and background goroutines bound to one context.
type base struct {
	common Common
	env    Env
	etcd   *clientv3.Client
	srv    *server.Server
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	reg    *membership.Registration
	ring   *ring.Watcher
	gossip *gossip.Gossip
	fatal  chan error
}

func newBase(c Common, env Env, role Role) (*base, error) {
	if err := c.Validate(role); err != nil {
		return nil, err
	}
	cli, err := etcdClient(c.EtcdEndpoints)
	if err != nil {
		return nil, err
	}
	srv, err := server.New(c.serverConfig(), env.Log)
	if err != nil {
		cli.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &base{common: c, env: env, etcd: cli, srv: srv, ctx: ctx, cancel: cancel, fatal: make(chan error, 1)}, nil
}

// Err delivers the error that makes the node unable to go on (for example a
// failed fsync): the process must stop rather than keep acknowledging.
func (b *base) Err() <-chan error { return b.fatal }

func (b *base) fail(err error) {
	b.env.Log.Error("node failed", "err", err)
	select {
	case b.fatal <- err:
	default:
	}
}

// GRPCAddr is the bound gRPC address.
func (b *base) GRPCAddr() string { return b.srv.GRPCAddr() }

// HTTPAddr is the bound HTTP address.
func (b *base) HTTPAddr() string { return b.srv.HTTPAddr() }

func (b *base) goRun(f func(ctx context.Context)) {
	b.wg.Add(1)
	go func() { defer b.wg.Done(); f(b.ctx) }()
}

// watchRing follows the ring history (every role routes or checks by it).
func (b *base) watchRing() error {
	w, err := ring.Watch(b.ctx, b.etcd, b.env.Clock, b.env.Log)
	if err != nil {
		return fmt.Errorf("ring history: %w", err)
	}
	b.ring = w
	return nil
}

// publishAppliedRing keeps the registration's applied ring revision (the
// handshake operators see) in step with the ring watcher.
func (b *base) publishAppliedRing(ctx context.Context) {
	ch := b.ring.Subscribe()
	for {
		if b.reg != nil {
			b.reg.SetAppliedRing(ctx, b.ring.Revision())
		}
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
	}
}

func (b *base) register(kind membership.Kind, m membership.Member) error {
	if b.ring != nil {
		m.AppliedRing = b.ring.Revision()
	}
	m.GossipAddr = b.gossipAddr()
	reg, err := membership.Register(b.ctx, b.etcd, kind, m, b.common.LeaseTTL, b.env.Log)
	if err != nil {
		return fmt.Errorf("register in etcd: %w", err)
	}
	b.reg = reg
	if b.ring != nil {
		b.goRun(b.publishAppliedRing)
	}
	b.env.Log.Info("serving", "role", kind, "id", m.ID, "grpc", b.srv.GRPCAddr(), "http", b.srv.HTTPAddr())
	return nil
}

func (b *base) deregister(ctx context.Context) {
	b.leaveGossip()
	if b.reg == nil {
		return
	}
	if err := b.reg.Close(ctx); err != nil {
		b.env.Log.Warn("deregister", "err", err)
	}
	b.reg = nil
}

// stopAll stops the listeners and background work and closes the etcd client.
func (b *base) stopAll() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b.srv.Stop(ctx)
	b.cancel()
	b.wg.Wait()
	b.etcd.Close()
}

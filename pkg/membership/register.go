package membership

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// DefaultTTL is how long a registration outlives its node: long enough to
// ride out a GC pause or a brief etcd election, short enough that a dead
// node leaves the ring within seconds.
const DefaultTTL = 5 * time.Second

// Registration keeps one node's liveness key alive until Close.
type Registration struct {
	cli    *clientv3.Client
	key    string // liveness key
	ttl    time.Duration
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	leaseID clientv3.LeaseID
	member  Member // what the liveness key holds
}

// Register writes m's persistent record under kind (so the node stays a
// member while it is down), then publishes its liveness key with a lease of
// ttl and keeps it alive in the background, registering again with a new
// lease whenever the lease is lost. The first registration is synchronous:
// when Register returns without error, the node is visible to watchers.
// Where a node sits on the ring is not part of its record: that is the
// ring history's (package ring).
func Register(ctx context.Context, cli *clientv3.Client, kind Kind, m Member, ttl time.Duration, log *slog.Logger) (*Registration, error) {
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	if err := putRecord(ctx, cli, kind, m); err != nil {
		return nil, fmt.Errorf("register %s: %w", kind.Key(m.ID), err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	r := &Registration{cli: cli, key: kind.LiveKey(m.ID), member: m, ttl: ttl, log: log, cancel: cancel, done: make(chan struct{})}
	ka, err := r.grant(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("register %s: %w", r.key, err)
	}
	go r.keepAlive(rctx, ka)
	return r, nil
}

func (r *Registration) grant(ctx context.Context) (<-chan *clientv3.LeaseKeepAliveResponse, error) {
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	lease, err := r.cli.Grant(gctx, int64((r.ttl+time.Second-1)/time.Second))
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	value, err := json.Marshal(r.member)
	r.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if _, err := r.cli.Put(gctx, r.key, string(value), clientv3.WithLease(lease.ID)); err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.leaseID = lease.ID
	r.mu.Unlock()
	// The keep-alive stream lives as long as the registration, not the
	// caller's context.
	return r.cli.KeepAlive(clientv3.WithRequireLeader(context.Background()), lease.ID)
}

func (r *Registration) keepAlive(ctx context.Context, ka <-chan *clientv3.LeaseKeepAliveResponse) {
	defer close(r.done)
	for {
		for ka != nil {
			select {
			case <-ctx.Done():
				return
			case _, ok := <-ka:
				if !ok {
					ka = nil
				}
			}
		}
		r.log.Warn("registration lease lost, registering again", "key", r.key)
		backoff := 200 * time.Millisecond
		for ka == nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			var err error
			if ka, err = r.grant(ctx); err != nil {
				r.log.Warn("register again failed", "key", r.key, "err", err)
				ka = nil
				backoff = min(2*backoff, 3*time.Second)
			}
		}
		r.log.Info("registered again", "key", r.key)
	}
}

// SetAppliedRing publishes that the node has applied revision rev of the
// ring history (the handshake operators see in `adclick admin status`).
// Best effort: a failed write is logged, and the next registration after a
// lost lease carries the value anyway.
func (r *Registration) SetAppliedRing(ctx context.Context, rev int64) {
	r.mu.Lock()
	if r.member.AppliedRing >= rev {
		r.mu.Unlock()
		return
	}
	r.member.AppliedRing = rev
	value, err := json.Marshal(r.member)
	lease := r.leaseID
	r.mu.Unlock()
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := r.cli.Put(ctx, r.key, string(value), clientv3.WithLease(lease)); err != nil {
		r.log.Warn("cannot publish the applied ring revision", "key", r.key, "revision", rev, "err", err)
	}
}

// Close stops keeping the registration alive and revokes its lease, so
// watchers see the node stop at once. Its persistent record stays.
func (r *Registration) Close(ctx context.Context) error {
	r.cancel()
	<-r.done
	r.mu.Lock()
	id := r.leaseID
	r.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err := r.cli.Revoke(cctx, id)
	return err
}

// putRecord writes m's persistent record (routers have none).
func putRecord(ctx context.Context, cli *clientv3.Client, kind Kind, m Member) error {
	if kind == Routers {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	value, err := json.Marshal(m)
	if err != nil {
		return err
	}
	_, err = cli.Put(ctx, kind.Key(m.ID), string(value))
	return err
}

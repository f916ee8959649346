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
	value  []byte
	ttl    time.Duration
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	leaseID clientv3.LeaseID
}

// Register writes m's persistent record under kind (so the node stays a
// member while it is down), then publishes its liveness key with a lease of
// ttl and keeps it alive in the background, registering again with a new
// lease whenever the lease is lost. The first registration is synchronous:
// when Register returns without error, the node is visible to watchers.
//
// For aggregators, m.OwnsFrom is taken from the existing record when there
// is one, so a restart never moves the node on the ring.
func Register(ctx context.Context, cli *clientv3.Client, kind Kind, m Member, ttl time.Duration, log *slog.Logger) (*Registration, error) {
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	m, err := putRecord(ctx, cli, kind, m)
	if err != nil {
		return nil, fmt.Errorf("register %s: %w", kind.Key(m.ID), err)
	}
	value, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.Background())
	r := &Registration{cli: cli, key: kind.LiveKey(m.ID), value: value, ttl: ttl, log: log, cancel: cancel, done: make(chan struct{})}
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
	if _, err := r.cli.Put(gctx, r.key, string(r.value), clientv3.WithLease(lease.ID)); err != nil {
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

// putRecord writes m's persistent record, keeping OwnsFrom of an existing
// record.
func putRecord(ctx context.Context, cli *clientv3.Client, kind Kind, m Member) (Member, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	key := kind.Key(m.ID)
	resp, err := cli.Get(ctx, key)
	if err != nil {
		return m, err
	}
	if len(resp.Kvs) == 1 {
		var old Member
		if err := json.Unmarshal(resp.Kvs[0].Value, &old); err == nil {
			m.OwnsFrom = old.OwnsFrom
		}
	}
	value, err := json.Marshal(m)
	if err != nil {
		return m, err
	}
	_, err = cli.Put(ctx, key, string(value))
	return m, err
}

// OwnsFrom decides from which minute a new aggregator takes its share of the
// ring: from the beginning of time when no aggregator exists yet or
// joinDelay is 0 (a cluster being set up, before any click), else from the
// minute boundary joinDelay ahead of now. joinDelay must exceed the one
// minute a click may lie in the future plus the time routers need to see
// the change, so that no router has routed a click of that minute with the
// old ring. An aggregator that is already a member keeps its value (see
// Register).
func OwnsFrom(ctx context.Context, cli *clientv3.Client, now time.Time, joinDelay time.Duration) (int64, error) {
	if joinDelay == 0 {
		return 0, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, Aggregators.Prefix(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, fmt.Errorf("list aggregators: %w", err)
	}
	if resp.Count == 0 {
		return 0, nil
	}
	m := now.Add(joinDelay).Unix()
	return m - ((m%60)+60)%60, nil
}

package etcdkv

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Client is the part of the etcd client a PrefixCache needs.
type Client interface {
	clientv3.KV
	clientv3.Watcher
}

// PrefixCache mirrors all keys under one prefix. Safe for concurrent use.
type PrefixCache struct {
	cli    Client
	prefix string
	log    *slog.Logger
	// onChange is called with a fresh snapshot after every change. It runs on
	// the cache's goroutine and must not block for long.
	onChange func(map[string][]byte)

	mu   sync.Mutex
	data map[string][]byte
	rev  int64
}

// NewPrefixCache lists prefix once (so the cache is complete when it
// returns) and keeps it up to date until ctx is done.
func NewPrefixCache(ctx context.Context, cli Client, prefix string, log *slog.Logger, onChange func(map[string][]byte)) (*PrefixCache, error) {
	c := &PrefixCache{cli: cli, prefix: prefix, log: log, onChange: onChange}
	if err := c.list(ctx); err != nil {
		return nil, err
	}
	go c.run(ctx)
	return c, nil
}

// Snapshot returns a copy of the mirrored keys and values.
func (c *PrefixCache) Snapshot() map[string][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return copyMap(c.data)
}

func (c *PrefixCache) list(ctx context.Context) error {
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := c.cli.Get(lctx, c.prefix, clientv3.WithPrefix())
	if err != nil {
		return err
	}
	data := make(map[string][]byte, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		data[string(kv.Key)] = kv.Value
	}
	c.mu.Lock()
	c.data = data
	c.rev = resp.Header.Revision
	snap := copyMap(data)
	c.mu.Unlock()
	if c.onChange != nil {
		c.onChange(snap)
	}
	return nil
}

func (c *PrefixCache) run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := c.watch(ctx)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, rpctypes.ErrCompacted) {
			c.log.Info("etcd watch compacted, re-listing", "prefix", c.prefix)
		} else {
			c.log.Warn("etcd watch broken, re-listing", "prefix", c.prefix, "err", err)
		}
		for ctx.Err() == nil {
			if err := c.list(ctx); err == nil {
				backoff = 100 * time.Millisecond
				break
			} else {
				c.log.Warn("etcd list failed", "prefix", c.prefix, "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
		}
	}
}

// watch applies events until the watch ends; it returns why.
func (c *PrefixCache) watch(ctx context.Context) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	c.mu.Lock()
	rev := c.rev
	c.mu.Unlock()
	wch := c.cli.Watch(wctx, c.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	for resp := range wch {
		if err := resp.Err(); err != nil {
			return err
		}
		if len(resp.Events) == 0 {
			continue
		}
		c.mu.Lock()
		for _, ev := range resp.Events {
			switch ev.Type {
			case clientv3.EventTypePut:
				c.data[string(ev.Kv.Key)] = ev.Kv.Value
			case clientv3.EventTypeDelete:
				delete(c.data, string(ev.Kv.Key))
			}
		}
		c.rev = resp.Header.Revision
		snap := copyMap(c.data)
		c.mu.Unlock()
		if c.onChange != nil {
			c.onChange(snap)
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return errors.New("watch channel closed")
}

func copyMap(m map[string][]byte) map[string][]byte {
	out := make(map[string][]byte, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

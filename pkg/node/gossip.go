package node

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/adclick/adclick/pkg/etcdkv"
	"github.com/adclick/adclick/pkg/gossip"
	"github.com/adclick/adclick/pkg/membership"
)

// startGossip joins this node to the memberlist gossip (liveness and load
// between nodes) and serves what it knows as JSON on GET /gossip, which
// `adclick admin status` reads. Seeds are --gossip-join, else the gossip
// addresses of the nodes registered in etcd; it re-joins them while gossip
// knows fewer live nodes than etcd does (a partition that healed, a seed
// that started later).
func (b *base) startGossip(role, id, grpcAddr string, incarnation int64, load func() float64) error {
	g, err := gossip.Start(b.common.Gossip, gossip.Self{ID: id, Role: role, GRPCAddr: grpcAddr, Incarnation: incarnation},
		gossip.Deps{Log: b.env.Log, Reg: b.srv.Registry, Load: load})
	if err != nil {
		return err
	}
	b.gossip = g
	b.srv.Handle("/gossip", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(g.Peers())
	}))
	b.joinGossip(b.ctx)
	b.goRun(func(ctx context.Context) {
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				b.joinGossip(ctx)
			}
		}
	})
	return nil
}

// joinGossip joins the configured seeds, or the live nodes etcd knows that
// gossip does not see alive.
func (b *base) joinGossip(ctx context.Context) {
	seeds := b.common.Gossip.Join
	if len(seeds) == 0 {
		seeds = b.gossipSeeds(ctx)
	}
	if len(seeds) == 0 {
		return
	}
	if _, err := b.gossip.Join(seeds); err != nil {
		b.env.Log.Warn("gossip: no seed answered; retrying in 10s", "seeds", seeds, "err", err)
	}
}

func (b *base) gossipSeeds(ctx context.Context) []string {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	resp, err := b.etcd.Get(ctx, etcdkv.Prefix+"live/", clientv3.WithPrefix())
	if err != nil {
		return nil
	}
	var seeds []string
	for _, kv := range resp.Kvs {
		var m membership.Member
		if json.Unmarshal(kv.Value, &m) != nil || m.GossipAddr == "" || m.GossipAddr == b.gossip.AdvertiseAddr() {
			continue
		}
		role := roleOfLiveKey(string(kv.Key))
		if alive, known := b.gossip.Alive(role, m.ID); known && alive {
			continue
		}
		seeds = append(seeds, m.GossipAddr)
	}
	return seeds
}

// roleOfLiveKey maps a liveness key to the gossip role of its node.
func roleOfLiveKey(key string) string {
	for _, k := range []struct {
		kind membership.Kind
		role string
	}{{membership.Aggregators, gossip.RoleAggregator}, {membership.Reducers, gossip.RoleReducer}, {membership.Routers, gossip.RoleRouter}} {
		if len(key) > len(k.kind.LivePrefix()) && key[:len(k.kind.LivePrefix())] == k.kind.LivePrefix() {
			return k.role
		}
	}
	return ""
}

// leaveGossip tells the others this node is going, so they stop routing to
// it at once.
func (b *base) leaveGossip() {
	if b.gossip != nil {
		if err := b.gossip.Leave(gossip.DefaultLeaveTimeout); err != nil {
			b.env.Log.Warn("gossip leave", "err", err)
		}
	}
}

// gossipAddr is the address others join to reach this node's gossip.
func (b *base) gossipAddr() string {
	if b.gossip == nil {
		return ""
	}
	return b.gossip.AdvertiseAddr()
}

// rate turns a running total into a per-second rate between calls (the
// gossip samples it about once a second).
func rate(total func() uint64) func() float64 {
	var last uint64
	var at time.Time
	return func() float64 {
		now, n := time.Now(), total()
		defer func() { last, at = n, now }()
		if at.IsZero() || !now.After(at) {
			return 0
		}
		return float64(n-last) / now.Sub(at).Seconds()
	}
}

package hotad

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/adclick/adclick/pkg/clock"
	"github.com/adclick/adclick/pkg/etcdkv"
	"github.com/adclick/adclick/pkg/ring"
)

// KeyPrefix holds one key per auto grant, /adclick/v1/hot/<ad>, attached to
// its holder's lease: while the key exists the grant is wanted.
const KeyPrefix = etcdkv.Prefix + "hot/"

// Key is the lease key of ad's auto grant.
func Key(ad string) string { return KeyPrefix + ad }

// ErrTaken: another node holds ad's lease key.
var ErrTaken = errors.New("hotad: another aggregator holds the ad's grant lease")

// opTimeout bounds one etcd call of this package.
const opTimeout = 5 * time.Second

// Etcd is the part of the etcd client a Granter uses.
type Etcd interface {
	clientv3.KV
	clientv3.Lease
}

// lease is the value of a lease key.
type lease struct {
	Node       string `json:"node"`
	Fanout     int    `json:"fanout"`
	ProposedAt int64  `json:"proposed_at"`
}

type held struct {
	id       clientv3.LeaseID
	appended bool  // the grant is in the ring history
	from     int64 // its first minute; 0 when adopted after a restart (unknown)
}

// GranterConfig configures a Granter.
type GranterConfig struct {
	Node      string        // this aggregator
	TTL       time.Duration // of the lease, kept alive while the ad is hot
	FanoutMax int           // pieces of a split, at most
}

// Granter takes, keeps and ends this aggregator's auto grants, and ends
// any auto grant whose lease is gone. Not safe for concurrent use: one
// loop drives it.
type Granter struct {
	cfg  GranterConfig
	cli  Etcd
	clk  clock.Clock
	log  *slog.Logger
	m    *Metrics
	held map[string]*held
}

// NewGranter returns a Granter.
func NewGranter(cfg GranterConfig, cli Etcd, clk clock.Clock, log *slog.Logger, m *Metrics) *Granter {
	return &Granter{cfg: cfg, cli: cli, clk: clk, log: log, m: m, held: map[string]*held{}}
}

// Held returns the ads whose lease this node holds, sorted.
func (g *Granter) Held() []string {
	out := make([]string, 0, len(g.held))
	for ad := range g.held {
		out = append(out, ad)
	}
	slices.Sort(out)
	return out
}

// Holds tells whether this node holds ad's lease.
func (g *Granter) Holds(ad string) bool { return g.held[ad] != nil }

// Adopt takes back the lease keys naming this node that are still alive
// (after a restart the lease outlives the process for up to its TTL) and
// returns their ads, so the grant is kept instead of lapsing and being
// taken again minutes later.
func (g *Granter) Adopt(ctx context.Context) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	resp, err := g.cli.Get(ctx, KeyPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read hot-ad leases: %w", err)
	}
	var ads []string
	for _, kv := range resp.Kvs {
		var l lease
		if json.Unmarshal(kv.Value, &l) != nil || l.Node != g.cfg.Node || kv.Lease == 0 {
			continue
		}
		ad := strings.TrimPrefix(string(kv.Key), KeyPrefix)
		g.held[ad] = &held{id: clientv3.LeaseID(kv.Lease), appended: true}
		ads = append(ads, ad)
	}
	return ads, nil
}

// Take creates ad's lease key (only if none exists) and appends the grant
// to the ring history, from the earliest minute a change may take effect.
// It returns the grant, or nil when the ad already has an open grant.
func (g *Granter) Take(ctx context.Context, ad string) (*ring.Grant, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*opTimeout)
	defer cancel()
	ttl := max(int64(g.cfg.TTL/time.Second), 1)
	lr, err := g.cli.Grant(ctx, ttl)
	if err != nil {
		return nil, fmt.Errorf("grant a lease for hot ad %s: %w", ad, err)
	}
	val, _ := json.Marshal(lease{Node: g.cfg.Node, Fanout: g.cfg.FanoutMax, ProposedAt: g.clk.Now().Unix()})
	resp, err := g.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(Key(ad)), "=", 0)).
		Then(clientv3.OpPut(Key(ad), string(val), clientv3.WithLease(lr.ID))).Commit()
	if err != nil || !resp.Succeeded {
		g.revoke(lr.ID)
		if err != nil {
			return nil, fmt.Errorf("create the lease key of hot ad %s: %w", ad, err)
		}
		return nil, fmt.Errorf("%w: %s", ErrTaken, Key(ad))
	}
	g.held[ad] = &held{id: lr.ID}
	var grant *ring.Grant
	_, _, err = ring.Update(ctx, g.cli, g.clk, func(h *ring.History, now time.Time) (*ring.History, error) {
		if h.OpenGrant(ad) != nil {
			return nil, ring.ErrNoChange
		}
		next, gr, err := h.Split(ad, g.cfg.FanoutMax, ring.OriginAuto, now)
		grant = gr
		return next, err
	})
	if err != nil || grant == nil {
		g.release(ad)
		if err != nil {
			return nil, fmt.Errorf("append the grant of hot ad %s: %w", ad, err)
		}
		return nil, nil
	}
	g.held[ad].appended, g.held[ad].from = true, grant.From
	g.m.Taken.Inc()
	return grant, nil
}

// Release ends ad's grant at the earliest minute a change may take effect
// (when end is set and the grant is still open) and revokes its lease.
func (g *Granter) Release(ctx context.Context, ad string, end bool) error {
	if end {
		ctx, cancel := context.WithTimeout(ctx, 3*opTimeout)
		defer cancel()
		ended := false
		_, _, err := ring.Update(ctx, g.cli, g.clk, func(h *ring.History, now time.Time) (*ring.History, error) {
			if gr := h.OpenGrant(ad); gr == nil || gr.Origin != ring.OriginAuto {
				return nil, ring.ErrNoChange
			}
			next, _, err := h.Unsplit(ad, now)
			ended = err == nil
			return next, err
		})
		if err != nil {
			return fmt.Errorf("end the grant of hot ad %s: %w", ad, err)
		}
		if ended {
			g.m.Ended.Inc()
		}
	}
	g.release(ad)
	return nil
}

func (g *Granter) release(ad string) {
	if h := g.held[ad]; h != nil {
		g.revoke(h.id)
	}
	delete(g.held, ad)
}

func (g *Granter) revoke(id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if _, err := g.cli.Revoke(ctx, id); err != nil {
		g.log.Warn("hot ad: revoke a lease (it lapses by its TTL anyway)", "err", err)
	}
}

// EndedIn tells whether h records the end of the grant this node holds
// for ad (a drain or an operator ended it): its lease is then of no use.
// A view that does not show the grant yet (the watcher has not applied the
// append) says nothing: only the grant itself, with an end, counts.
func (g *Granter) EndedIn(ad string, h *ring.History) bool {
	hd := g.held[ad]
	if hd == nil || !hd.appended || h == nil {
		return false
	}
	if hd.from == 0 { // adopted: the view was read after the restart
		return h.OpenGrant(ad) == nil
	}
	for _, gr := range h.Grants {
		if gr.AdID == ad && gr.From == hd.from && gr.Until != 0 {
			return true
		}
	}
	return false
}

// KeepAlive renews every held lease once; a lease etcd no longer knows
// (it lapsed while this node could not renew it) is dropped: its grant is
// ended by EndLapsed.
func (g *Granter) KeepAlive(ctx context.Context) {
	for ad, h := range g.held {
		kctx, cancel := context.WithTimeout(ctx, opTimeout)
		_, err := g.cli.KeepAliveOnce(kctx, h.id)
		cancel()
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			continue
		}
		if err != nil {
			g.log.Warn("hot ad: lease lost; its grant ends", "ad", ad, "err", err)
			delete(g.held, ad)
		}
	}
}

// EndLapsed ends every open auto grant of h whose lease key is gone (its
// holder cooled, or died and its TTL passed). Many nodes may race; the
// ring history's compare-and-swap lets one end it. It returns the ads it
// ended.
func (g *Granter) EndLapsed(ctx context.Context, h *ring.History) ([]string, error) {
	var ended []string
	for _, gr := range h.Grants {
		if gr.Until != 0 || gr.Origin != ring.OriginAuto || g.held[gr.AdID] != nil {
			continue
		}
		gone, err := g.keyGone(ctx, gr.AdID)
		if err != nil || !gone {
			if err != nil {
				return ended, err
			}
			continue
		}
		ad, did := gr.AdID, false
		uctx, cancel := context.WithTimeout(ctx, 3*opTimeout)
		_, _, err = ring.Update(uctx, g.cli, g.clk, func(h *ring.History, now time.Time) (*ring.History, error) {
			did = false
			if o := h.OpenGrant(ad); o == nil || o.Origin != ring.OriginAuto {
				return nil, ring.ErrNoChange
			}
			if gone, err := g.keyGone(uctx, ad); err != nil || !gone {
				if err == nil {
					err = ring.ErrNoChange
				}
				return nil, err
			}
			next, _, err := h.Unsplit(ad, now)
			did = err == nil
			return next, err
		})
		cancel()
		if err != nil {
			return ended, fmt.Errorf("end the lapsed grant of hot ad %s: %w", ad, err)
		}
		if did {
			g.m.Ended.Inc()
			ended = append(ended, ad)
		}
	}
	return ended, nil
}

func (g *Granter) keyGone(ctx context.Context, ad string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	resp, err := g.cli.Get(ctx, Key(ad), clientv3.WithCountOnly())
	if err != nil {
		return false, fmt.Errorf("read the lease key of hot ad %s: %w", ad, err)
	}
	return resp.Count == 0, nil
}

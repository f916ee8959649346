package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	clusterv1 "github.com/adclick/adclick/gen/adclick/cluster/v1"
	"github.com/adclick/adclick/pkg/aggregator"
	"github.com/adclick/adclick/pkg/clock"
	"github.com/adclick/adclick/pkg/filter"
	"github.com/adclick/adclick/pkg/gossip"
	"github.com/adclick/adclick/pkg/membership"
	"github.com/adclick/adclick/pkg/ring"
)

// Aggregator is a running aggregator node.
type Aggregator struct {
	*base
	agg     *aggregator.Aggregator
	filters *filter.Watcher
	aggs    *membership.Watcher // the other aggregators' addresses (the heir's, for a hand-over)
	conns   map[string]*grpc.ClientConn
}

// Settled tells whether everything counted for minutes due by now reached
// every reducer (aggregator.Aggregator.Settled).
func (n *Aggregator) Settled() bool { return n.agg.Settled() }

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
	if n.aggs, err = membership.Watch(n.ctx, n.etcd, membership.Aggregators, env.Log); err != nil {
		return err
	}
	if err := n.watchRing(); err != nil {
		return err
	}
	n.agg, err = aggregator.New(cfg, aggregator.Deps{Clock: env.Clock, Log: env.Log, Reg: n.srv.Registry, Filters: filters, Reducers: reducers, Ring: n.ring})
	if err != nil {
		return err
	}
	n.agg.Register(n.srv.GRPC)
	n.goRun(func(ctx context.Context) {
		if err := n.agg.Run(ctx); err != nil && ctx.Err() == nil {
			n.fail(fmt.Errorf("aggregator %s stopped counting: %w", c.NodeID, err))
		}
	})
	n.srv.Serve()
	if err := n.startGossip(gossip.RoleAggregator, c.NodeID, c.advertise(n.srv), n.agg.Incarnation(), rate(n.agg.Accepted)); err != nil {
		return err
	}
	if err := n.register(membership.Aggregators, membership.Member{
		ID: c.NodeID, Addr: c.advertise(n.srv), HTTPAddr: n.srv.HTTPAddr(),
		Incarnation: n.agg.Incarnation(), FirstMinute: n.agg.FirstMinute(),
	}); err != nil {
		return err
	}
	if err := n.joinRing(c.InitialAggregators); err != nil {
		return err
	}
	n.goRun(n.drainLoop)
	n.goRun(func(ctx context.Context) { n.hotLoop(ctx, cfg.WithDefaults()) })
	return nil
}

// joinRing puts this aggregator on the ring: it founds the ring history
// (with the initial aggregators) when there is none, or joins at the
// earliest minute a change may take effect when it is not in the newest
// era and not finishing a drain. A restart of a member changes nothing.
func (n *Aggregator) joinRing(initial []string) error {
	id := n.common.NodeID
	ctx, cancel := context.WithTimeout(n.ctx, 30*time.Second)
	defer cancel()
	_, _, err := ring.Update(ctx, n.etcd, n.env.Clock, func(h *ring.History, now time.Time) (*ring.History, error) {
		if h == nil {
			founders := append(slices.Clone([]string(initial)), id)
			n.env.Log.Info("founding the ring history", "aggregators", founders)
			ttl := n.common.RingViewTTL
			if ttl == 0 {
				ttl = ring.DefaultViewTTL
			}
			return ring.Founding(founders, now, ttl), nil
		}
		if slices.Contains(h.Latest().Aggregators, id) || h.PendingDrain(id) != nil {
			return nil, ring.ErrNoChange
		}
		next, from, err := h.Join(id, now)
		if err == nil {
			n.env.Log.Info("joining the ring", "owns_from", clock.MinuteTime(from).Format(time.RFC3339),
				"in", clock.MinuteTime(from).Sub(now).Round(time.Second).String())
		}
		return next, err
	})
	if err != nil {
		return fmt.Errorf("join the ring: %w", err)
	}
	return n.ring.Refresh(ctx)
}

// drainLoop hands over once a drain of this aggregator is recorded and
// its minutes before the cut-over are closed; it resumes after a restart.
func (n *Aggregator) drainLoop(ctx context.Context) {
	changes := n.ring.Subscribe()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var lastErr string
	for {
		if d := n.ring.Current().History().PendingDrain(n.common.NodeID); d != nil {
			if err := n.handOver(ctx, *d); err != nil && ctx.Err() == nil && err.Error() != lastErr {
				lastErr = err.Error()
				n.env.Log.Warn("drain: hand-over not done yet; retrying", "heir", d.Heir, "err", err)
			}
		} else {
			n.agg.Thaw() // the view shows the hand-over: old minutes route to the heir now
		}
		select {
		case <-ctx.Done():
			return
		case <-changes:
		case <-tick.C:
		}
	}
}

// handOver runs the steps of a drain's hand-over (see package aggregator):
// deliver, freeze, deliver the last corrections, copy the click ids to the
// heir, record the hand-over in the ring history. Every step may be
// repeated after a failure or a restart.
func (n *Aggregator) handOver(ctx context.Context, d ring.Drain) error {
	if n.env.Clock.Now().Before(clock.MinuteTime(d.Cutover)) {
		return nil // still owns its minutes
	}
	if waits := n.ring.Current().History().HeirOfPending(n.common.NodeID); len(waits) > 0 {
		return fmt.Errorf("heir of %v, which have not handed over yet: waiting for them first", waits)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_ = n.agg.WaitDelivered(wctx) // most partials leave before the freeze
	cancel()
	if err := n.agg.Freeze(d.Cutover); err != nil {
		if errors.Is(err, aggregator.ErrNotClosed) {
			return nil
		}
		return err
	}
	wctx, cancel = context.WithTimeout(ctx, 30*time.Second)
	err := n.agg.WaitDelivered(wctx)
	cancel()
	if err != nil {
		return fmt.Errorf("deliver every partial before handing over: %w", err)
	}
	heir, err := n.client(d.Heir)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	ids, err := n.agg.SendIDs(sctx, heir, d.Cutover)
	cancel()
	if err != nil {
		return fmt.Errorf("hand click ids over to %s: %w", d.Heir, err)
	}
	uctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, _, err = ring.Update(uctx, n.etcd, n.env.Clock, func(h *ring.History, _ time.Time) (*ring.History, error) {
		if h.PendingDrain(n.common.NodeID) == nil {
			return nil, ring.ErrNoChange
		}
		return h.HandOver(n.common.NodeID, false)
	})
	if err != nil {
		return fmt.Errorf("record the hand-over: %w", err)
	}
	n.env.Log.Info("drained: every partial delivered and click ids handed over", "heir", d.Heir, "click_ids", ids,
		"cutover", clock.MinuteTime(d.Cutover).Format(time.RFC3339))
	return n.ring.Refresh(uctx)
}

// client returns a client of aggregator id, by its registered address.
func (n *Aggregator) client(id string) (clusterv1.AggregatorServiceClient, error) {
	for _, m := range n.aggs.Members() {
		if m.ID != id {
			continue
		}
		if n.conns == nil {
			n.conns = map[string]*grpc.ClientConn{}
		}
		conn, ok := n.conns[m.Addr]
		if !ok {
			var err error
			if conn, err = grpc.NewClient(m.Addr, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
				return nil, err
			}
			n.conns[m.Addr] = conn
		}
		return clusterv1.NewAggregatorServiceClient(conn), nil
	}
	return nil, fmt.Errorf("heir %s has no registration", id)
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
	for _, c := range n.conns {
		_ = c.Close()
	}
	if cerr := n.agg.Close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("aggregator %s: close log and state: %w", n.common.NodeID, cerr))
	}
	return err
}

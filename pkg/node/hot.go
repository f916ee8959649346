package node

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/adclick/adclick/pkg/aggregator"
	"github.com/adclick/adclick/pkg/clock"
	"github.com/adclick/adclick/pkg/hotad"
	"github.com/adclick/adclick/pkg/ring"
)

// hotLoop runs this aggregator's side of hot-ad splitting, once a second:
// it reads the detector's last window, decides which ads are hot
// (hysteresis in hotad.Tracker), takes a grant for a hot ad it owns and
// that has none, keeps the leases of its grants alive while their ads stay
// hot, ends them when they cool (or drops them once the grant was ended by
// a drain or an operator), and ends any auto grant whose lease lapsed.
func (n *Aggregator) hotLoop(ctx context.Context, cfg aggregator.Config) {
	self, log := n.common.NodeID, n.env.Log.With("component", "hotad")
	m := hotad.NewMetrics(n.srv.Registry)
	g := hotad.NewGranter(hotad.GranterConfig{Node: self, TTL: cfg.HotGrantTTL, FanoutMax: cfg.HotFanoutMax}, n.etcd, n.env.Clock, log, m)
	tr := hotad.NewTracker(hotad.Params{Share: cfg.HotShare, MinRate: cfg.HotMinRate})
	if ads, err := g.Adopt(ctx); err != nil {
		log.Warn("hot ads: cannot read the leases held before a restart; they lapse and their grants end", "err", err)
	} else {
		for _, ad := range ads {
			tr.MarkHot(ad)
			log.Info("hot ad: kept the grant held before the restart", "ad", ad)
		}
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var renewed, swept time.Time
	failed := map[string]string{}   // ad -> last error taking its grant, logged once
	tried := map[string]time.Time{} // ad -> last attempt to take its grant
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := n.env.Clock.Now()
		v := n.ring.Current()
		h, minute := v.History(), clock.Minute(now)
		w, pieces := n.agg.HotWindow(now)
		m.PieceClicks.Add(float64(pieces))
		hot := tr.Update(w, func(ad string) int {
			if gr := h.GrantAt(ad, minute); gr != nil && slices.Contains(gr.Nodes, self) {
				return gr.Fanout
			}
			return 1
		})
		mine := h.Latest() != nil && slices.Contains(h.Latest().Aggregators, self) && n.ring.Fresh(now)
		for _, ad := range hot {
			if !mine || g.Holds(ad) || h.OpenGrant(ad) != nil || v.IndexAt(ad, minute) != v.Index(self) {
				continue
			}
			// At most one attempt per lease TTL: a grant that keeps ending
			// (or failing) must not grow the ring history every second.
			if now.Sub(tried[ad]) < cfg.HotGrantTTL {
				continue
			}
			tried[ad] = now
			gr, err := g.Take(ctx, ad)
			switch {
			case err != nil:
				if msg := err.Error(); failed[ad] != msg && ctx.Err() == nil {
					failed[ad] = msg
					level := log.Warn
					if errors.Is(err, hotad.ErrTaken) || errors.Is(err, ring.ErrFanoutSmall) {
						level = log.Info
					}
					level("hot ad: no grant taken", "ad", ad, "err", err)
				}
			case gr != nil:
				delete(failed, ad)
				log.Info("hot ad: grant taken", "ad", ad, "nodes", gr.Nodes,
					"effective_from", clock.MinuteTime(gr.From).Format(time.RFC3339), "in", clock.MinuteTime(gr.From).Sub(now).Round(time.Second).String())
			}
		}
		for _, ad := range g.Held() {
			switch {
			case !tr.IsHot(ad):
				if err := g.Release(ctx, ad, true); err != nil && ctx.Err() == nil {
					log.Warn("hot ad: ending the grant of a cooled ad failed; its lease lapses", "ad", ad, "err", err)
					continue
				}
				log.Info("hot ad cooled: grant ends ahead", "ad", ad)
			case g.EndedIn(ad, h):
				_ = g.Release(ctx, ad, false) // ended by a drain or an operator
			}
		}
		if now.Sub(renewed) >= cfg.HotGrantTTL/3 {
			g.KeepAlive(ctx)
			renewed = now
		}
		if now.Sub(swept) >= 2*time.Second {
			swept = now
			if ended, err := g.EndLapsed(ctx, h); err != nil && ctx.Err() == nil {
				log.Warn("hot ads: ending lapsed grants failed; retrying", "err", err)
			} else if len(ended) > 0 {
				log.Info("hot ads: grants whose lease lapsed end ahead", "ads", ended)
			}
		}
		for ad, at := range tried {
			if now.Sub(at) > time.Hour {
				delete(tried, ad)
			}
		}
		active := 0
		for _, gr := range h.Grants {
			if gr.Until == 0 || gr.Until > minute {
				active++
			}
		}
		m.Active.Set(float64(active))
	}
}

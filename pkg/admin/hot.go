package admin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/adclick/adclick/pkg/clock"
	"github.com/adclick/adclick/pkg/ring"
)

// hotAds lists the grants of h that are open or end at a future minute
// (at now) and split at least one minute, as `status` shows them.
func hotAds(h *ring.History, now time.Time) []HotAd {
	out := []HotAd{}
	minute := clock.Minute(now)
	for _, g := range h.Grants {
		if g.Until != 0 && (g.Until <= minute || g.Until <= g.From) {
			continue // ended, or ended before it took effect
		}
		out = append(out, hotAd(g))
	}
	return out
}

func hotAd(g ring.Grant) HotAd {
	ad := HotAd{AdID: g.AdID, Fanout: g.Fanout, Nodes: g.Nodes, EffectiveFrom: clock.MinuteTime(g.From), Origin: g.Origin}
	if g.Until != 0 {
		ad.Until = timePtr(g.Until)
	}
	return ad
}

// Split records an operator's grant splitting ad over up to fanout
// aggregators from the earliest minute a change may take effect. It has no
// lease: it ends only by Unsplit.
func (a *Admin) Split(ctx context.Context, ad string, fanout int) (*HotAd, error) {
	if ad == "" {
		return nil, errors.New("split: the ad id is empty")
	}
	if fanout < 2 {
		return nil, fmt.Errorf("split: --fanout must be at least 2, got %d", fanout)
	}
	var out HotAd
	_, _, err := ring.Update(ctx, a.cli, a.clk, func(h *ring.History, now time.Time) (*ring.History, error) {
		if h == nil {
			return nil, errors.New("no ring history in etcd yet: start an aggregator first")
		}
		next, g, err := h.Split(ad, fanout, ring.OriginOperator, now)
		if err != nil {
			if errors.Is(err, ring.ErrGrantOpen) {
				return nil, fmt.Errorf("%w; end it first with adclick admin unsplit %s", err, ad)
			}
			return nil, err
		}
		out = hotAd(*g)
		return next, nil
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// Unsplit ends ad's open grant (an operator's or an aggregator's) at the
// earliest minute a change may take effect. An auto grant whose ad is still
// hot may be taken again by its aggregator afterwards.
func (a *Admin) Unsplit(ctx context.Context, ad string) (*HotAd, error) {
	var out HotAd
	_, _, err := ring.Update(ctx, a.cli, a.clk, func(h *ring.History, now time.Time) (*ring.History, error) {
		if h == nil {
			return nil, errors.New("no ring history in etcd yet: nothing is split")
		}
		next, _, err := h.Unsplit(ad, now)
		if err != nil {
			return nil, fmt.Errorf("%w (adclick admin status lists the grants)", err)
		}
		out = hotAd(next.Grants[grantIndex(next, ad)])
		return next, nil
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// grantIndex is the index of ad's last grant in h.
func grantIndex(h *ring.History, ad string) int {
	for i := len(h.Grants) - 1; i >= 0; i-- {
		if h.Grants[i].AdID == ad {
			return i
		}
	}
	return -1
}

// splitOwners lists the aggregators of ad's pieces in minute, in the
// grant's order (a click goes to Nodes[xxhash(click_id) % k]); none when
// the ad is not split then.
func splitOwners(h *ring.History, ad string, minute int64) []string {
	g := h.GrantAt(ad, minute)
	if g == nil {
		return []string{}
	}
	return g.Nodes
}

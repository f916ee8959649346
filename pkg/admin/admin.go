package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/adclick/adclick/pkg/clock"
	"github.com/adclick/adclick/pkg/gossip"
	"github.com/adclick/adclick/pkg/membership"
	"github.com/adclick/adclick/pkg/ring"
)

// Admin operates one cluster through its etcd.
type Admin struct {
	cli  *clientv3.Client
	clk  clock.Clock
	http *http.Client
}

// New returns an Admin using cli; clk defaults to the wall clock.
func New(cli *clientv3.Client, clk clock.Clock) *Admin {
	if clk == nil {
		clk = clock.Real{}
	}
	return &Admin{cli: cli, clk: clk, http: &http.Client{Timeout: 2 * time.Second}}
}

// Aggregator is one aggregator in Status.
type Aggregator struct {
	ID           string     `json:"id"`
	Addr         string     `json:"addr"`
	State        string     `json:"state"`
	OwnsFrom     *time.Time `json:"owns_from"`  // nil: since the ring was founded
	OwnsUntil    *time.Time `json:"owns_until"` // the cut-over of a drain
	ClicksPerSec float64    `json:"clicks_per_sec"`
	Alive        bool       `json:"alive"`
	Registered   bool       `json:"registered"` // false once removed
	AppliedRing  int64      `json:"applied_ring"`
	Heir         string     `json:"heir,omitempty"`
}

// Node is a reducer or router in Status.
type Node struct {
	ID          string `json:"id"`
	Addr        string `json:"addr"`
	Alive       bool   `json:"alive"`
	AppliedRing int64  `json:"applied_ring,omitempty"`
}

// Era is one ring version in Status.
type Era struct {
	From        *time.Time `json:"from"` // nil for the founding era
	Aggregators []string   `json:"aggregators"`
	Cause       string     `json:"cause"`
}

// HotAd is a hot-ad grant in Status: open, or ending at a future minute.
type HotAd struct {
	AdID          string     `json:"ad_id"`
	Fanout        int        `json:"fanout"`
	Nodes         []string   `json:"nodes"`
	EffectiveFrom time.Time  `json:"effective_from"`
	Until         *time.Time `json:"until"`
	Origin        string     `json:"origin"`
}

// Status is `adclick admin status --json`.
type Status struct {
	Aggregators  []Aggregator `json:"aggregators"`
	Reducers     []Node       `json:"reducers"`
	Routers      []Node       `json:"routers"`
	Eras         []Era        `json:"eras"`
	HotAds       []HotAd      `json:"hot_ads"`
	RingRevision int64        `json:"ring_revision"`
	// Liveness says where alive comes from: "gossip" (a node's memberlist
	// view) or "etcd" (registration leases) when no node could be asked.
	Liveness string `json:"liveness"`
}

// snapshot is the cluster's state in etcd at one revision.
type snapshot struct {
	hist     *ring.History
	rev      int64
	aggs     []membership.Member
	reds     []membership.Member
	routers  []membership.Member
	liveAggs map[string]membership.Member
}

func (a *Admin) load(ctx context.Context) (*snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s := &snapshot{liveAggs: map[string]membership.Member{}}
	var err error
	if s.hist, s.rev, err = ring.LoadHistory(ctx, a.cli); err != nil {
		return nil, err
	}
	get := func(prefix string) (map[string][]byte, error) {
		resp, err := a.cli.Get(ctx, prefix, clientv3.WithPrefix())
		if err != nil {
			return nil, fmt.Errorf("read %s from etcd: %w", prefix, err)
		}
		out := map[string][]byte{}
		for _, kv := range resp.Kvs {
			out[string(kv.Key)] = kv.Value
		}
		return out, nil
	}
	for _, k := range []membership.Kind{membership.Aggregators, membership.Reducers} {
		recs, err := get(k.Prefix())
		if err != nil {
			return nil, err
		}
		live, err := get(k.LivePrefix())
		if err != nil {
			return nil, err
		}
		ms, _ := membership.ParseMembers(k, recs, live)
		if k == membership.Aggregators {
			s.aggs = ms
			for _, m := range membership.ParseLive(k, live) {
				s.liveAggs[m.ID] = m
			}
		} else {
			s.reds = ms
		}
	}
	live, err := get(membership.Routers.LivePrefix())
	if err != nil {
		return nil, err
	}
	s.routers = membership.ParseLive(membership.Routers, live)
	return s, nil
}

// gossipView asks live nodes, routers first, for their gossip view.
func (a *Admin) gossipView(ctx context.Context, s *snapshot) ([]gossip.Peer, bool) {
	var addrs []string
	for _, group := range [][]membership.Member{s.routers, s.reds, s.aggs} {
		for _, m := range group {
			if m.Live && m.HTTPAddr != "" {
				addrs = append(addrs, m.HTTPAddr)
			}
		}
	}
	for _, addr := range addrs {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/gossip", nil)
		if err != nil {
			continue
		}
		resp, err := a.http.Do(req)
		if err != nil {
			continue
		}
		var peers []gossip.Peer
		err = json.NewDecoder(resp.Body).Decode(&peers)
		resp.Body.Close()
		if err == nil && resp.StatusCode == http.StatusOK {
			return peers, true
		}
	}
	return nil, false
}

// Status reports every node, the eras and the grants.
func (a *Admin) Status(ctx context.Context) (*Status, error) {
	s, err := a.load(ctx)
	if err != nil {
		return nil, err
	}
	peers, fromGossip := a.gossipView(ctx, s)
	peer := map[string]gossip.Peer{}
	for _, p := range peers {
		peer[p.Role+"/"+p.ID] = p
	}
	alive := func(role string, m membership.Member) bool {
		if !fromGossip {
			return m.Live
		}
		p, ok := peer[role+"/"+m.ID]
		return ok && p.Alive
	}
	now := a.clk.Now()
	out := &Status{RingRevision: s.rev, Liveness: "etcd", HotAds: []HotAd{}, Eras: []Era{}}
	if fromGossip {
		out.Liveness = "gossip"
	}
	h := s.hist
	if h == nil {
		h = &ring.History{}
	}
	records := map[string]membership.Member{}
	for _, m := range s.aggs {
		records[m.ID] = m
	}
	ids := ring.NewVersions(h).IDs()
	for _, m := range s.aggs {
		if !slices.Contains(ids, m.ID) {
			ids = append(ids, m.ID) // registered, not yet on the ring
		}
	}
	sort.Strings(ids)
	for _, id := range ids {
		m, registered := records[id]
		ag := Aggregator{ID: id, Addr: m.Addr, State: h.State(id, now), Registered: registered, Alive: registered && alive(gossip.RoleAggregator, m)}
		if lm, ok := s.liveAggs[id]; ok {
			ag.AppliedRing = lm.AppliedRing
		}
		if p, ok := peer[gossip.RoleAggregator+"/"+id]; ok && ag.Alive {
			ag.ClicksPerSec = p.ClicksPerSec
		}
		if spans := h.Spans(id); len(spans) > 0 {
			last := spans[len(spans)-1]
			if last.From != 0 {
				ag.OwnsFrom = timePtr(last.From)
			}
			if last.Until != 0 {
				ag.OwnsUntil = timePtr(last.Until)
			}
		}
		for _, d := range h.Drains {
			if d.Node == id {
				ag.Heir = d.Heir
			}
		}
		out.Aggregators = append(out.Aggregators, ag)
	}
	for _, m := range s.reds {
		out.Reducers = append(out.Reducers, Node{ID: m.ID, Addr: m.Addr, Alive: alive(gossip.RoleReducer, m)})
	}
	for _, m := range s.routers {
		out.Routers = append(out.Routers, Node{ID: m.ID, Addr: m.Addr, Alive: alive(gossip.RoleRouter, m), AppliedRing: m.AppliedRing})
	}
	for _, e := range h.Eras {
		era := Era{Aggregators: e.Aggregators, Cause: e.Cause}
		if e.From != 0 {
			era.From = timePtr(e.From)
		}
		out.Eras = append(out.Eras, era)
	}
	out.HotAds = hotAds(h, now)
	return out, nil
}

func timePtr(unix int64) *time.Time {
	t := time.Unix(unix, 0).UTC()
	return &t
}

// Owner tells who owns ad in the minute of at.
type Owner struct {
	AdID       string     `json:"ad_id"`
	Minute     time.Time  `json:"minute"`
	Aggregator string     `json:"aggregator"`
	EraFrom    *time.Time `json:"era_from"`
	HandedOver bool       `json:"handed_over"` // the era's owner drained; its heir owns late clicks
	Split      []string   `json:"split"`       // the aggregators of the ad's pieces when it is split in that minute (hot ad)
}

// Owner answers which aggregator owns ad for the minute of at.
func (a *Admin) Owner(ctx context.Context, ad string, at time.Time) (*Owner, error) {
	h, _, err := ring.LoadHistory(ctx, a.cli)
	if err != nil {
		return nil, err
	}
	if h == nil {
		return nil, errors.New("no ring history in etcd yet: start an aggregator first")
	}
	m := clock.Minute(at)
	v := ring.NewVersions(h)
	o := v.IndexAt(ad, m)
	if o < 0 {
		return nil, fmt.Errorf("no era covers %s", clock.MinuteTime(m).Format(time.RFC3339))
	}
	out := &Owner{AdID: ad, Minute: clock.MinuteTime(m), Aggregator: v.IDs()[o], Split: splitOwners(h, ad, m)}
	for k := len(h.Eras) - 1; k >= 0; k-- {
		if e := h.Eras[k]; k == 0 || e.From <= m {
			if e.From != 0 {
				out.EraFrom = timePtr(e.From)
			}
			eraOwner, _ := ring.New(e.Aggregators).Owner(ad)
			out.HandedOver = eraOwner != out.Aggregator
			break
		}
	}
	return out, nil
}

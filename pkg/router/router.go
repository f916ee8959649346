package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
	"github.com/adclick/adclick/pkg/clock"
	"github.com/adclick/adclick/pkg/filter"
	"github.com/adclick/adclick/pkg/membership"
	"github.com/adclick/adclick/pkg/ring"
)

// MemberSource tells the registered nodes of one kind (membership.Watcher).
// Implementations are safe for concurrent use.
type MemberSource interface {
	// Members returns the nodes sorted by ID; the caller does not modify it.
	Members() []membership.Member
	// Subscribe returns a channel that receives a value after changes.
	Subscribe() <-chan struct{}
}

// RingSource is the router's view of the ring history (ring.Watcher).
// Safe for concurrent use.
type RingSource interface {
	// Current returns the routing of the newest history known.
	Current() *ring.Versions
	// Subscribe returns a channel that receives a value after changes.
	Subscribe() <-chan struct{}
	// Refresh reads the history from etcd now.
	Refresh(ctx context.Context) error
}

// Liveness tells what failure detection (gossip) says of a node: alive, and
// whether it knows the node at all. Safe for concurrent use; must be cheap.
type Liveness interface {
	Alive(role, id string) (alive, known bool)
}

// FilterSource tells the filters in effect (filter.Watcher). Safe for
// concurrent use.
type FilterSource interface {
	Current() *filter.Set
}

// FilterStore creates, lists and deletes filters (filter.Store).
type FilterStore interface {
	Create(ctx context.Context, f filter.Filter) (filter.Filter, error)
	List(ctx context.Context) ([]filter.Filter, error)
	Delete(ctx context.Context, id int64) error
}

// Deps are the router's collaborators. Clock defaults to the wall clock, Log
// to slog.Default(); a nil Reg registers no metrics. The rest are required.
type Deps struct {
	Clock       clock.Clock
	Log         *slog.Logger
	Reg         prometheus.Registerer
	Aggregators MemberSource
	Reducers    MemberSource
	Ring        RingSource
	// Liveness, when set, lets the router answer "retry" at once for the
	// events of an aggregator gossip says is dead, instead of after a
	// forward timeout.
	Liveness    Liveness
	Filters     FilterSource
	FilterStore FilterStore
}

// Router serves adclickv1.IngestService, QueryService and FilterService.
// Safe for concurrent use: request handlers read the routing table through
// an atomic pointer; only Run replaces it.
type Router struct {
	adclickv1.UnimplementedIngestServiceServer
	adclickv1.UnimplementedQueryServiceServer
	adclickv1.UnimplementedFilterServiceServer

	cfg     Config
	clock   clock.Clock
	log     *slog.Logger
	m       *metrics
	aggs    MemberSource
	reds    MemberSource
	ringSrc RingSource
	alive   Liveness
	filters FilterSource
	store   FilterStore

	aggChanges  <-chan struct{}
	redChanges  <-chan struct{}
	ringChanges <-chan struct{}
	refreshMu   sync.Mutex // one ring refresh at a time

	table    atomic.Pointer[table]
	tableMu  sync.Mutex // serializes rebuilds
	aggConns *connPool
	redConns *connPool
	nextRed  atomic.Uint64 // rotates the first reducer asked
	inflight atomic.Int64  // events being forwarded, bounded by cfg.MaxInflight
}

// table is one immutable routing snapshot: the ring history's routing and,
// by its aggregator index, the member record and client of each aggregator
// (or why there is none).
type table struct {
	ring    *ring.Versions
	members []membership.Member
	conns   []grpc.ClientConnInterface
	errs    []error
}

// New returns a router following deps.Aggregators; call Run to keep
// following changes, and Close when done.
func New(cfg Config, deps Deps) (*Router, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("router config: %w", err)
	}
	if deps.Aggregators == nil || deps.Reducers == nil || deps.Ring == nil || deps.Filters == nil || deps.FilterStore == nil {
		return nil, errors.New("router: Deps.Aggregators, Reducers, Ring, Filters and FilterStore are required")
	}
	if deps.Clock == nil {
		deps.Clock = clock.Real{}
	}
	if deps.Log == nil {
		deps.Log = slog.Default()
	}
	r := &Router{
		cfg:      cfg,
		clock:    deps.Clock,
		log:      deps.Log,
		m:        newMetrics(deps.Reg),
		aggs:     deps.Aggregators,
		reds:     deps.Reducers,
		ringSrc:  deps.Ring,
		alive:    deps.Liveness,
		filters:  deps.Filters,
		store:    deps.FilterStore,
		aggConns: newConnPool(),
		redConns: newConnPool(),
	}
	// Subscribe before the first read so no change falls in between.
	r.aggChanges = r.aggs.Subscribe()
	r.redChanges = r.reds.Subscribe()
	r.ringChanges = r.ringSrc.Subscribe()
	r.rebuild()
	return r, nil
}

// Register registers the three public services on s. IngestService takes
// its requests in their encoding (IngestFrame): clicks are read in place
// and forwarded as the client's bytes.
func (r *Router) Register(s grpc.ServiceRegistrar) {
	s.RegisterService(ingestServiceDesc(), r)
	adclickv1.RegisterQueryServiceServer(s, r)
	adclickv1.RegisterFilterServiceServer(s, r)
}

// Run follows membership changes, rebuilding the ring when aggregators
// change and closing connections to departed reducers, until ctx is done.
func (r *Router) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.aggChanges:
			r.rebuild()
		case <-r.ringChanges:
			r.rebuild()
		case <-r.redChanges:
			r.pruneReducers()
		}
	}
}

// rebuild installs a routing table for the current ring history and
// aggregator records, and closes connections to addresses no aggregator has
// any more. Requests still using the old table on such a connection fail
// and their events are answered "retry".
func (r *Router) rebuild() {
	r.tableMu.Lock()
	defer r.tableMu.Unlock()
	rg := r.ringSrc.Current()
	records := map[string]membership.Member{}
	for _, m := range r.aggs.Members() {
		records[m.ID] = m
	}
	ids := rg.IDs()
	t := &table{
		ring:    rg,
		members: make([]membership.Member, len(ids)),
		conns:   make([]grpc.ClientConnInterface, len(ids)),
		errs:    make([]error, len(ids)),
	}
	keep := make(map[string]bool, len(ids))
	for i, id := range ids {
		m, ok := records[id]
		if !ok {
			t.members[i] = membership.Member{ID: id}
			t.errs[i] = status.Errorf(codes.Unavailable, "aggregator %s is in the ring history but has no registration (removed?)", id)
			continue
		}
		t.members[i] = m
		keep[m.Addr] = true
		conn, err := r.aggConns.get(m.Addr)
		if err != nil {
			t.errs[i] = err
			continue
		}
		t.conns[i] = conn
	}
	old := r.table.Swap(t)
	r.aggConns.retain(keep)
	r.m.ringMembers.Set(float64(len(ids)))
	if old == nil || old.ring != rg || !sameMembers(old.members, t.members) {
		r.log.Info("routing table rebuilt", "aggregators", memberIDs(t.members), "eras", len(rg.History().Eras))
	}
}

// refreshRing re-reads the ring history from etcd (after an aggregator
// answered NOT_OWNER) and rebuilds the table if it changed. Concurrent
// callers share one read.
func (r *Router) refreshRing(ctx context.Context, seen *table) *table {
	r.refreshMu.Lock()
	defer r.refreshMu.Unlock()
	if t := r.table.Load(); t != seen {
		return t // someone refreshed meanwhile
	}
	if err := r.ringSrc.Refresh(ctx); err != nil {
		r.log.Warn("cannot refresh the ring history after a NOT_OWNER answer", "err", err)
	}
	if r.ringSrc.Current() != seen.ring {
		r.rebuild()
	}
	return r.table.Load()
}

func (r *Router) pruneReducers() {
	keep := map[string]bool{}
	for _, m := range r.reds.Members() {
		keep[m.Addr] = true
	}
	r.redConns.retain(keep)
}

// Close closes every client connection. Requests in flight fail.
func (r *Router) Close() error {
	return errors.Join(r.aggConns.close(), r.redConns.close())
}

func sameMembers(a, b []membership.Member) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func memberIDs(ms []membership.Member) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.ID + "@" + m.Addr
	}
	return out
}

// The etcd-backed implementations satisfy the interfaces.
var (
	_ MemberSource = (*membership.Watcher)(nil)
	_ FilterSource = (*filter.Watcher)(nil)
	_ RingSource   = (*ring.Watcher)(nil)
	_ FilterStore  = (*filter.Store)(nil)

	_ adclickv1.IngestServiceServer = (*Router)(nil)
	_ adclickv1.QueryServiceServer  = (*Router)(nil)
	_ adclickv1.FilterServiceServer = (*Router)(nil)
)

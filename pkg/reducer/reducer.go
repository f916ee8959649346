package reducer

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"sync"

	clusterv1 "github.com/adclick/adclick/gen/adclick/cluster/v1"
	"github.com/adclick/adclick/pkg/clock"
	"github.com/adclick/adclick/pkg/membership"
	"github.com/adclick/adclick/pkg/ring"
	"github.com/adclick/adclick/pkg/store"
	"github.com/adclick/adclick/pkg/topn"
	"github.com/prometheus/client_golang/prometheus"
)

// MemberSource lists the registered aggregators. Safe for concurrent use.
type MemberSource interface {
	Members() []membership.Member
}

// RingSource tells the ring history (ring.Watcher): which aggregators
// owned which minutes. Safe for concurrent use.
type RingSource interface {
	Current() *ring.Versions
}

// Deps are the reducer's collaborators.
type Deps struct {
	Clock       clock.Clock           // defaults to clock.Real
	Log         *slog.Logger          // defaults to slog.Default()
	Reg         prometheus.Registerer // defaults to a private registry
	Aggregators MemberSource          // required: incarnations and first minutes, for completeness
	Ring        RingSource            // required: who owned each minute, for completeness
}

// Reducer merges partials and answers queries. It implements
// clusterv1.ReducerServiceServer. Safe for concurrent use: Apply calls are
// serialized; queries run concurrently with each other and wait only for
// the in-memory part of an Apply.
type Reducer struct {
	clusterv1.UnimplementedReducerServiceServer

	cfg  Config
	clk  clock.Clock
	log  *slog.Logger
	aggs MemberSource
	ring RingSource
	m    *metrics

	// applyMu serializes Apply: the stored meta and memory only change
	// under it, so the high-water check and the write cannot interleave.
	applyMu sync.Mutex

	// dbMu guards the Pebble handle's lifetime: readers hold it shared,
	// Close exclusively.
	dbMu   sync.RWMutex
	db     *store.DB
	closed bool

	// mu guards idx, meta and floor: Apply updates them exclusively,
	// queries read them shared.
	mu    sync.RWMutex
	idx   *topn.Index
	meta  map[string]store.AggMeta
	floor int64 // every minute >= floor is in idx exactly as in Pebble
}

// Open opens the reducer's store in cfg.DataDir and loads the retained
// minutes into memory.
func Open(cfg Config, deps Deps) (*Reducer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("reducer: %w", err)
	}
	if deps.Aggregators == nil || deps.Ring == nil {
		return nil, errors.New("reducer: Deps.Aggregators and Deps.Ring are required")
	}
	if deps.Clock == nil {
		deps.Clock = clock.Real{}
	}
	if deps.Log == nil {
		deps.Log = slog.Default()
	}
	if deps.Reg == nil {
		deps.Reg = prometheus.NewRegistry()
	}
	// Which node this is, the caller's logger says (node.Main, the dev
	// cluster): adding it here again repeated the key on every line.
	log := deps.Log.With("component", "reducer")
	db, err := store.Open(filepath.Join(cfg.DataDir, "pebble"), deps.Log)
	if err != nil {
		return nil, fmt.Errorf("reducer: %w", err)
	}
	r := &Reducer{
		cfg: cfg, clk: deps.Clock, log: log, aggs: deps.Aggregators, ring: deps.Ring, m: newMetrics(deps.Reg),
		db: db, idx: topn.New(),
	}
	if err := r.load(); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("reducer: load %s: %w", cfg.DataDir, err)
	}
	return r, nil
}

// load reads the aggregator metas and the retained minutes, within
// --retain-bytes as it goes: a store holding more than fits never holds
// more than that (plus a minute) in memory, even while loading.
func (r *Reducer) load() error {
	meta, err := r.db.AggMetas()
	if err != nil {
		return err
	}
	r.meta = meta
	r.floor = r.floorAt()
	err = r.db.ScanMinutes(-1, r.floor, math.MaxInt64, func(filter, minute int64, ad []byte, n int64) error {
		if minute < r.floor {
			return nil // the byte bound raised the floor past it meanwhile
		}
		r.idx.Add(filter, minute, string(ad), n)
		r.fitLocked()
		return nil
	})
	if err != nil {
		return err
	}
	r.updateGauges()
	r.log.Info("reducer state loaded", "aggregators", len(meta), "memory_floor", clock.MinuteTime(r.floor),
		"memory_minutes", r.idx.Minutes(), "memory_entries", r.idx.Entries())
	return nil
}

// floorAt is the first minute to keep in memory now by --retain-minutes.
func (r *Reducer) floorAt() int64 {
	return clock.Minute(r.clk.Now()) - int64(r.cfg.RetainMinutes)*60
}

// advanceLocked drops minutes that fell out of the retention. Caller holds mu.
func (r *Reducer) advanceLocked() {
	if f := r.floorAt(); f > r.floor {
		r.idx.DropBefore(f)
		r.floor = f
	}
}

// fitLocked keeps the counts in memory within --retain-bytes: while they
// take more, the oldest minute held leaves memory (the floor moves past
// it; Pebble has it all). The current minute and later ones stay, even
// over the bound: without them every query would go to Pebble. Caller
// holds mu (or is load, before anyone else sees r).
func (r *Reducer) fitLocked() {
	for r.idx.CountBytes() > r.cfg.RetainBytes {
		oldest, ok := r.idx.OldestMinute()
		if !ok || oldest >= clock.Minute(r.clk.Now()) {
			return
		}
		r.idx.DropBefore(oldest + 60)
		r.floor = max(r.floor, oldest+60)
		r.m.minutesEvicted.Inc()
	}
}

func (r *Reducer) updateGauges() {
	r.m.memoryMinutes.Set(float64(r.idx.Minutes()))
	r.m.memoryEntries.Set(float64(r.idx.Entries()))
	r.m.memoryBytes.WithLabelValues("counts").Set(float64(r.idx.CountBytes()))
	r.m.memoryBytes.WithLabelValues("ads").Set(float64(r.idx.AdBytes()))
	r.m.aggregatorsKnown.Set(float64(len(r.meta)))
}

// Close waits for a running Apply, then flushes and closes Pebble. Calls
// after Close answer UNAVAILABLE.
func (r *Reducer) Close() error {
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	r.dbMu.Lock()
	defer r.dbMu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	return r.db.Close()
}

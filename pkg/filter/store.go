package filter

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/adclick/adclick/pkg/clock"
	"github.com/adclick/adclick/pkg/etcdkv"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrNotFound is returned for an unknown filter id.
var ErrNotFound = errors.New("filter not found")

var (
	keyPrefix = etcdkv.Prefix + "filters/"
	seqKey    = etcdkv.Prefix + "filter-seq"
)

// DefaultLead is how far ahead of its creation a new filter takes effect
// (rounded up to a minute boundary): a click may lie 60 s in the future,
// an aggregator takes clicks only while its filter view was confirmed
// against etcd within the view TTL (30 s by default), plus 5 s of clock
// skew and 10 s for the write to commit. Every aggregator that counts a
// click of the effective minute therefore has the filter: a filter never
// counts short while saying complete. The same rule as a ring change
// (ring.History.Lead); the router sets it from the ring's TTL.
const DefaultLead = 105 * time.Second

// confirmEvery is how often a Watcher re-reads the filters to confirm its
// view is current: well within the shortest view TTL (5 s), for a read of
// at most --max-filters small values.
const confirmEvery = time.Second

func key(id int64) string { return fmt.Sprintf("%s%020d", keyPrefix, id) }

// Store creates, lists and deletes filters in etcd.
type Store struct {
	cli   *clientv3.Client
	clock clock.Clock
	lead  func() time.Duration
}

// NewStore returns a store on cli whose filters take effect DefaultLead
// ahead.
func NewStore(cli *clientv3.Client, clk clock.Clock) *Store {
	return &Store{cli: cli, clock: clk, lead: func() time.Duration { return DefaultLead }}
}

// SetLead makes new filters take effect lead() ahead (at least
// DefaultLead's one minute of future clicks); call it before use.
func (s *Store) SetLead(lead func() time.Duration) { s.lead = lead }

// EffectiveFrom is the first minute boundary at or after now + lead.
func EffectiveFrom(now time.Time, lead time.Duration) int64 {
	t := now.Add(lead)
	m := clock.Minute(t)
	if m < t.Unix() || t.Nanosecond() > 0 && m == t.Unix() {
		m += 60
	}
	return m
}

// DefaultMaxFilters bounds the number of filters: every click is matched
// against every filter under the aggregator's lock, and its matches are
// written to the log, so the count is a cost on every click.
const DefaultMaxFilters = 100

// ErrTooMany is returned by CreateAtMost when the filter limit is reached.
var ErrTooMany = errors.New("too many filters")

// Create is CreateAtMost with DefaultMaxFilters.
func (s *Store) Create(ctx context.Context, f Filter) (Filter, error) {
	return s.CreateAtMost(ctx, f, DefaultMaxFilters)
}

// CreateAtMost validates f, assigns it the next id and an effective minute,
// and stores it, unless max filters (max <= 0: no limit) already exist. The
// count and the sequence are read at one revision and the write is
// conditional on the sequence, so concurrent creations through several
// routers cannot together pass the limit.
func (s *Store) CreateAtMost(ctx context.Context, f Filter, max int) (Filter, error) {
	f, err := Normalize(f)
	if err != nil {
		return f, err
	}
	f.EffectiveFrom = EffectiveFrom(s.clock.Now(), s.lead())
	for {
		read, err := s.cli.Txn(ctx).Then(
			clientv3.OpGet(seqKey),
			clientv3.OpGet(keyPrefix, clientv3.WithPrefix(), clientv3.WithCountOnly()),
		).Commit()
		if err != nil {
			return f, fmt.Errorf("read filter sequence: %w", err)
		}
		seq, count := read.Responses[0].GetResponseRange(), read.Responses[1].GetResponseRange().GetCount()
		if max > 0 && count >= int64(max) {
			return f, fmt.Errorf("%w: %d filters exist, at most %d allowed (--max-filters): delete one first (DELETE /v1/filters/{id})", ErrTooMany, count, max)
		}
		var next int64 = 1
		var modRev int64
		if len(seq.GetKvs()) == 1 {
			kv := seq.GetKvs()[0]
			cur, err := strconv.ParseInt(string(kv.Value), 10, 64)
			if err != nil {
				return f, fmt.Errorf("corrupt filter sequence %q: %w", kv.Value, err)
			}
			next = cur + 1
			modRev = kv.ModRevision
		}
		f.ID = next
		val, err := json.Marshal(f)
		if err != nil {
			return f, err
		}
		txn, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(seqKey), "=", modRev)).
			Then(clientv3.OpPut(seqKey, strconv.FormatInt(next, 10)), clientv3.OpPut(key(next), string(val))).
			Commit()
		if err != nil {
			return f, fmt.Errorf("store filter: %w", err)
		}
		if txn.Succeeded {
			return f, nil
		}
		// Another router created a filter concurrently: take the next id
		// (and count again).
	}
}

// Delete removes filter id.
func (s *Store) Delete(ctx context.Context, id int64) error {
	resp, err := s.cli.Delete(ctx, key(id))
	if err != nil {
		return fmt.Errorf("delete filter: %w", err)
	}
	if resp.Deleted == 0 {
		return fmt.Errorf("%w: %d", ErrNotFound, id)
	}
	return nil
}

// List returns all filters sorted by id.
func (s *Store) List(ctx context.Context) ([]Filter, error) {
	resp, err := s.cli.Get(ctx, keyPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list filters: %w", err)
	}
	kvs := make(map[string][]byte, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		kvs[string(kv.Key)] = kv.Value
	}
	fs, err := decodeAll(kvs)
	return fs, err
}

func decodeAll(kvs map[string][]byte) ([]Filter, error) {
	out := make([]Filter, 0, len(kvs))
	var errs []error
	for k, v := range kvs {
		var f Filter
		if err := json.Unmarshal(v, &f); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", k, err))
			continue
		}
		out = append(out, f)
	}
	s, err := NewSet(out)
	errs = append(errs, err)
	return s.All(), errors.Join(errs...)
}

// Watcher keeps the current filter set and knows how recently it was
// confirmed current. Safe for concurrent use.
type Watcher struct {
	set       atomic.Pointer[Set]
	log       *slog.Logger
	cli       *clientv3.Client
	confirmed atomic.Pointer[time.Time] // monotonic: when a read that the set reflects began
	mu        sync.Mutex
	raw       map[string][]byte // what the watch applied last
}

// Watch loads the filters and follows changes until ctx is done; it also
// re-reads them every few seconds, which confirms the view (Fresh). When it
// returns, Current is already populated.
func Watch(ctx context.Context, cli *clientv3.Client, log *slog.Logger) (*Watcher, error) {
	w := &Watcher{log: log, cli: cli}
	w.set.Store(&Set{byID: map[int64]Filter{}})
	began := time.Now()
	if _, err := etcdkv.NewPrefixCache(ctx, cli, keyPrefix, log, w.update); err != nil {
		return nil, fmt.Errorf("watch filters: %w", err)
	}
	w.confirmed.Store(&began)
	go w.confirmLoop(ctx)
	return w, nil
}

// confirmLoop re-reads the filters every confirmEvery: the watch applies
// changes as they come, and a successful read proves nothing was missed.
func (w *Watcher) confirmLoop(ctx context.Context) {
	t := time.NewTicker(confirmEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		began := time.Now()
		rctx, cancel := context.WithTimeout(ctx, confirmEvery)
		resp, err := w.cli.Get(rctx, keyPrefix, clientv3.WithPrefix())
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				w.log.Warn("filters: cannot confirm the view against etcd", "err", err)
			}
			continue
		}
		// Confirm only when etcd holds exactly what the watch applied; a
		// difference is a change the watch is about to deliver (or a broken
		// watch, which re-lists by itself): confirm at the next read.
		if w.matches(resp.Kvs) {
			w.confirmed.Store(&began)
		}
	}
}

func (w *Watcher) matches(kvs []*mvccpb.KeyValue) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(kvs) != len(w.raw) {
		return false
	}
	for _, kv := range kvs {
		if v, ok := w.raw[string(kv.Key)]; !ok || !bytes.Equal(v, kv.Value) {
			return false
		}
	}
	return true
}

// Fresh tells whether the filter view was confirmed current within ttl:
// an aggregator takes clicks only while it is, so it never counts a click
// of a filter's effective minute without the filter.
func (w *Watcher) Fresh(ttl time.Duration) bool {
	c := w.confirmed.Load()
	return c != nil && time.Since(*c) < ttl
}

func (w *Watcher) update(kvs map[string][]byte) {
	w.mu.Lock()
	w.raw = kvs
	w.mu.Unlock()
	fs, err := decodeAll(kvs)
	if err != nil {
		w.log.Warn("filters", "err", err)
	}
	s, _ := NewSet(fs)
	w.set.Store(s)
}

// Current returns the filter set in force.
func (w *Watcher) Current() *Set { return w.set.Load() }

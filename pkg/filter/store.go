package filter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/adclick/adclick/pkg/clock"
	"github.com/adclick/adclick/pkg/etcdkv"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrNotFound is returned for an unknown filter id.
var ErrNotFound = errors.New("filter not found")

var (
	keyPrefix = etcdkv.Prefix + "filters/"
	seqKey    = etcdkv.Prefix + "filter-seq"
)

// Lead is how far in the future a new filter takes effect: past the
// one-minute bound on future clicks, so that no aggregator has counted a
// click of the effective minute before the filter reaches it through its
// watch.
const Lead = 2 * time.Minute

func key(id int64) string { return fmt.Sprintf("%s%020d", keyPrefix, id) }

// Store creates, lists and deletes filters in etcd.
type Store struct {
	cli   *clientv3.Client
	clock clock.Clock
}

// NewStore returns a store on cli.
func NewStore(cli *clientv3.Client, clk clock.Clock) *Store {
	return &Store{cli: cli, clock: clk}
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
	f.EffectiveFrom = clock.Minute(s.clock.Now().Add(Lead))
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

// Watcher keeps the current filter set. Safe for concurrent use.
type Watcher struct {
	set atomic.Pointer[Set]
	log *slog.Logger
}

// Watch loads the filters and follows changes until ctx is done. When it
// returns, Current is already populated.
func Watch(ctx context.Context, cli *clientv3.Client, log *slog.Logger) (*Watcher, error) {
	w := &Watcher{log: log}
	w.set.Store(&Set{byID: map[int64]Filter{}})
	if _, err := etcdkv.NewPrefixCache(ctx, cli, keyPrefix, log, w.update); err != nil {
		return nil, fmt.Errorf("watch filters: %w", err)
	}
	return w, nil
}

func (w *Watcher) update(kvs map[string][]byte) {
	fs, err := decodeAll(kvs)
	if err != nil {
		w.log.Warn("filters", "err", err)
	}
	s, _ := NewSet(fs)
	w.set.Store(s)
}

// Current returns the filter set in force.
func (w *Watcher) Current() *Set { return w.set.Load() }

package ring

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/adclick/adclick/pkg/clock"
	"github.com/adclick/adclick/pkg/etcdkv"
)

// Key is the etcd key of the ring history: one value, replaced only by a
// compare-and-swap on its revision, so changes are serialized and each one
// is checked against the history it appends to.
const Key = etcdkv.Prefix + "ring/history"

// opTimeout bounds one etcd round trip of this package.
const opTimeout = 5 * time.Second

// LoadHistory reads the history and its etcd mod revision; (nil, 0) when there is
// none yet.
func LoadHistory(ctx context.Context, kv clientv3.KV) (*History, int64, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	resp, err := kv.Get(ctx, Key)
	if err != nil {
		return nil, 0, fmt.Errorf("read ring history: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, nil
	}
	h, err := decode(resp.Kvs[0].Value)
	return h, resp.Kvs[0].ModRevision, err
}

func decode(b []byte) (*History, error) {
	var h History
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, fmt.Errorf("ring history at %s does not decode: %w", Key, err)
	}
	if err := h.Validate(); err != nil {
		return nil, fmt.Errorf("ring history at %s: %w", Key, err)
	}
	return &h, nil
}

// ErrNoChange is returned by a change function that finds nothing to do;
// Update then returns the current history without writing.
var ErrNoChange = errors.New("ring: nothing to change")

// Update applies change to the current history (nil when there is none)
// and stores the result if nobody changed the history meanwhile, retrying
// on a conflict. The result must only append (CheckAppendOnly at the time
// the change was computed); the write must commit within CommitMargin of
// that time, or Update reports an error (the change is stored all the same:
// the margin is part of Lead).
func Update(ctx context.Context, kv clientv3.KV, clk clock.Clock, change func(h *History, now time.Time) (*History, error)) (*History, int64, error) {
	for attempt := 0; ; attempt++ {
		h, rev, err := LoadHistory(ctx, kv)
		if err != nil {
			return nil, 0, err
		}
		now := clk.Now()
		next, err := change(h, now)
		if errors.Is(err, ErrNoChange) {
			return h, rev, nil
		}
		if err != nil {
			return nil, 0, err
		}
		if err := CheckAppendOnly(h, next, now); err != nil {
			return nil, 0, err
		}
		val, err := json.Marshal(next)
		if err != nil {
			return nil, 0, err
		}
		cmp := clientv3.Compare(clientv3.ModRevision(Key), "=", rev)
		if rev == 0 {
			cmp = clientv3.Compare(clientv3.CreateRevision(Key), "=", 0)
		}
		tctx, cancel := context.WithTimeout(ctx, CommitMargin/2)
		resp, err := kv.Txn(tctx).If(cmp).Then(clientv3.OpPut(Key, string(val))).Commit()
		cancel()
		if err != nil {
			return nil, 0, fmt.Errorf("write ring history: %w", err)
		}
		if !resp.Succeeded {
			if attempt >= 20 {
				return nil, 0, errors.New("ring history changed under every one of 20 attempts; retry")
			}
			continue // someone else changed it: recompute from the new history
		}
		if took := clk.Now().Sub(now); took > CommitMargin {
			return next, resp.Header.Revision, fmt.Errorf("ring history change committed %s after it was computed (margin %s): check the clocks and etcd latency", took, CommitMargin)
		}
		return next, resp.Header.Revision, nil
	}
}

// Watcher follows the ring history and knows how current its view is. Safe
// for concurrent use.
type Watcher struct {
	cli *clientv3.Client
	clk clock.Clock
	log *slog.Logger

	refreshMu sync.Mutex // one read at a time
	installMu sync.Mutex // serializes installs
	state     atomic.Pointer[watchState]
	subsMu    sync.Mutex
	subs      []chan struct{}
}

type watchState struct {
	v         *Versions
	rev       int64
	confirmed time.Time // when a read that returned rev (or later) started, by the injected clock
	// confirmedMono is the same moment on the process's monotonic clock:
	// freshness is elapsed time, which a wall-clock step (or a test's fake
	// clock jumping minutes ahead) must not shorten or stretch.
	confirmedMono time.Time
}

// Watch reads the history (its view is current when Watch returns) and
// follows it until ctx is done: it applies changes as etcd reports them and
// confirms the view with a read every view TTL / 6.
func Watch(ctx context.Context, cli *clientv3.Client, clk clock.Clock, log *slog.Logger) (*Watcher, error) {
	w := &Watcher{cli: cli, clk: clk, log: log}
	w.state.Store(&watchState{v: NewVersions(nil)})
	if err := w.Refresh(ctx); err != nil {
		return nil, err
	}
	go w.run(ctx)
	return w, nil
}

func (w *Watcher) load() *watchState { return w.state.Load() }

// Current returns the routing of the newest history this watcher knows.
func (w *Watcher) Current() *Versions { return w.load().v }

// Revision is the etcd mod revision of the history in Current (0: none).
func (w *Watcher) Revision() int64 { return w.load().rev }

// Fresh tells whether the view may be acted on: a history exists and it
// was confirmed current less than the history's view TTL ago (elapsed time
// on the monotonic clock; now is not used).
func (w *Watcher) Fresh(time.Time) bool {
	s := w.load()
	return s.rev != 0 && time.Since(s.confirmedMono) < s.v.History().ViewTTL()
}

// ConfirmedAt is when the view was last confirmed current.
func (w *Watcher) ConfirmedAt() time.Time { return w.load().confirmed }

// Subscribe returns a channel that receives a value after the history
// changes (coalesced: at most one pending).
func (w *Watcher) Subscribe() <-chan struct{} {
	ch := make(chan struct{}, 1)
	w.subsMu.Lock()
	w.subs = append(w.subs, ch)
	w.subsMu.Unlock()
	return ch
}

// Refresh reads the history from etcd now (a linearizable read) and
// installs it; the view counts as confirmed from the moment the read began.
func (w *Watcher) Refresh(ctx context.Context) error {
	w.refreshMu.Lock()
	defer w.refreshMu.Unlock()
	began, mono := w.clk.Now(), time.Now()
	h, rev, err := LoadHistory(ctx, w.cli)
	if err != nil {
		return err
	}
	w.install(h, rev, began, mono)
	return nil
}

// install applies (h, rev) if it is not older than the current view, and
// moves the confirmation time forward when confirmed is set.
func (w *Watcher) install(h *History, rev int64, confirmed, mono time.Time) {
	w.installMu.Lock()
	s := w.state.Load()
	next := *s
	changed := false
	if rev > s.rev {
		next.v, next.rev, changed = NewVersions(h), rev, true
	}
	if rev >= s.rev && mono.After(next.confirmedMono) {
		next.confirmed, next.confirmedMono = confirmed, mono
	}
	w.state.Store(&next)
	w.installMu.Unlock()
	if changed {
		w.log.Info("ring history applied", "revision", rev, "eras", len(h.Eras), "drains", len(h.Drains))
		w.subsMu.Lock()
		for _, ch := range w.subs {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
		w.subsMu.Unlock()
	}
}

func (w *Watcher) run(ctx context.Context) {
	go w.confirmLoop(ctx)
	for ctx.Err() == nil {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := w.cli.Watch(wctx, Key, clientv3.WithRev(w.Revision()+1))
		for resp := range wch {
			if resp.Err() != nil {
				break
			}
			for _, ev := range resp.Events {
				if ev.Type != clientv3.EventTypePut {
					w.log.Error("ring history deleted from etcd: keeping the last one known; restore it from a backup", "key", Key)
					continue
				}
				h, err := decode(ev.Kv.Value)
				if err != nil {
					w.log.Error("ignoring a ring history that does not decode", "err", err)
					continue
				}
				w.install(h, ev.Kv.ModRevision, time.Time{}, time.Time{})
			}
		}
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
		if err := w.Refresh(ctx); err != nil && ctx.Err() == nil {
			w.log.Warn("ring history: re-read after a broken watch failed", "err", err)
		}
	}
}

// confirmLoop re-reads the history every TTL/6 so the view stays fresh
// while etcd answers.
func (w *Watcher) confirmLoop(ctx context.Context) {
	for {
		every := w.Current().History().ViewTTL() / 6
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
		if err := w.Refresh(ctx); err != nil && ctx.Err() == nil {
			w.log.Warn("ring history: cannot confirm the view against etcd", "err", err,
				"confirmed_ago", w.clk.Now().Sub(w.ConfirmedAt()).Round(time.Millisecond).String())
		}
	}
}

package membership

import (
	"context"
	"log/slog"
	"sync"

	"github.com/adclick/adclick/pkg/etcdkv"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Watcher follows the members of one kind and which of them are live. Safe
// for concurrent use.
type Watcher struct {
	kind    Kind
	log     *slog.Logger
	mu      sync.RWMutex
	records map[string][]byte // persistent records
	live    map[string][]byte // liveness keys
	members []Member
	subs    []chan struct{}
}

// Watch lists the members of kind and follows changes until ctx is done.
// When it returns, Members is already populated.
func Watch(ctx context.Context, cli *clientv3.Client, kind Kind, log *slog.Logger) (*Watcher, error) {
	w := &Watcher{kind: kind, log: log}
	if _, err := etcdkv.NewPrefixCache(ctx, cli, kind.LivePrefix(), log, func(kvs map[string][]byte) { w.update(nil, kvs) }); err != nil {
		return nil, err
	}
	if _, err := etcdkv.NewPrefixCache(ctx, cli, kind.Prefix(), log, func(kvs map[string][]byte) { w.update(kvs, nil) }); err != nil {
		return nil, err
	}
	return w, nil
}

// update takes a new snapshot of either prefix (the other is nil).
func (w *Watcher) update(records, live map[string][]byte) {
	w.mu.Lock()
	if records != nil {
		w.records = records
	}
	if live != nil {
		w.live = live
	}
	members, err := ParseMembers(w.kind, w.records, w.live)
	w.members = members
	subs := w.subs
	w.mu.Unlock()
	if err != nil {
		w.log.Warn("membership", "err", err)
	}
	for _, ch := range subs {
		select {
		case ch <- struct{}{}:
		default: // a change is already pending for this subscriber
		}
	}
}

// Members returns every member, live or not, sorted by ID. The slice must
// not be modified.
func (w *Watcher) Members() []Member {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.members
}

// Subscribe returns a channel that receives a value after changes (coalesced:
// one pending notification at most). Call Members to see the new state.
func (w *Watcher) Subscribe() <-chan struct{} {
	ch := make(chan struct{}, 1)
	w.mu.Lock()
	w.subs = append(w.subs, ch)
	w.mu.Unlock()
	return ch
}

// Live returns the members that are running now, sorted by ID.
func (w *Watcher) Live() []Member {
	var out []Member
	for _, m := range w.Members() {
		if m.Live {
			out = append(out, m)
		}
	}
	return out
}

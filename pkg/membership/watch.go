package membership

import (
	"context"
	"log/slog"
	"sync"

	"github.com/adclick/adclick/pkg/etcdkv"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Watcher follows the registered nodes of one kind. Safe for concurrent use.
type Watcher struct {
	kind    Kind
	log     *slog.Logger
	mu      sync.RWMutex
	members []Member
	subs    []chan struct{}
}

// Watch lists the registered nodes of kind and follows changes until ctx is
// done. When it returns, Members is already populated.
func Watch(ctx context.Context, cli *clientv3.Client, kind Kind, log *slog.Logger) (*Watcher, error) {
	w := &Watcher{kind: kind, log: log}
	if _, err := etcdkv.NewPrefixCache(ctx, cli, kind.Prefix(), log, w.update); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *Watcher) update(kvs map[string][]byte) {
	members, err := ParseMembers(w.kind, kvs)
	if err != nil {
		w.log.Warn("membership", "err", err)
	}
	w.mu.Lock()
	w.members = members
	subs := w.subs
	w.mu.Unlock()
	for _, ch := range subs {
		select {
		case ch <- struct{}{}:
		default: // a change is already pending for this subscriber
		}
	}
}

// Members returns the registered nodes sorted by ID. The slice must not be modified.
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

// Package ringtest gives unit tests a ring history set by hand, behind the
// narrow interfaces components take (ring.Watcher implements them too).
package ringtest

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/adclick/adclick/pkg/ring"
)

// Source is a ring view set by the test. Safe for concurrent use.
type Source struct {
	v       atomic.Pointer[ring.Versions]
	stale   atomic.Bool
	mu      sync.Mutex
	subs    []chan struct{}
	pending *ring.History // installed by the next Refresh
	refresh int
}

// New returns a source routing by a founding era of aggregators.
func New(aggregators ...string) *Source {
	s := &Source{}
	s.Set(ring.Founding(aggregators, time.Unix(0, 0), ring.DefaultViewTTL))
	return s
}

// Set installs h and notifies subscribers.
func (s *Source) Set(h *ring.History) {
	s.v.Store(ring.NewVersions(h))
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ch := range s.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// SetStale makes Fresh answer false (an aggregator cut off from etcd).
func (s *Source) SetStale(stale bool) { s.stale.Store(stale) }

// Current returns the routing of the history last set.
func (s *Source) Current() *ring.Versions { return s.v.Load() }

// Fresh is true unless SetStale(true).
func (s *Source) Fresh(time.Time) bool { return !s.stale.Load() }

// Subscribe returns a channel notified after Set.
func (s *Source) Subscribe() <-chan struct{} {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	s.subs = append(s.subs, ch)
	s.mu.Unlock()
	return ch
}

// SetOnRefresh makes the next Refresh install h (a change the source has
// not been told of yet, as a watcher that missed an update).
func (s *Source) SetOnRefresh(h *ring.History) {
	s.mu.Lock()
	s.pending = h
	s.mu.Unlock()
}

// Refresh installs the history given to SetOnRefresh, if any.
func (s *Source) Refresh(context.Context) error {
	s.mu.Lock()
	h := s.pending
	s.pending = nil
	s.refresh++
	s.mu.Unlock()
	if h != nil {
		s.Set(h)
	}
	return nil
}

// Refreshes counts Refresh calls.
func (s *Source) Refreshes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refresh
}

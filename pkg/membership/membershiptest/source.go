// Package membershiptest gives unit tests a member source they set by hand,
// in place of a membership.Watcher on a real etcd.
package membershiptest

import (
	"sort"
	"sync"

	"github.com/adclick/adclick/pkg/membership"
)

// Source is a member source whose members a test sets. It has the methods
// of membership.Watcher that components use. Safe for concurrent use.
type Source struct {
	mu      sync.Mutex
	members []membership.Member
	subs    []chan struct{}
}

// Members returns the members sorted by ID.
func (s *Source) Members() []membership.Member {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.members
}

// Subscribe returns a channel notified (coalesced) after each Set.
func (s *Source) Subscribe() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := make(chan struct{}, 1)
	s.subs = append(s.subs, ch)
	return ch
}

// Set replaces the members and notifies subscribers.
func (s *Source) Set(ms ...membership.Member) {
	ms = append([]membership.Member(nil), ms...)
	sort.Slice(ms, func(i, j int) bool { return ms[i].ID < ms[j].ID })
	s.mu.Lock()
	s.members = ms
	subs := s.subs
	s.mu.Unlock()
	for _, ch := range subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

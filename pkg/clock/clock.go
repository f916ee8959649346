// Package clock gives components an injectable notion of "now" and the
// minute arithmetic every part of the cluster agrees on: minutes are UTC,
// identified by the unix second of their start.
package clock

import (
	"sync"
	"time"
)

// Clock tells the current time. Implementations are safe for concurrent use.
type Clock interface {
	Now() time.Time
}

// Real is the wall clock.
type Real struct{}

// Now returns time.Now().
func (Real) Now() time.Time { return time.Now() }

// Fake is a manually advanced clock for tests. Safe for concurrent use.
type Fake struct {
	mu  sync.Mutex
	now time.Time
}

// NewFake returns a fake clock set to t.
func NewFake(t time.Time) *Fake { return &Fake{now: t} }

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// Set moves the clock to t.
func (f *Fake) Set(t time.Time) {
	f.mu.Lock()
	f.now = t
	f.mu.Unlock()
}

// Add advances the clock by d.
func (f *Fake) Add(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	f.mu.Unlock()
}

// Minute returns the minute containing t, as the unix second of its start.
func Minute(t time.Time) int64 {
	return MinuteOfUnix(t.Unix())
}

// MinuteOfUnix returns the minute containing unix second s.
func MinuteOfUnix(s int64) int64 { return floorDiv(s, 60) * 60 }

// MinuteTime returns the start of minute m as a UTC time.
func MinuteTime(m int64) time.Time { return time.Unix(m, 0).UTC() }

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

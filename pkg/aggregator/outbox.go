package aggregator

import (
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// outbox keeps emitted partials until every registered reducer has
// acknowledged them. Safe for concurrent use.
type outbox struct {
	mu      sync.Mutex
	parts   []encodedPartial  // retained; parts[i].seq == first+i
	bytes   int64             // encoded size of parts, what --max-outbox-bytes bounds
	counts  int64             // counts of every partial taken since the start; parts[i].before + parts[i].counts for the last
	first   uint64            // sequence of parts[0]; == next when empty
	next    uint64            // sequence of the next partial appended
	acked   map[string]uint64 // registered reducer -> highest sequence it acknowledged
	addedAt time.Time         // when partials were last added
	wakers  map[chan struct{}]struct{}
	changed chan struct{} // closed and replaced when acks or membership change
	m       *metrics
	// drop deletes the durable copies of partials through a sequence; called
	// under mu after a trim, it must not call back into the outbox.
	drop func(through uint64)
}

func newOutbox(m *metrics, drop func(through uint64)) *outbox {
	return &outbox{
		first:   1,
		next:    1,
		acked:   make(map[string]uint64),
		wakers:  make(map[chan struct{}]struct{}),
		changed: make(chan struct{}),
		m:       m,
		drop:    drop,
	}
}

// add keeps ps, which carry the next sequences in order (they were made
// durable with them), and wakes the senders.
func (o *outbox) add(ps []encodedPartial) error {
	if len(ps) == 0 {
		return nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, p := range ps {
		if p.seq != o.next {
			return fmt.Errorf("outbox: partial with sequence %d, want %d", p.seq, o.next)
		}
		p.before = o.counts
		o.counts += int64(p.counts)
		o.parts = append(o.parts, p)
		o.bytes += int64(len(p.b))
		o.next++
	}
	o.addedAt = time.Now()
	o.setGaugesLocked()
	for ch := range o.wakers {
		select {
		case ch <- struct{}{}:
		default: // a wake-up is already pending
		}
	}
	return nil
}

// load restores the retained partials read back from disk; next is the
// sequence of the next partial to be emitted.
func (o *outbox) load(ps []encodedPartial, next uint64) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.first, o.next, o.parts, o.bytes, o.counts = next, next, nil, 0, 0
	if len(ps) > 0 {
		o.first = ps[0].seq
		for i, p := range ps {
			if p.seq != o.first+uint64(i) {
				return fmt.Errorf("outbox on disk has a gap: sequence %d after %d", p.seq, o.first+uint64(i)-1)
			}
		}
		if last := ps[len(ps)-1].seq; last+1 != next {
			return fmt.Errorf("outbox on disk ends at sequence %d but the next sequence is %d", last, next)
		}
		o.parts = ps
		for i := range ps {
			ps[i].before = o.counts
			o.counts += int64(ps[i].counts)
			o.bytes += int64(len(ps[i].b))
		}
	}
	o.setGaugesLocked()
	return nil
}

// retained is the number of partials kept.
func (o *outbox) retained() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.parts)
}

// retainedBytes is the encoded size of the partials kept: about what they
// take in memory, and on disk until every reducer acknowledged them.
func (o *outbox) retainedBytes() int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.bytes
}

func (o *outbox) setGaugesLocked() {
	o.m.outbox.Set(float64(len(o.parts)))
	o.m.outboxBytes.Set(float64(o.bytes))
}

// outboxFull tells whether the outbox holds --max-outbox partials or
// --max-outbox-bytes bytes: a reducer is away or not keeping up, and taking
// more clicks would grow it (memory, disk) without bound.
func (a *Aggregator) outboxFull() bool {
	return a.ob.retained() >= a.cfg.MaxOutbox || a.ob.retainedBytes() >= a.cfg.MaxOutboxBytes
}

// outboxRefusal is the answer to a batch while outboxFull, counted as an
// overload.
func (a *Aggregator) outboxRefusal() error {
	a.m.overload.WithLabelValues("outbox").Inc()
	return status.Errorf(codes.ResourceExhausted,
		"aggregator %s outbox full: %d partials of %d bytes wait for reducers (--max-outbox=%d, --max-outbox-bytes=%d): a reducer is away or not keeping up; retry later",
		a.cfg.NodeID, a.ob.retained(), a.ob.retainedBytes(), a.cfg.MaxOutbox, a.cfg.MaxOutboxBytes)
}

// changes returns a channel closed at the next ack or membership change.
func (o *outbox) changes() <-chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.changed
}

// notifyLocked wakes everyone waiting on changes. o.mu must be held.
func (o *outbox) notifyLocked() {
	close(o.changed)
	o.changed = make(chan struct{})
}

func (o *outbox) notify() {
	o.mu.Lock()
	o.notifyLocked()
	o.mu.Unlock()
}

// setMembers makes ids the registered reducers: a new one starts after the
// oldest retained partial, a gone one is forgotten.
func (o *outbox) setMembers(ids []string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	keep := make(map[string]bool, len(ids))
	for _, id := range ids {
		keep[id] = true
		if _, ok := o.acked[id]; !ok {
			o.acked[id] = o.first - 1
		}
	}
	for id := range o.acked {
		if !keep[id] {
			delete(o.acked, id)
		}
	}
	o.trimLocked()
	o.notifyLocked()
}

// ack records that reducer id has applied everything through seq (which may
// be lower than before: a reducer that lost state asks for a resend). It
// returns how many partials are newly acknowledged.
func (o *outbox) ack(id string, seq uint64) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	prev, ok := o.acked[id]
	if !ok {
		return 0 // no longer registered
	}
	seq = min(seq, o.next-1)
	o.acked[id] = seq
	if seq != prev {
		o.trimLocked()
		o.notifyLocked()
	}
	return max(0, int(seq)-int(prev))
}

// trimLocked drops partials every registered reducer has acknowledged.
func (o *outbox) trimLocked() {
	if len(o.acked) == 0 {
		return // nobody to deliver to yet: keep everything
	}
	low := o.next - 1
	for _, s := range o.acked {
		low = min(low, s)
	}
	if low < o.first {
		return
	}
	n := int(low - o.first + 1)
	for _, p := range o.parts[:n] {
		o.bytes -= int64(len(p.b))
	}
	clear(o.parts[:n])
	o.parts = o.parts[n:]
	o.first += uint64(n)
	if o.drop != nil {
		o.drop(o.first - 1)
	}
	if len(o.parts) == 0 {
		o.parts = nil // let the backing array go
	}
	o.setGaugesLocked()
}

// errGone is returned by batch when a reducer asks for partials no longer retained.
type errGone struct{ want, first uint64 }

func (e errGone) Error() string {
	return fmt.Sprintf("reducer needs partials from sequence %d but the oldest retained is %d: they were dropped after every reducer registered at the time acknowledged them", e.want, e.first)
}

// batch returns the partials reducer id needs next: consecutive, at most
// maxParts of them and, beyond the first, at most maxCounts counts in all.
// It returns nothing when the reducer is up to date or not registered.
func (o *outbox) batch(id string, maxParts, maxCounts int) ([]encodedPartial, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	acked, ok := o.acked[id]
	if !ok || acked+1 >= o.next {
		return nil, nil
	}
	if acked+1 < o.first {
		return nil, errGone{want: acked + 1, first: o.first}
	}
	i := int(acked + 1 - o.first)
	counts := 0
	var out []encodedPartial
	for ; i < len(o.parts) && len(out) < maxParts; i++ {
		n := o.parts[i].counts
		if len(out) > 0 && counts+n > maxCounts {
			break
		}
		counts += n
		out = append(out, o.parts[i])
	}
	return out, nil
}

// pending returns the counts of the partials reducer id has not
// acknowledged, and when partials were last added.
func (o *outbox) pending(id string) (counts int, addedAt time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	acked, ok := o.acked[id]
	if !ok {
		return 0, o.addedAt
	}
	i := max(0, int(acked+1)-int(o.first))
	if i >= len(o.parts) {
		return 0, o.addedAt
	}
	return int(o.counts - o.parts[i].before), o.addedAt
}

// addWaker registers a channel that receives a value (coalesced) when
// partials are added.
func (o *outbox) addWaker(ch chan struct{}) {
	o.mu.Lock()
	o.wakers[ch] = struct{}{}
	o.mu.Unlock()
}

func (o *outbox) removeWaker(ch chan struct{}) {
	o.mu.Lock()
	delete(o.wakers, ch)
	o.mu.Unlock()
}

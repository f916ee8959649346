package aggstate

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"

	clusterv1 "github.com/adclick/adclick/gen/adclick/cluster/v1"
	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/bloom"
	"google.golang.org/protobuf/proto"
)

// Key prefixes.
const (
	prefixMeta   = 'm'
	prefixID     = 'd' // 'd' | minute | click_id
	prefixOutbox = 'o' // 'o' | sequence
)

// ErrClosed is returned after Close.
var ErrClosed = errors.New("aggstate: closed")

// Meta is the aggregator's durable bookkeeping.
type Meta struct {
	Incarnation int64  // fixed at the first start
	FirstMinute int64  // fixed at the first start
	NextMinute  int64  // first minute not yet closed
	NextSeq     uint64 // sequence of the next partial
	Horizon     int64  // minutes before this are rejected and their ids forgotten
}

const metaSize = 40

func (m Meta) encode() []byte {
	b := make([]byte, metaSize)
	binary.BigEndian.PutUint64(b[0:], uint64(m.Incarnation))
	binary.BigEndian.PutUint64(b[8:], uint64(m.FirstMinute))
	binary.BigEndian.PutUint64(b[16:], uint64(m.NextMinute))
	binary.BigEndian.PutUint64(b[24:], m.NextSeq)
	binary.BigEndian.PutUint64(b[32:], uint64(m.Horizon))
	return b
}

func decodeMeta(b []byte) (Meta, error) {
	if len(b) != metaSize {
		return Meta{}, fmt.Errorf("aggstate: meta record of %d bytes, want %d", len(b), metaSize)
	}
	return Meta{
		Incarnation: int64(binary.BigEndian.Uint64(b[0:])),
		FirstMinute: int64(binary.BigEndian.Uint64(b[8:])),
		NextMinute:  int64(binary.BigEndian.Uint64(b[16:])),
		NextSeq:     binary.BigEndian.Uint64(b[24:]),
		Horizon:     int64(binary.BigEndian.Uint64(b[32:])),
	}, nil
}

// minuteKey orders minutes (also negative ones) bytewise.
func appendMinute(dst []byte, m int64) []byte {
	return binary.BigEndian.AppendUint64(dst, uint64(m)^1<<63)
}

func idKey(dst []byte, minute int64, id string) []byte {
	dst = append(dst[:0], prefixID)
	dst = appendMinute(dst, minute)
	return append(dst, id...)
}

func outboxKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{prefixOutbox}, seq)
}

// Store is the aggregator's Pebble database. Safe for concurrent use;
// a Batch is used by one goroutine.
type Store struct {
	mu     sync.RWMutex // write-held only by Close: operations do not race a closing DB
	db     *pebble.DB
	closed bool
}

// Open opens (creating if needed) the database in dir.
func Open(dir string, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.Default()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("aggstate: create %s: %w", dir, err)
	}
	opts := &pebble.Options{
		Logger: pebbleLogger{log.With("component", "pebble")},
		// A closing minute writes millions of click ids in unsynced
		// batches, then one synced commit. Syncing Pebble's log in the
		// background every 1 MiB keeps that final fsync short, so it does
		// not queue the write-ahead log's fsyncs (which acks wait on)
		// behind a gigabyte of dirty pages on the same disk.
		WALBytesPerSync: 1 << 20,
	}
	opts.Levels = make([]pebble.LevelOptions, 7)
	for i := range opts.Levels {
		opts.Levels[i].FilterPolicy = bloom.FilterPolicy(10) // ~1% false positives: a late click rarely reads a block
		opts.Levels[i].FilterType = pebble.TableFilter
	}
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("aggstate: open pebble in %s: %w", dir, err)
	}
	return &Store{db: db}, nil
}

// Close closes the database; everything committed stays durable.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("aggstate: close: %w", err)
	}
	return nil
}

// Meta returns the meta record, and false when there is none yet (first start).
func (s *Store) Meta() (Meta, bool, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return Meta{}, false, ErrClosed
	}
	v, closer, err := s.db.Get([]byte{prefixMeta})
	if errors.Is(err, pebble.ErrNotFound) {
		return Meta{}, false, nil
	}
	if err != nil {
		return Meta{}, false, fmt.Errorf("aggstate: read meta: %w", err)
	}
	defer closer.Close()
	m, err := decodeMeta(v)
	return m, err == nil, err
}

// Outbox returns the retained partials in sequence order.
func (s *Store) Outbox() ([]*clusterv1.Partial, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, ErrClosed
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixOutbox}, UpperBound: []byte{prefixOutbox + 1}})
	if err != nil {
		return nil, fmt.Errorf("aggstate: outbox: %w", err)
	}
	var out []*clusterv1.Partial
	for it.First(); it.Valid(); it.Next() {
		p := &clusterv1.Partial{}
		if err := proto.Unmarshal(it.Value(), p); err != nil {
			it.Close()
			return nil, fmt.Errorf("aggstate: outbox partial %x: %w", it.Key(), err)
		}
		out = append(out, p)
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("aggstate: outbox: %w", err)
	}
	return out, nil
}

// Seen reports whether id was persisted as counted in (closed) minute.
func (s *Store) Seen(minute int64, id string) (bool, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return false, ErrClosed
	}
	var buf [64]byte
	_, closer, err := s.db.Get(idKey(buf[:0], minute, id))
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("aggstate: look up click id: %w", err)
	}
	closer.Close()
	return true, nil
}

// EachID calls fn with the click ids of every minute >= from, minute by
// minute in ascending order, at most batch ids per call (the slice is
// reused between calls).
func (s *Store) EachID(from int64, batch int, fn func(minute int64, ids []string) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: appendMinute([]byte{prefixID}, from), UpperBound: []byte{prefixID + 1}})
	if err != nil {
		return fmt.Errorf("aggstate: list click ids: %w", err)
	}
	var ids []string
	cur := int64(0)
	flush := func() error {
		if len(ids) == 0 {
			return nil
		}
		err := fn(cur, ids)
		ids = ids[:0]
		return err
	}
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if len(k) < 9 {
			continue
		}
		m := int64(binary.BigEndian.Uint64(k[1:9]) ^ 1<<63)
		if m != cur || len(ids) >= batch {
			if err := flush(); err != nil {
				it.Close()
				return err
			}
			cur = m
		}
		ids = append(ids, string(k[9:]))
	}
	if err := flush(); err != nil {
		it.Close()
		return err
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("aggstate: list click ids: %w", err)
	}
	return nil
}

// DropOutbox deletes the partials with sequence <= through. Not synced: a
// drop lost in a crash only makes reducers get no-op resends.
func (s *Store) DropOutbox(through uint64) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	if err := s.db.DeleteRange(outboxKey(0), outboxKey(through+1), pebble.NoSync); err != nil {
		return fmt.Errorf("aggstate: drop outbox through %d: %w", through, err)
	}
	return nil
}

// Batch collects writes committed at once. Not safe for concurrent use.
type Batch struct {
	s   *Store
	b   *pebble.Batch
	key []byte
	ids int
}

// NewBatch starts a batch.
func (s *Store) NewBatch() *Batch { return &Batch{s: s, b: s.db.NewBatch()} }

// AddID records that id was counted in minute.
func (b *Batch) AddID(minute int64, id string) {
	b.key = idKey(b.key, minute, id)
	_ = b.b.Set(b.key, nil, nil) // a batch Set copies and only fails on a closed batch
	b.ids++
}

// IDs is the number of ids added.
func (b *Batch) IDs() int { return b.ids }

// AddPartial keeps p in the outbox under its sequence.
func (b *Batch) AddPartial(p *clusterv1.Partial) error {
	v, err := proto.Marshal(p)
	if err != nil {
		return fmt.Errorf("aggstate: encode partial %d: %w", p.Sequence, err)
	}
	_ = b.b.Set(outboxKey(p.Sequence), v, nil)
	return nil
}

// SetMeta writes the meta record.
func (b *Batch) SetMeta(m Meta) { _ = b.b.Set([]byte{prefixMeta}, m.encode(), nil) }

// ForgetIDsBefore deletes the ids of every minute before the given one.
func (b *Batch) ForgetIDsBefore(minute int64) {
	lo := appendMinute([]byte{prefixID}, -1<<63)
	_ = b.b.DeleteRange(lo, appendMinute([]byte{prefixID}, minute), nil)
}

// Commit writes the batch, synced, and releases it.
func (b *Batch) Commit() error {
	b.s.mu.RLock()
	defer b.s.mu.RUnlock()
	defer b.b.Close()
	if b.s.closed {
		return ErrClosed
	}
	if err := b.b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("aggstate: commit: %w", err)
	}
	return nil
}

// CommitNoSync writes the batch without waiting for the disk and releases
// it: it becomes durable with the next synced commit (Pebble's log is
// written in order), or is lost in a crash before that.
func (b *Batch) CommitNoSync() error {
	b.s.mu.RLock()
	defer b.s.mu.RUnlock()
	defer b.b.Close()
	if b.s.closed {
		return ErrClosed
	}
	if err := b.b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("aggstate: commit: %w", err)
	}
	return nil
}

// Bytes is the batch's encoded size so far.
func (b *Batch) Bytes() int { return b.b.Len() }

// Discard releases an uncommitted batch.
func (b *Batch) Discard() { _ = b.b.Close() }

// pebbleLogger routes Pebble's log lines into slog.
type pebbleLogger struct{ log *slog.Logger }

func (l pebbleLogger) Infof(format string, args ...any) { l.log.Debug(fmt.Sprintf(format, args...)) }

func (l pebbleLogger) Errorf(format string, args ...any) { l.log.Error(fmt.Sprintf(format, args...)) }

func (l pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.log.Error(msg)
	panic(errors.New("pebble: " + msg))
}

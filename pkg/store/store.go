package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble"
)

// NoWatermark is the watermark of an aggregator incarnation that has not
// closed any minute yet.
const NoWatermark int64 = math.MinInt64

// AggMeta is what the reducer remembers about one aggregator.
type AggMeta struct {
	Incarnation int64  // the newest incarnation seen
	HighWater   uint64 // highest sequence of that incarnation applied
	Watermark   int64  // last minute that incarnation closed, or NoWatermark
}

const aggMetaLen = 24

func (m AggMeta) encode(dst []byte) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(m.Incarnation))
	dst = binary.BigEndian.AppendUint64(dst, m.HighWater)
	return binary.BigEndian.AppendUint64(dst, uint64(m.Watermark))
}

func decodeAggMeta(v []byte) (AggMeta, error) {
	if len(v) != aggMetaLen {
		return AggMeta{}, fmt.Errorf("%w: aggregator meta of %d bytes", ErrCorrupt, len(v))
	}
	return AggMeta{
		Incarnation: int64(binary.BigEndian.Uint64(v[0:8])),
		HighWater:   binary.BigEndian.Uint64(v[8:16]),
		Watermark:   int64(binary.BigEndian.Uint64(v[16:24])),
	}, nil
}

// DB is the reducer's Pebble database. Safe for concurrent use; batches are
// not (one goroutine per Batch).
type DB struct {
	db *pebble.DB
	// legacy: ad-major keys of an older version may be stored, so
	// DeleteBefore deletes them with their minutes (see keys.go).
	legacy atomic.Bool
}

// Open opens (creating if needed) the database in dir.
func Open(dir string, log *slog.Logger) (*DB, error) {
	if log == nil {
		log = slog.Default()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("store: create %s: %w", dir, err)
	}
	db, err := pebble.Open(dir, &pebble.Options{
		Merger: sumMerger,
		Logger: pebbleLogger{log.With("component", "pebble")},
		// A closing minute brings millions of count increments at once; a
		// 64 MiB memtable (Pebble's default is 4 MiB) takes them in a few
		// flushes instead of dozens of small L0 files to compact.
		MemTableSize: 64 << 20,
	})
	if err != nil {
		return nil, fmt.Errorf("store: open pebble in %s: %w", dir, err)
	}
	d := &DB{db: db}
	legacy, err := d.hasLegacyKeys()
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	d.legacy.Store(legacy)
	return d, nil
}

// hasLegacyKeys tells whether any ad-major key is stored.
func (d *DB) hasLegacyKeys() (bool, error) {
	it, err := d.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixByAd}, UpperBound: []byte{prefixByAd + 1}})
	if err != nil {
		return false, fmt.Errorf("store: look for ad-major keys: %w", err)
	}
	found := it.First()
	return found, closeIter(it)
}

// Close flushes and closes the database.
func (d *DB) Close() error {
	if err := d.db.Flush(); err != nil {
		_ = d.db.Close()
		return fmt.Errorf("store: flush: %w", err)
	}
	if err := d.db.Close(); err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	return nil
}

// Batch collects count increments and meta updates committed atomically.
// Count increments are kept aside and written in key order at Commit: a
// memtable insert that follows the previous one in order reuses its place
// in the skiplist (Pebble's inserter), while increments in arrival order
// each searched the whole list, a quarter of the CPU after a minute closed.
type Batch struct {
	b *pebble.Batch
	*scratch
}

// scratch is a batch's working memory, reused by the next batch: a
// closing minute's partials arrive as thousands of batches of tens of
// thousands of counts, and growing these buffers afresh for each was a
// quarter of everything the cluster allocated in the seconds after a close
// (garbage collections back to back, while ingest went on).
type scratch struct {
	key  []byte
	val  []byte
	keys []byte      // encoded keys of the pending increments
	incs []increment // pending increments, sorted by key at Commit
}

// scratchPool holds the scratch of closed batches; a scratch grown beyond
// maxScratchBytes (an unusually large batch) is dropped rather than kept.
var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

const maxScratchBytes = 16 << 20

type increment struct {
	off, len uint32 // the key, in keys
	n        int64
}

// NewBatch starts an empty batch.
func (d *DB) NewBatch() *Batch {
	return &Batch{b: d.db.NewBatch(), scratch: scratchPool.Get().(*scratch)}
}

// AddCount adds n clicks of ad in minute for filter.
//
// Only the minute-major key is written. A second, ad-major copy (the
// count of one ad over a range as one scan) cost more than half of the
// reducer's storage work after each close (BenchmarkCommitCounts: 2.8 µs
// a count with it, 1.3 µs without, on 2 vCPUs), mostly in compactions: a
// minute's ad-major keys land all over the key space, so compactions
// rewrite ever more of it as history grows, while minute-major keys of a
// new minute follow those of the last. AdCount reads one key per stored
// minute instead (see there).
func (b *Batch) AddCount(filter, minute int64, ad string, n int64) error {
	off := len(b.keys)
	b.keys = minuteKey(b.keys, filter, minute, ad)
	b.incs = append(b.incs, increment{off: uint32(off), len: uint32(len(b.keys) - off), n: n})
	return nil
}

// writeIncrements merges the pending increments into the batch in key order.
func (b *Batch) writeIncrements() error {
	key := func(i increment) []byte { return b.keys[i.off : i.off+i.len] }
	slices.SortFunc(b.incs, func(x, y increment) int { return bytes.Compare(key(x), key(y)) })
	for _, i := range b.incs {
		b.val = countValue(b.val[:0], i.n)
		if err := b.b.Merge(key(i), b.val, nil); err != nil {
			return fmt.Errorf("store: batch merge: %w", err)
		}
	}
	b.keys, b.incs = b.keys[:0], b.incs[:0]
	return nil
}

// SetAggMeta records the meta of aggregator id.
func (b *Batch) SetAggMeta(id string, m AggMeta) error {
	b.key = aggKey(b.key[:0], id)
	b.val = m.encode(b.val[:0])
	if err := b.b.Set(b.key, b.val, nil); err != nil {
		return fmt.Errorf("store: batch set: %w", err)
	}
	return nil
}

// Bytes is the encoded size of the batch (pending increments estimated).
func (b *Batch) Bytes() int { return b.b.Len() + len(b.keys) + len(b.incs)*12 }

// Commit writes the batch atomically and syncs it to disk.
func (b *Batch) Commit() error {
	if err := b.writeIncrements(); err != nil {
		return err
	}
	if err := b.b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("store: commit: %w", err)
	}
	return nil
}

// Close releases the batch; it must be called after Commit or to abandon it.
func (b *Batch) Close() {
	_ = b.b.Close()
	if sc := b.scratch; sc != nil {
		b.scratch = nil
		if cap(sc.keys)+cap(sc.incs)*16 <= maxScratchBytes {
			sc.key, sc.val, sc.keys, sc.incs = sc.key[:0], sc.val[:0], sc.keys[:0], sc.incs[:0]
			scratchPool.Put(sc)
		}
	}
}

// AggMetas returns the meta of every aggregator ever applied.
func (d *DB) AggMetas() (map[string]AggMeta, error) {
	it, err := d.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixAgg}, UpperBound: []byte{prefixAgg + 1}})
	if err != nil {
		return nil, fmt.Errorf("store: iterate aggregator meta: %w", err)
	}
	out := make(map[string]AggMeta)
	for ok := it.First(); ok; ok = it.Next() {
		m, err := decodeAggMeta(it.Value())
		if err != nil {
			_ = it.Close()
			return nil, err
		}
		out[string(it.Key()[1:])] = m
	}
	return out, closeIter(it)
}

// AdCount sums the clicks of ad for filter over minutes [from, to): one
// seek per stored minute of the range (the seek for a minute without the
// ad lands on the next stored minute, so minutes with no counts at all
// cost nothing). The reducer answers from memory for its last
// RetainMinutes minutes (a day by default); this serves older ranges:
// ~1,440 seeks for a day, a few milliseconds.
func (d *DB) AdCount(filter int64, ad string, from, to int64) (int64, error) {
	if from >= to {
		return 0, nil
	}
	it, err := d.db.NewIter(&pebble.IterOptions{
		LowerBound: minuteFloorKey(nil, filter, from),
		UpperBound: minuteFloorKey(nil, filter, to),
	})
	if err != nil {
		return 0, fmt.Errorf("store: iterate counts: %w", err)
	}
	var sum int64
	var key []byte
	for m := from; m < to; {
		key = minuteKey(key[:0], filter, m, ad)
		if !it.SeekGE(key) {
			break // nothing stored at or after (m, ad) in the range
		}
		_, got, gotAd, err := decodeMinuteKey(it.Key())
		if err != nil {
			_ = it.Close()
			return 0, err
		}
		switch {
		case got > m:
			m = got // no key at all between: go to the next stored minute
		case string(gotAd) == ad:
			n, err := decodeCount(it.Value())
			if err != nil {
				_ = it.Close()
				return 0, err
			}
			sum += n
			m += 60
		default:
			m += 60 // minute m is stored, without this ad
		}
	}
	return sum, closeIter(it)
}

// ScanMinutes calls fn for every stored (filter, minute, ad, count) with
// minute in [from, to), ordered by filter then minute. If filter >= 0 only
// that filter is scanned, otherwise all filters. The ad slice is valid only
// during the call. An error from fn stops the scan and is returned.
func (d *DB) ScanMinutes(filter, from, to int64, fn func(filter, minute int64, ad []byte, n int64) error) error {
	if from >= to {
		return nil
	}
	opts := &pebble.IterOptions{LowerBound: []byte{prefixByMinute}, UpperBound: []byte{prefixByMinute + 1}}
	if filter >= 0 {
		opts.LowerBound = putInt64([]byte{prefixByMinute}, filter)
		opts.UpperBound = putInt64([]byte{prefixByMinute}, filter+1)
	}
	it, err := d.db.NewIter(opts)
	if err != nil {
		return fmt.Errorf("store: iterate counts: %w", err)
	}
	var seek []byte
	cur := int64(math.MinInt64)
	if filter >= 0 {
		cur = filter
	}
	for ok := it.SeekGE(minuteFloorKey(seek[:0], cur, from)); ok; {
		f, m, ad, err := decodeMinuteKey(it.Key())
		if err != nil {
			_ = it.Close()
			return err
		}
		if f != cur && m < from {
			// A new filter: jump to its first wanted minute.
			cur = f
			seek = minuteFloorKey(seek[:0], f, from)
			ok = it.SeekGE(seek)
			continue
		}
		cur = f
		if m >= to {
			if filter >= 0 || f == math.MaxInt64 {
				break
			}
			// Done with this filter: jump to the next one.
			seek = minuteFloorKey(seek[:0], f+1, from)
			ok = it.SeekGE(seek)
			continue
		}
		n, err := decodeCount(it.Value())
		if err != nil {
			_ = it.Close()
			return err
		}
		if err := fn(f, m, ad, n); err != nil {
			_ = it.Close()
			return err
		}
		ok = it.Next()
	}
	return closeIter(it)
}

func minuteFloorKey(dst []byte, filter, minute int64) []byte {
	dst = append(dst, prefixByMinute)
	dst = putInt64(dst, filter)
	return putInt64(dst, minute)
}

func closeIter(it *pebble.Iterator) error {
	if err := it.Close(); err != nil {
		return fmt.Errorf("store: iterator: %w", err)
	}
	return nil
}

// pebbleLogger routes Pebble's log lines into slog.
type pebbleLogger struct{ log *slog.Logger }

func (l pebbleLogger) Infof(format string, args ...any) {
	l.log.Debug(fmt.Sprintf(format, args...))
}

func (l pebbleLogger) Errorf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...))
}

func (l pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.log.Error(msg)
	panic(errors.New("pebble: " + msg))
}

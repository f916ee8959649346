package store

import (
	"bytes"
	"context"
	"fmt"
	"math"

	"github.com/cockroachdb/pebble"
)

// deleteChunk is how many counts one retention batch deletes: bounded
// batches, and a look at the context between them. A variable so tests
// exercise several batches on small data.
var deleteChunk = 10000

// DeleteBefore deletes the counts of every minute before minute and
// returns how many (filter, minute, ad) counts it deleted. It reads only
// what it deletes: per filter, the minute-major keys before minute are one
// contiguous run, deleted with DeleteRange. While legacy ad-major keys may
// be stored (keys.go), each minute-major key names its ad-major copy,
// deleted in the same batch and first, so an interrupted pass (ctx done, a
// crash) leaves nothing the next pass does not find; once none is left,
// passes stop looking. Counts merged into an expired minute while a pass
// runs are deleted by the next pass.
func (d *DB) DeleteBefore(ctx context.Context, minute int64) (int, error) {
	it, err := d.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixByMinute}, UpperBound: []byte{prefixByMinute + 1}})
	if err != nil {
		return 0, fmt.Errorf("store: iterate counts: %w", err)
	}
	defer it.Close()
	b := d.db.NewBatch()
	defer func() { _ = b.Close() }()
	commit := func() error {
		if b.Empty() {
			return nil
		}
		if err := b.Commit(pebble.NoSync); err != nil {
			return fmt.Errorf("store: delete expired counts: %w", err)
		}
		_ = b.Close()
		b = d.db.NewBatch()
		return ctx.Err()
	}
	deleted := 0
	var adk []byte
	legacy := d.legacy.Load()
	for ok := it.First(); ok; {
		f, _, _, err := decodeMinuteKey(it.Key())
		if err != nil {
			return deleted, err
		}
		lo, hi := minuteFloorKey(nil, f, math.MinInt64), minuteFloorKey(nil, f, minute)
		pending := false // keys in [lo, the current key) to range-delete
		for ok = it.SeekGE(lo); ok && bytes.Compare(it.Key(), hi) < 0; ok = it.Next() {
			_, m, ad, err := decodeMinuteKey(it.Key())
			if err != nil {
				return deleted, err
			}
			if legacy {
				adk = adKey(adk[:0], f, string(ad), m)
				if err := b.Delete(adk, nil); err != nil {
					return deleted, fmt.Errorf("store: batch delete: %w", err)
				}
			}
			deleted++
			pending = true
			if deleted%deleteChunk == 0 {
				// This key's ad-major copy goes now, its minute-major
				// one with the next range.
				next := bytes.Clone(it.Key())
				if err := b.DeleteRange(lo, next, nil); err != nil {
					return deleted, fmt.Errorf("store: batch delete range: %w", err)
				}
				if err := commit(); err != nil {
					return deleted, err
				}
				lo = next
			}
		}
		if pending {
			if err := b.DeleteRange(lo, hi, nil); err != nil {
				return deleted, fmt.Errorf("store: batch delete range: %w", err)
			}
		}
		if f == math.MaxInt64 {
			break
		}
		ok = it.SeekGE(minuteFloorKey(nil, f+1, math.MinInt64))
	}
	if err := commit(); err != nil {
		return deleted, err
	}
	if err := it.Error(); err != nil {
		return deleted, fmt.Errorf("store: iterator: %w", err)
	}
	if legacy {
		left, err := d.hasLegacyKeys()
		if err != nil {
			return deleted, err
		}
		d.legacy.Store(left)
	}
	return deleted, nil
}

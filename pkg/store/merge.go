package store

import (
	"io"
	"sync"

	"github.com/cockroachdb/pebble"
)

// sumMergerName is persisted in Pebble's OPTIONS file: never change it for
// an existing format.
const sumMergerName = "adclick.sum.int64.v1"

// sumMerger adds 8-byte little-endian int64 operands. Addition is
// associative and commutative, so partial merges during compaction are exact.
var sumMerger = &pebble.Merger{
	Name: sumMergerName,
	Merge: func(_, value []byte) (pebble.ValueMerger, error) {
		n, err := decodeCount(value)
		if err != nil {
			return nil, err
		}
		s := sumPool.Get().(*sumValue)
		s.n = n
		return s, nil
	},
}

// sumValue is one merge in progress. Merges run for every merged key of
// every flush and compaction (millions after each minute closes), so they
// are pooled: Finish hands out the value's bytes with the sumValue as their
// closer, and Pebble closes it once done with them.
type sumValue struct {
	n   int64
	buf [8]byte
}

var sumPool = sync.Pool{New: func() any { return new(sumValue) }}

func (s *sumValue) MergeNewer(value []byte) error { return s.add(value) }
func (s *sumValue) MergeOlder(value []byte) error { return s.add(value) }

func (s *sumValue) add(value []byte) error {
	n, err := decodeCount(value)
	if err != nil {
		return err
	}
	s.n += n
	return nil
}

func (s *sumValue) Finish(bool) ([]byte, io.Closer, error) {
	return countValue(s.buf[:0], s.n), s, nil
}

// Close returns the sumValue to the pool: Pebble no longer reads the bytes
// Finish returned.
func (s *sumValue) Close() error {
	sumPool.Put(s)
	return nil
}

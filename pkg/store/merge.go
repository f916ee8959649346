package store

import (
	"io"

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
		return &sumValue{n: n}, nil
	},
}

type sumValue struct{ n int64 }

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
	return countValue(make([]byte, 0, 8), s.n), nil, nil
}

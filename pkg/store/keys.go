package store

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Key spaces. Each key starts with one of these bytes.
//
//	aggregator meta:  'a' | aggregator id                        -> meta value
//	count, minute-major: 'm' | filter | minute | len(ad) | ad  -> int64 sum (merge)
//	count, ad-major (legacy): 'c' | filter | len(ad) | ad | minute -> int64 sum
//
// Earlier versions also wrote every count ad-major; nothing reads those
// keys any more, and DeleteBefore removes them with their minutes, so a
// store written by such a version needs no migration: they age out.
//
// filter and minute are 8-byte big-endian with the sign bit flipped, so byte
// order is numeric order; len(ad) is a uvarint, so an ad id may hold any byte
// and the (filter, ad) prefix of one ad is never a prefix of another's.
const (
	prefixAgg      = 'a'
	prefixByAd     = 'c'
	prefixByMinute = 'm'
)

// ErrCorrupt reports a key or value that does not decode.
var ErrCorrupt = errors.New("store: corrupt record")

func putInt64(dst []byte, v int64) []byte {
	return binary.BigEndian.AppendUint64(dst, uint64(v)^(1<<63))
}

func getInt64(b []byte) int64 { return int64(binary.BigEndian.Uint64(b) ^ (1 << 63)) }

func appendAd(dst []byte, ad string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(ad)))
	return append(dst, ad...)
}

// readAd decodes a length-prefixed ad id at the start of b and returns it
// and the rest of b. The ad aliases b.
func readAd(b []byte) (ad []byte, rest []byte, err error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || uint64(len(b)-k) < n {
		return nil, nil, fmt.Errorf("%w: bad ad length", ErrCorrupt)
	}
	return b[k : k+int(n)], b[k+int(n):], nil
}

// adKey appends the legacy ad-major key of (filter, ad, minute).
func adKey(dst []byte, filter int64, ad string, minute int64) []byte {
	dst = append(dst, prefixByAd)
	dst = putInt64(dst, filter)
	dst = appendAd(dst, ad)
	return putInt64(dst, minute)
}

// minuteKey appends the minute-major key of (filter, minute, ad).
func minuteKey(dst []byte, filter, minute int64, ad string) []byte {
	dst = append(dst, prefixByMinute)
	dst = putInt64(dst, filter)
	dst = putInt64(dst, minute)
	return appendAd(dst, ad)
}

// decodeMinuteKey splits a minute-major key. The ad aliases key.
func decodeMinuteKey(key []byte) (filter, minute int64, ad []byte, err error) {
	if len(key) < 17 || key[0] != prefixByMinute {
		return 0, 0, nil, fmt.Errorf("%w: minute key %x", ErrCorrupt, key)
	}
	filter, minute = getInt64(key[1:9]), getInt64(key[9:17])
	ad, rest, err := readAd(key[17:])
	if err != nil || len(rest) != 0 {
		return 0, 0, nil, fmt.Errorf("%w: minute key %x", ErrCorrupt, key)
	}
	return filter, minute, ad, nil
}

func aggKey(dst []byte, id string) []byte {
	dst = append(dst, prefixAgg)
	return append(dst, id...)
}

// countValue encodes a count as 8 bytes little-endian.
func countValue(dst []byte, n int64) []byte { return binary.LittleEndian.AppendUint64(dst, uint64(n)) }

func decodeCount(v []byte) (int64, error) {
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: count value of %d bytes", ErrCorrupt, len(v))
	}
	return int64(binary.LittleEndian.Uint64(v)), nil
}

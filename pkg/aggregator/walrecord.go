package aggregator

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"
)

// A write-ahead log record holds the clicks one Forward batch accepted:
// a version byte, then per click: minute (varint, delta to the previous
// click's), click_id and ad_id (uvarint length, bytes), the matched filter
// ids (uvarint count, varints). Filters are logged rather than recomputed,
// so a replay counts a click exactly as it was counted, whatever the filter
// set is by then.
const recordVersion = 1

// appendClick appends one accepted click to a record begun with startRecord.
func appendClick(rec []byte, prevMinute, minute int64, id, ad string, filters []int64) []byte {
	rec = binary.AppendVarint(rec, minute-prevMinute)
	rec = binary.AppendUvarint(rec, uint64(len(id)))
	rec = append(rec, id...)
	rec = binary.AppendUvarint(rec, uint64(len(ad)))
	rec = append(rec, ad...)
	rec = binary.AppendUvarint(rec, uint64(len(filters)))
	for _, f := range filters {
		rec = binary.AppendVarint(rec, f)
	}
	return rec
}

func startRecord(rec []byte) []byte { return append(rec[:0], recordVersion) }

var errBadRecord = errors.New("malformed click record")

// recordReader iterates the clicks of a record. The id and ad strings
// point into the record: valid while it is.
type recordReader struct {
	buf     []byte
	minute  int64
	id, ad  string
	filters []int64
	err     error
}

func newRecordReader(rec []byte, filters []int64) (*recordReader, error) {
	if len(rec) == 0 || rec[0] != recordVersion {
		return nil, fmt.Errorf("%w: unknown version", errBadRecord)
	}
	return &recordReader{buf: rec[1:], filters: filters[:0]}, nil
}

// next reads the next click; false at the end or on an error (see err).
func (r *recordReader) next() bool {
	if len(r.buf) == 0 || r.err != nil {
		return false
	}
	d, n := binary.Varint(r.buf)
	if n <= 0 {
		r.err = fmt.Errorf("%w: minute", errBadRecord)
		return false
	}
	r.minute += d
	r.buf = r.buf[n:]
	var ok bool
	if r.id, ok = r.str(); !ok {
		return false
	}
	if r.ad, ok = r.str(); !ok {
		return false
	}
	nf, n := binary.Uvarint(r.buf)
	if n <= 0 || nf > uint64(len(r.buf)) {
		r.err = fmt.Errorf("%w: filter count", errBadRecord)
		return false
	}
	r.buf = r.buf[n:]
	r.filters = r.filters[:0]
	for range nf {
		f, n := binary.Varint(r.buf)
		if n <= 0 {
			r.err = fmt.Errorf("%w: filter id", errBadRecord)
			return false
		}
		r.filters = append(r.filters, f)
		r.buf = r.buf[n:]
	}
	return true
}

func (r *recordReader) str() (string, bool) {
	l, n := binary.Uvarint(r.buf)
	if n <= 0 || l > uint64(len(r.buf)-n) {
		r.err = fmt.Errorf("%w: string length", errBadRecord)
		return "", false
	}
	b := r.buf[n : n+int(l)]
	r.buf = r.buf[n+int(l):]
	if len(b) == 0 {
		return "", true
	}
	return unsafe.String(&b[0], len(b)), true
}

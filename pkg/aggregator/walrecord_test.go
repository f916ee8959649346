package aggregator

import (
	"errors"
	"slices"
	"testing"
)

type loggedClick struct {
	minute  int64
	id, ad  string
	filters []int64
}

// decodeClicks reads every click of a log record, or the error.
func decodeClicks(rec []byte) ([]loggedClick, error) {
	r, err := newRecordReader(rec, nil)
	if err != nil {
		return nil, err
	}
	var out []loggedClick
	for r.next() {
		out = append(out, loggedClick{r.minute, r.id, r.ad, slices.Clone(r.filters)})
	}
	return out, r.err
}

func encodeClicks(cs []loggedClick) []byte {
	rec := startRecord(nil)
	var prev int64
	for _, c := range cs {
		rec = appendClick(rec, prev, c.minute, c.id, c.ad, c.filters)
		prev = c.minute
	}
	return rec
}

// FuzzClickRecord checks the decoder of the aggregator's log records (what
// recovery replays): it never panics, fails only with errBadRecord, and what
// it decodes encodes to a record that decodes the same (records are written
// by appendClick; varints that are not minimal decode the same).
func FuzzClickRecord(f *testing.F) {
	f.Add(encodeClicks([]loggedClick{
		{minute: 1_772_366_400, id: "click-1", ad: "ad-1", filters: []int64{1, 3}},
		{minute: 1_772_366_460, id: "click-2", ad: "ad-2"},
		{minute: 1_772_366_400, id: "", ad: "a\x00\xff", filters: []int64{-1, 1 << 40}},
	}))
	f.Add(encodeClicks(nil))
	f.Add([]byte{recordVersion, 0x80})
	f.Add([]byte{recordVersion, 0x02, 0x05, 'a'})
	f.Add([]byte{recordVersion, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte{recordVersion + 1})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, rec []byte) {
		clicks, err := decodeClicks(rec)
		if err != nil {
			if !errors.Is(err, errBadRecord) {
				t.Fatalf("error %v is not errBadRecord", err)
			}
			return
		}
		again, err := decodeClicks(encodeClicks(clicks))
		if err != nil || !slices.EqualFunc(again, clicks, func(a, b loggedClick) bool {
			return a.minute == b.minute && a.id == b.id && a.ad == b.ad && slices.Equal(a.filters, b.filters)
		}) {
			t.Fatalf("re-encoded record decodes to %v, %v; want %v", again, err, clicks)
		}
	})
}

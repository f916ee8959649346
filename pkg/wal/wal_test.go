package wal

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/adclick/adclick/pkg/diskfile"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// open opens the log in dir and returns it with the replayed payloads.
func open(t *testing.T, dir string, cfg Config, deps Deps) (*WAL, [][]byte, Recovery) {
	t.Helper()
	if deps.Log == nil {
		deps.Log = quiet()
	}
	var got [][]byte
	w, rec, err := Open(dir, cfg, deps, func(_ uint64, p []byte) error {
		got = append(got, bytes.Clone(p))
		return nil
	})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = w.Close() })
	return w, got, rec
}

func payload(i int) []byte {
	return []byte(fmt.Sprintf("record-%04d-%s", i, strings.Repeat("x", i%50)))
}

func appendSync(t *testing.T, w *WAL, p []byte) Pos {
	t.Helper()
	pos, err := w.Append(p)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	if err := w.Wait(pos.End); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	return pos
}

func wantPayloads(t *testing.T, got [][]byte, n int) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("replayed %d records, want %d", len(got), n)
	}
	for i := range got {
		if !bytes.Equal(got[i], payload(i)) {
			t.Fatalf("record %d = %q, want %q", i, got[i], payload(i))
		}
	}
}

func TestRoundTripAcrossSegments(t *testing.T) {
	for _, direct := range []bool{true, false} {
		t.Run(fmt.Sprintf("direct=%v", direct), func(t *testing.T) {
			old := writeDirect
			writeDirect = direct
			t.Cleanup(func() { writeDirect = old })
			testRoundTripAcrossSegments(t)
		})
	}
}

func testRoundTripAcrossSegments(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{SegmentBytes: 256}
	w, got, _ := open(t, dir, cfg, Deps{})
	wantPayloads(t, got, 0)
	segs := map[uint64]bool{}
	for i := range 40 {
		segs[appendSync(t, w, payload(i)).Segment] = true
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if len(segs) < 5 {
		t.Fatalf("40 records over 256-byte segments used %d segments", len(segs))
	}
	w2, got, rec := open(t, dir, cfg, Deps{})
	wantPayloads(t, got, 40)
	if rec.TornFile != "" || rec.Segments != len(segs) {
		t.Fatalf("recovery %+v, want %d segments and no torn tail", rec, len(segs))
	}
	// Appends after a reopen go to a new segment and survive the next one.
	appendSync(t, w2, payload(40))
	if err := w2.Close(); err != nil {
		t.Fatal(err)
	}
	_, got, _ = open(t, dir, cfg, Deps{})
	wantPayloads(t, got, 41)
}

// lastSegment returns the path of the highest segment in dir.
func lastSegment(t *testing.T, dir string) string {
	t.Helper()
	segs, err := listSegments(dir)
	if err != nil || len(segs) == 0 {
		t.Fatalf("segments %v, %v", segs, err)
	}
	return filepath.Join(dir, segmentName(segs[len(segs)-1]))
}

func TestTornTail(t *testing.T) {
	tests := []struct {
		name    string
		damage  func(t *testing.T, path string) // damages the last record(s) of the file
		survive int                             // records of the 10 written that survive
	}{
		{name: "truncated mid-record", survive: 9, damage: func(t *testing.T, path string) {
			fi, _ := os.Stat(path)
			if err := os.Truncate(path, fi.Size()-3); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "truncated inside the header", survive: 9, damage: func(t *testing.T, path string) {
			fi, _ := os.Stat(path)
			if err := os.Truncate(path, fi.Size()-int64(HeaderSize+len(payload(9)))+5); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "garbage appended", survive: 10, damage: func(t *testing.T, path string) {
			appendBytes(t, path, []byte("\x13\x00\x00\x00garbage that is no record"))
		}},
		{name: "zeros appended", survive: 10, damage: func(t *testing.T, path string) {
			appendBytes(t, path, make([]byte, 4096))
		}},
		{name: "byte flipped in the last record", survive: 9, damage: func(t *testing.T, path string) {
			flip(t, path, -2)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := Config{SegmentBytes: 1 << 20}
			w, _, _ := open(t, dir, cfg, Deps{})
			for i := range 10 {
				appendSync(t, w, payload(i))
			}
			w.Close()
			path := lastSegment(t, dir)
			tt.damage(t, path)
			w2, got, rec := open(t, dir, cfg, Deps{})
			wantPayloads(t, got, tt.survive)
			if rec.TornFile != path || rec.TornBytes == 0 {
				t.Fatalf("recovery %+v: torn tail of %s not reported", rec, path)
			}
			if fi, _ := os.Stat(path); fi.Size() != rec.TornOffset {
				t.Fatalf("file is %d bytes after cutting at %d", fi.Size(), rec.TornOffset)
			}
			appendSync(t, w2, payload(tt.survive))
			w2.Close()
			_, got, rec = open(t, dir, cfg, Deps{})
			wantPayloads(t, got, tt.survive+1)
			if rec.TornFile != "" {
				t.Fatalf("second reopen reported a torn tail: %+v", rec)
			}
		})
	}
}

func appendBytes(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
}

// flip inverts the byte at off (negative: from the end).
func flip(t *testing.T, path string, off int) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if off < 0 {
		off += len(data)
	}
	data[off] ^= 0xff
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestMidLogCorruption(t *testing.T) {
	tests := []struct {
		name     string
		segBytes int64
		file     func(segs []uint64) uint64 // which segment to damage
	}{
		{name: "bad record followed by good ones in the last segment", segBytes: 1 << 20, file: func(s []uint64) uint64 { return s[len(s)-1] }},
		{name: "bad record in a segment that is not the last", segBytes: 200, file: func(s []uint64) uint64 { return s[0] }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := Config{SegmentBytes: tt.segBytes}
			w, _, _ := open(t, dir, cfg, Deps{})
			for i := range 10 {
				appendSync(t, w, payload(i))
			}
			w.Close()
			segs, _ := listSegments(dir)
			path := filepath.Join(dir, segmentName(tt.file(segs)))
			flip(t, path, HeaderSize+2) // inside the first record's payload
			before, _ := os.ReadFile(path)
			_, _, err := Open(dir, cfg, Deps{Log: quiet()}, func(uint64, []byte) error { return nil })
			if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "offset 0") || !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open over a damaged middle: %v; want ErrCorrupt naming %s at offset 0", err, path)
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
				t.Fatal("Open changed a file it refused")
			}
		})
	}
}

func TestGroupCommit(t *testing.T) {
	dir := t.TempDir()
	slow := func(f *os.File) error { time.Sleep(2 * time.Millisecond); return f.Sync() }
	w, _, _ := open(t, dir, Config{}, Deps{Sync: slow})
	const writers, each = 32, 20
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := range each {
				appendSync(t, w, payload(g*each+i))
			}
		})
	}
	wg.Wait()
	st := w.Stats()
	if st.Appends != writers*each || st.Fsyncs*4 > st.Appends {
		t.Fatalf("stats %+v: want %d appends sharing at most a quarter as many fsyncs", st, writers*each)
	}
	w.Close()
	_, got, _ := open(t, dir, Config{}, Deps{})
	if len(got) != writers*each {
		t.Fatalf("replayed %d records, want %d", len(got), writers*each)
	}
}

func TestSyncInterval(t *testing.T) {
	w, _, _ := open(t, t.TempDir(), Config{SyncInterval: time.Hour, SyncBytes: 300}, Deps{})
	var ends []uint64
	for i := range 10 { // 10 * ~26 bytes: below SyncBytes
		pos, err := w.Append(payload(i))
		if err != nil {
			t.Fatal(err)
		}
		ends = append(ends, pos.End)
	}
	if w.Stats().Fsyncs != 0 {
		t.Fatal("synced before the interval or size was reached")
	}
	pos, _ := w.Append(bytes.Repeat([]byte("y"), 300)) // crosses SyncBytes: syncs at once
	if err := w.Wait(pos.End); err != nil {
		t.Fatal(err)
	}
	if st := w.Stats(); st.Fsyncs != 1 {
		t.Fatalf("stats %+v: want one fsync for the whole group", st)
	}
}

// syncRecorder is a Deps.Sync that notes when each fsync began and holds
// the first one until release is closed.
type syncRecorder struct {
	mu      sync.Mutex
	starts  []time.Time
	release chan struct{}
}

func (r *syncRecorder) sync(f *os.File) error {
	r.mu.Lock()
	r.starts = append(r.starts, time.Now())
	first := len(r.starts) == 1
	r.mu.Unlock()
	if first {
		<-r.release
	}
	return f.Sync()
}

func (r *syncRecorder) started() []time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.starts)
}

// twoInAGroup appends one record, waits for the writer to be in its
// (held) fsync, appends two more behind it and releases it: the two then
// make the second group, a group of more than one, taken after the
// returned time.
func twoInAGroup(t *testing.T, w *WAL, r *syncRecorder) time.Time {
	t.Helper()
	if _, err := w.Append(payload(0)); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); len(r.started()) == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the first append was not synced")
		}
	}
	if _, err := w.Append(payload(1)); err != nil {
		t.Fatal(err)
	}
	pos, err := w.Append(payload(2))
	if err != nil {
		t.Fatal(err)
	}
	released := time.Now()
	close(r.release)
	if err := w.Wait(pos.End); err != nil {
		t.Fatal(err)
	}
	return released
}

// waitWithin fails the test unless the log is durable through end within d.
func waitWithin(t *testing.T, w *WAL, end uint64, d time.Duration) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- w.Wait(end) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(d):
		t.Fatalf("not durable through %d within %s", end, d)
	}
}

func TestGroupPeriodGathersUnderLoad(t *testing.T) {
	const period = 200 * time.Millisecond
	r := &syncRecorder{release: make(chan struct{})}
	w, _, _ := open(t, t.TempDir(), Config{GroupPeriod: period}, Deps{Sync: r.sync})
	released := twoInAGroup(t, w, r)
	// The last group held two appends: the next one begins a period after
	// it, and that group was taken after released.
	pos, err := w.Append(payload(3))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Wait(pos.End); err != nil {
		t.Fatal(err)
	}
	st := r.started()
	if len(st) != 3 {
		t.Fatalf("%d fsyncs, want 3 (one per group)", len(st))
	}
	if gap := st[2].Sub(released); gap < period {
		t.Fatalf("the group after a group of two was synced %s after that group could begin; want at least %s", gap, period)
	}
}

func TestGroupPeriodLoneAppendsDoNotWait(t *testing.T) {
	r := &syncRecorder{release: make(chan struct{})}
	close(r.release)
	w, _, _ := open(t, t.TempDir(), Config{GroupPeriod: time.Hour, SyncBytes: 300}, Deps{Sync: r.sync})
	// Each append is a group of one: none waits for the hour.
	for i := range 5 {
		pos, err := w.Append(payload(i))
		if err != nil {
			t.Fatal(err)
		}
		waitWithin(t, w, pos.End, 30*time.Second)
	}
	if st := w.Stats(); st.Fsyncs != 5 {
		t.Fatalf("stats %+v: want an fsync per lone append", st)
	}
}

func TestGroupPeriodSyncsAFullGroupAtOnce(t *testing.T) {
	r := &syncRecorder{release: make(chan struct{})}
	w, _, _ := open(t, t.TempDir(), Config{GroupPeriod: time.Hour, SyncBytes: 300}, Deps{Sync: r.sync})
	twoInAGroup(t, w, r)
	// The next group waits for the hour, unless SyncBytes wait.
	small, err := w.Append(payload(3))
	if err != nil {
		t.Fatal(err)
	}
	big, err := w.Append(bytes.Repeat([]byte("y"), 300))
	if err != nil {
		t.Fatal(err)
	}
	waitWithin(t, w, big.End, 30*time.Second)
	if err := w.Wait(small.End); err != nil {
		t.Fatal(err)
	}
	if n := len(r.started()); n != 3 {
		t.Fatalf("%d fsyncs, want 3: the small and the big append share one", n)
	}
}

func TestFsyncFailureFailsTheLog(t *testing.T) {
	var fail sync.Mutex
	failing := false
	hook := func(f *os.File) error {
		fail.Lock()
		defer fail.Unlock()
		if failing {
			return errors.New("injected EIO")
		}
		return f.Sync()
	}
	w, _, _ := open(t, t.TempDir(), Config{}, Deps{Sync: hook})
	appendSync(t, w, payload(0))
	fail.Lock()
	failing = true
	fail.Unlock()
	pos, err := w.Append(payload(1))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Wait(pos.End); err == nil || !strings.Contains(err.Error(), "injected EIO") {
		t.Fatalf("Wait after a failed fsync: %v, want the fsync error", err)
	}
	select {
	case <-w.Failed():
	case <-time.After(5 * time.Second):
		t.Fatal("Failed not closed")
	}
	fail.Lock()
	failing = false // even when the disk recovers, the log stays failed
	fail.Unlock()
	if _, err := w.Append(payload(2)); err == nil {
		t.Fatal("Append after a failed fsync succeeded")
	}
	if err := w.Sync(); err == nil {
		t.Fatal("Sync after a failed fsync succeeded")
	}
}

func TestRemoveBefore(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{SegmentBytes: 100}
	w, _, _ := open(t, dir, cfg, Deps{})
	var pos []Pos
	for i := range 12 {
		pos = append(pos, appendSync(t, w, payload(i)))
	}
	segs := w.Segments()
	if len(segs) < 4 {
		t.Fatalf("segments %v, want several", segs)
	}
	// The segment being written is never removed, whatever is asked.
	n, err := w.RemoveBefore(pos[11].Segment + 10)
	if err != nil || n != len(segs)-1 {
		t.Fatalf("RemoveBefore removed %d (%v), want %d", n, err, len(segs)-1)
	}
	if got := w.Segments(); len(got) != 1 || got[0] != pos[11].Segment {
		t.Fatalf("segments left %v, want [%d]", got, pos[11].Segment)
	}
	w.Close()
	if ents, _ := filepath.Glob(filepath.Join(dir, "*"+removingSuffix)); len(ents) != 0 {
		t.Fatalf("removed segments left after Close: %v", ents)
	}
	// A segment taken out of the log but not yet deleted when the process
	// died (garbage here: it must not be replayed) is deleted at Open.
	leftover := filepath.Join(dir, segmentName(pos[0].Segment)+removingSuffix)
	if err := os.WriteFile(leftover, []byte("not a record"), 0o644); err != nil {
		t.Fatal(err)
	}
	w2, got, _ := open(t, dir, cfg, Deps{})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(leftover); errors.Is(err, os.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not deleted after Open", leftover)
		}
		time.Sleep(5 * time.Millisecond)
	}
	w2.Close()
	var want [][]byte
	for i := range 12 {
		if pos[i].Segment == pos[11].Segment {
			want = append(want, payload(i))
		}
	}
	if len(got) != len(want) || !bytes.Equal(got[len(got)-1], payload(11)) {
		t.Fatalf("replayed %q, want %q", got, want)
	}
}

func TestAbandonDropsUnsynced(t *testing.T) {
	dir := t.TempDir()
	w, _, _ := open(t, dir, Config{SyncInterval: time.Hour, SyncBytes: 1 << 20}, Deps{})
	pos, _ := w.Append(payload(0))
	done := make(chan error, 1)
	go func() { done <- w.Wait(pos.End) }()
	w.Abandon()
	if err := <-done; err == nil {
		t.Fatal("an unsynced record was acknowledged after Abandon")
	}
	_, got, _ := open(t, dir, Config{}, Deps{})
	wantPayloads(t, got, 0)
}

// TestDirectPadding: a segment written around the page cache ends in the
// zero padding of its last block until it is finished; after a crash
// (Abandon) the log must still end after its last record, with no torn
// tail reported, and the padding cut.
func TestDirectPadding(t *testing.T) {
	dir := t.TempDir()
	w, _, _ := open(t, dir, Config{}, Deps{})
	var end uint64
	for i := range 300 { // each synced: the last block is rewritten each time
		end = appendSync(t, w, payload(i)).End
	}
	path := lastSegment(t, dir)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if w.seg.dw == nil {
		t.Skipf("no direct I/O in %s", dir)
	}
	if fi.Size()%diskfile.DirectAlign != 0 || fi.Size() <= int64(end) {
		t.Fatalf("segment of %d bytes holding %d: want it padded to a multiple of %d", fi.Size(), end, diskfile.DirectAlign)
	}
	w.Abandon()
	_, got, rec := open(t, dir, Config{}, Deps{})
	wantPayloads(t, got, 300)
	if rec.TornFile != "" {
		t.Fatalf("padding reported as a torn tail: %+v", rec)
	}
	if fi, _ := os.Stat(path); fi.Size() != int64(end) {
		t.Fatalf("segment is %d bytes after recovery, want %d (padding cut)", fi.Size(), end)
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add([]byte{})
	f.Add(AppendRecord(nil, []byte("hello")))
	f.Add(AppendRecord(AppendRecord(nil, []byte("a")), []byte("b")))
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4, 5})
	f.Add(AppendRecord(nil, []byte("torn"))[:9])
	f.Fuzz(func(t *testing.T, data []byte) {
		p, n, err := DecodeRecord(data)
		if err != nil {
			if p != nil || n != 0 || !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrTruncated) {
				t.Fatalf("error %v with payload %q, n %d", err, p, n)
			}
		} else {
			if n > len(data) || !bytes.Equal(AppendRecord(nil, p), data[:n]) {
				t.Fatalf("decoded %q (%d bytes) does not re-encode to its input", p, n)
			}
		}
		if len(data) > 0 && len(data) <= MaxRecordBytes {
			enc := AppendRecord(nil, data)
			p, n, err := DecodeRecord(enc)
			if err != nil || n != len(enc) || !bytes.Equal(p, data) {
				t.Fatalf("round trip of %q: %q, %d, %v", data, p, n, err)
			}
		}
	})
}

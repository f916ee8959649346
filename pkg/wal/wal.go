package wal

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/adclick/adclick/pkg/diskfile"
	"github.com/adclick/adclick/pkg/remover"
	"github.com/prometheus/client_golang/prometheus"
)

// ErrClosed is returned by appends after Close or Abandon.
var ErrClosed = errors.New("wal: closed")

// Deps are the log's collaborators.
type Deps struct {
	Log *slog.Logger
	Reg prometheus.Registerer
	// Sync makes a segment file durable; nil means f.Sync. Tests inject failures.
	Sync func(f *os.File) error
}

// Pos is where an appended record lives.
type Pos struct {
	Segment uint64 // the segment file holding the record
	End     uint64 // log offset just past the record; Wait(End) waits for it
}

// Recovery tells what Open found.
type Recovery struct {
	Segments   int    // segment files read
	Records    int    // valid records replayed
	TornFile   string // file whose tail was cut off, if any
	TornOffset int64  // where it was cut
	TornBytes  int64  // how many bytes were cut
}

// Stats are counters since Open.
type Stats struct{ Appends, Fsyncs uint64 }

// WAL is an append-only, segmented, group-committed log. Safe for
// concurrent use: Append and Wait from any goroutine; one goroutine of its
// own writes and syncs.
type WAL struct {
	dir    string
	cfg    Config
	log    *slog.Logger
	m      *metrics
	syncFn func(*os.File) error

	appends, fsyncs atomic.Uint64

	mu        sync.Mutex
	cond      *sync.Cond // on mu: durable moved or err set
	pending   []chunk    // appended, not yet taken by the writer
	spare     [][]byte   // buffers to reuse
	appended  uint64     // log offset past the last appended record
	durable   uint64     // log offset through which everything is synced
	appendSeg uint64     // segment the next append goes to
	segBytes  int64      // bytes appended to appendSeg
	openSeg   uint64     // segment the writer has open or opens next; lower ones are complete and synced
	segs      []uint64   // segment files on disk, ascending
	err       error      // sticky: set once a write or sync failed, or at Close
	closed    bool
	abandoned bool

	kick, full, quit, done, failed chan struct{}
	rm                             *remover.Remover // deletes removed segments, paced
	seg                            *segment         // writer-owned: the segment being written
	fseg                           uint64
}

type chunk struct {
	seg  uint64
	data []byte
}

// Open reads every record of the log in dir in order, calling replay with
// the segment and payload (valid only during the call), cuts off a torn
// tail, and returns the log ready for appends to a new segment.
func Open(dir string, cfg Config, deps Deps, replay func(seg uint64, payload []byte) error) (*WAL, Recovery, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, Recovery{}, err
	}
	if deps.Log == nil {
		deps.Log = slog.Default()
	}
	w := &WAL{
		dir: dir, cfg: cfg, log: deps.Log.With("component", "wal", "dir", dir), m: newMetrics(deps.Reg), syncFn: deps.Sync,
		kick: make(chan struct{}, 1), full: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{}), failed: make(chan struct{}),
	}
	if w.syncFn == nil {
		w.syncFn = (*os.File).Sync
	}
	w.cond = sync.NewCond(&w.mu)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, Recovery{}, fmt.Errorf("wal: create %s: %w", dir, err)
	}
	segs, err := listSegments(dir)
	if err != nil {
		return nil, Recovery{}, err
	}
	var rec Recovery
	for i, seg := range segs {
		if err := w.replaySegment(seg, i == len(segs)-1, replay, &rec); err != nil {
			return nil, rec, err
		}
	}
	w.segs = segs
	w.appendSeg = 1
	if len(segs) > 0 {
		w.appendSeg = segs[len(segs)-1] + 1
	}
	w.openSeg = w.appendSeg
	w.m.segments.Set(float64(len(segs)))
	w.rm = remover.New(w.log, 0, 0)
	leftovers, _ := filepath.Glob(filepath.Join(dir, "*.wal"+removingSuffix))
	for _, p := range leftovers {
		w.rm.Remove(p) // taken out of the log before a restart
	}
	go w.run()
	return w, rec, nil
}

func segmentName(seg uint64) string { return fmt.Sprintf("%016x.wal", seg) }

func listSegments(dir string) ([]uint64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("wal: list %s: %w", dir, err)
	}
	var segs []uint64
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".wal")
		if !ok || e.IsDir() {
			continue
		}
		seg, err := strconv.ParseUint(name, 16, 64)
		if err != nil {
			return nil, fmt.Errorf("wal: unexpected file %s in %s", e.Name(), dir)
		}
		segs = append(segs, seg)
	}
	slices.Sort(segs)
	return segs, nil
}

// replaySegment replays one segment; a bad record is cut off when it ends
// the log, and is an error otherwise.
func (w *WAL) replaySegment(seg uint64, last bool, replay func(uint64, []byte) error, rec *Recovery) error {
	path := filepath.Join(w.dir, segmentName(seg))
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("wal: read %s: %w", path, err)
	}
	rec.Segments++
	off := 0
	for off < len(data) {
		payload, n, derr := DecodeRecord(data[off:])
		if derr == nil {
			if err := replay(seg, payload); err != nil {
				return fmt.Errorf("wal: replay record at %s offset %d: %w", path, off, err)
			}
			rec.Records++
			off += n
			continue
		}
		if isPadding(data[off:]) {
			// The log ends here, where a direct write's padding begins.
			if err := truncateSync(path, int64(off)); err != nil {
				return err
			}
			break
		}
		if !last {
			return fmt.Errorf("wal: %w in %s at offset %d, and later segments follow: the log is damaged in the middle; refusing to start (restore the data dir or move the damaged files away, accepting the loss)", derr, path, off)
		}
		if next := validRecordAfter(data, off+1); next >= 0 {
			return fmt.Errorf("wal: %w in %s at offset %d, followed by a valid record at offset %d: the log is damaged in the middle; refusing to start (if this follows a power loss, truncating the file at offset %d drops only unacknowledged writes)", derr, path, off, next, off)
		}
		w.log.Warn("cutting off torn tail of the write-ahead log (writes not acknowledged before a crash)", "file", path, "offset", off, "bytes", len(data)-off, "reason", derr)
		w.m.tornTails.Inc()
		rec.TornFile, rec.TornOffset, rec.TornBytes = path, int64(off), int64(len(data)-off)
		if err := truncateSync(path, int64(off)); err != nil {
			return err
		}
		break
	}
	return nil
}

func truncateSync(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("wal: open %s to cut its torn tail: %w", path, err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("wal: truncate %s at %d: %w", path, size, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("wal: sync %s after truncating: %w", path, err)
	}
	return nil
}

// Append adds payload (not empty) as one record and returns its position.
// The record is durable once Wait(pos.End) returns nil. Append copies
// payload and makes no syscall.
func (w *WAL) Append(payload []byte) (Pos, error) {
	if len(payload) == 0 || len(payload) > MaxRecordBytes {
		return Pos{}, fmt.Errorf("wal: record of %d bytes; want 1 to %d", len(payload), MaxRecordBytes)
	}
	size := HeaderSize + len(payload)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return Pos{}, w.err
	}
	if w.segBytes > 0 && w.segBytes+int64(size) > w.cfg.SegmentBytes {
		w.appendSeg++
		w.segBytes = 0
	}
	if n := len(w.pending); n == 0 || w.pending[n-1].seg != w.appendSeg {
		var buf []byte
		if k := len(w.spare); k > 0 {
			buf, w.spare = w.spare[k-1][:0], w.spare[:k-1]
		}
		w.pending = append(w.pending, chunk{seg: w.appendSeg, data: buf})
	}
	c := &w.pending[len(w.pending)-1]
	c.data = AppendRecord(c.data, payload)
	w.segBytes += int64(size)
	w.appended += uint64(size)
	w.appends.Add(1)
	signal(w.kick)
	if (w.cfg.SyncInterval > 0 || w.cfg.GroupPeriod > 0) && int(w.appended-w.durable) >= w.cfg.SyncBytes {
		signal(w.full)
	}
	return Pos{Segment: w.appendSeg, End: w.appended}, nil
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Wait blocks until the log is durable through end, or fails.
func (w *WAL) Wait(end uint64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.durable < end && w.err == nil {
		w.cond.Wait()
	}
	if w.durable >= end {
		return nil
	}
	return w.err
}

// Appended is the end of everything appended so far: Wait(Appended())
// returns once every earlier record is durable.
func (w *WAL) Appended() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.appended
}

// Sync waits until everything appended so far is durable.
func (w *WAL) Sync() error {
	w.mu.Lock()
	end := w.appended
	w.mu.Unlock()
	return w.Wait(end)
}

// Full reports whether more than Config.MaxBufferBytes are appended and not
// yet durable: appends outrun the disk.
func (w *WAL) Full() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return int(w.appended-w.durable) >= w.cfg.MaxBufferBytes
}

// Failed is closed once a write or fsync failed; Err tells why.
func (w *WAL) Failed() <-chan struct{} { return w.failed }

// Err is the error that failed or closed the log, or nil.
func (w *WAL) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Segment is the segment the next append goes to; lower segments receive
// no more appends.
func (w *WAL) Segment() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.appendSeg
}

// Segments lists the segment files on disk.
func (w *WAL) Segments() []uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.segs)
}

// Stats returns counters since Open.
func (w *WAL) Stats() Stats { return Stats{Appends: w.appends.Load(), Fsyncs: w.fsyncs.Load()} }

// RemoveBefore deletes the segment files below seg that are complete (no
// longer written) and returns how many it took out of the log.
//
// Each is renamed to <segment>.wal.removing (a name Open does not replay),
// the rename made durable, and the file handed to a background remover
// that shrinks it a few megabytes at a time before unlinking it (package
// remover): with -o discard, unlinking a 64 MiB segment at once took
// 60-106 ms and made every fsync on the disk, this log's included, wait
// 40-60 ms behind it. Nothing here holds the log's lock while touching the
// disk. A segment whose rename fails has already left the list; it stays
// on disk under its name, is replayed at the next Open like any segment
// there, and is removed by a later RemoveBefore after that.
func (w *WAL) RemoveBefore(seg uint64) (int, error) {
	w.mu.Lock()
	var doomed []uint64
	for len(w.segs) > 0 && w.segs[0] < seg && w.segs[0] < w.openSeg {
		doomed = append(doomed, w.segs[0])
		w.segs = w.segs[1:]
	}
	w.m.segments.Set(float64(len(w.segs)))
	w.mu.Unlock()
	if len(doomed) == 0 {
		return 0, nil
	}
	var renamed []string
	var err error
	for _, s := range doomed {
		path := filepath.Join(w.dir, segmentName(s))
		if rerr := os.Rename(path, path+removingSuffix); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = fmt.Errorf("wal: remove %s: %w", path, rerr)
			break
		}
		renamed = append(renamed, path+removingSuffix)
	}
	// A segment shrunk under its own name would read as a log damaged
	// in the middle after a crash: the renames are durable first.
	if serr := diskfile.SyncDir(w.dir); serr != nil {
		return 0, serr
	}
	for _, p := range renamed {
		w.rm.Remove(p)
	}
	return len(renamed), err
}

// removingSuffix marks a segment taken out of the log whose removal may
// not have finished; Open deletes such files.
const removingSuffix = ".removing"

// Close syncs what was appended and closes the log.
func (w *WAL) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	w.mu.Unlock()
	close(w.quit)
	<-w.done
	w.rm.Close()
	w.mu.Lock()
	err := w.err
	if err == nil {
		w.err = ErrClosed
	}
	w.cond.Broadcast()
	w.mu.Unlock()
	if w.seg != nil {
		// The writer synced everything appended; a direct segment still
		// ends in padding, cut here (and synced) so the file is exact.
		if err == nil {
			if ferr := w.seg.finish(); ferr != nil {
				err = ferr
			} else if serr := w.sync(w.seg.file()); serr != nil {
				err = serr
			}
		}
		if cerr := w.seg.close(); cerr != nil && err == nil {
			err = fmt.Errorf("wal: close: %w", cerr)
		}
	}
	return err
}

// Abandon stops the log like a kill -9 would: appends not yet written are
// dropped, nothing more is synced, files are closed. For crash tests.
func (w *WAL) Abandon() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.closed, w.abandoned = true, true
	w.pending = nil
	if w.err == nil {
		w.err = ErrClosed
	}
	w.cond.Broadcast()
	w.mu.Unlock()
	close(w.quit)
	<-w.done
	w.rm.Abandon()
	if w.seg != nil {
		_ = w.seg.close()
	}
}

// run is the writer: it takes what was appended, writes it and fsyncs,
// one group at a time.
func (w *WAL) run() {
	defer close(w.done)
	var lastStart time.Time // when the last group was taken
	var lastGroup uint64    // appends in it
	var taken uint64        // appends taken so far (w.appends then)
	for {
		select {
		case <-w.kick:
		case <-w.quit:
		}
		var gather time.Duration
		switch {
		case w.cfg.SyncInterval > 0:
			gather = w.cfg.SyncInterval
		case w.cfg.GroupPeriod > 0 && lastGroup > 1:
			// Appends came faster than the last write and fsync: gather
			// until a period has passed since that group began, so each
			// fsync covers more of them. A lone append after a quiet spell
			// (a group of one) is synced at once.
			gather = w.cfg.GroupPeriod - time.Since(lastStart)
		}
		if gather > 0 {
			w.m.gathers.Inc()
			t := time.NewTimer(gather)
			select {
			case <-t.C:
			case <-w.full:
			case <-w.quit:
			}
			t.Stop()
		}
		w.mu.Lock()
		if w.abandoned {
			w.mu.Unlock()
			return
		}
		chunks, end, closing := w.pending, w.appended, w.closed
		n := w.appends.Load() // counted under mu, with the append
		lastGroup, taken, lastStart = n-taken, n, time.Now()
		w.pending = nil
		w.m.bufferBytes.Set(float64(end - w.durable))
		w.mu.Unlock()
		if len(chunks) > 0 {
			err := w.write(chunks)
			w.mu.Lock()
			for _, c := range chunks {
				if cap(c.data) <= 4*w.cfg.SyncBytes && len(w.spare) < 4 {
					w.spare = append(w.spare, c.data[:0])
				}
			}
			if err != nil {
				if w.err == nil || w.err == ErrClosed {
					w.err = err
				}
				w.cond.Broadcast()
				w.mu.Unlock()
				w.m.failed.Set(1)
				w.log.Error("write-ahead log failed: no more appends are acknowledged; restart the node", "err", err)
				close(w.failed)
				return
			}
			w.durable = end
			w.cond.Broadcast()
			w.mu.Unlock()
		}
		if closing {
			w.mu.Lock()
			empty := len(w.pending) == 0
			w.mu.Unlock()
			if empty {
				return
			}
			signal(w.kick)
		}
	}
}

// write writes chunks in order, moving to new segment files as they say,
// and fsyncs. A segment is complete and synced before the next one starts.
func (w *WAL) write(chunks []chunk) error {
	for _, c := range chunks {
		if w.seg == nil || c.seg != w.fseg {
			if err := w.startSegment(c.seg); err != nil {
				return err
			}
		}
		if err := w.seg.write(c.data); err != nil {
			return err
		}
		w.m.bytes.Add(float64(len(c.data)))
	}
	if err := w.seg.flush(); err != nil {
		return err
	}
	return w.sync(w.seg.file())
}

func (w *WAL) startSegment(seg uint64) error {
	if w.seg != nil {
		if err := w.seg.finish(); err != nil {
			return err
		}
		if err := w.sync(w.seg.file()); err != nil {
			return err
		}
		if err := w.seg.close(); err != nil {
			return fmt.Errorf("wal: close segment %d: %w", w.fseg, err)
		}
	}
	path := filepath.Join(w.dir, segmentName(seg))
	sf, err := createSegment(path)
	if err != nil {
		return err
	}
	w.seg, w.fseg = sf, seg
	if !w.cfg.NoSync {
		if err := diskfile.SyncDir(w.dir); err != nil {
			return err
		}
	}
	w.mu.Lock()
	w.openSeg = seg
	w.segs = append(w.segs, seg)
	w.m.segments.Set(float64(len(w.segs)))
	w.mu.Unlock()
	return nil
}

func (w *WAL) sync(f *os.File) error {
	if w.cfg.NoSync {
		return nil
	}
	t := time.Now()
	if err := w.syncFn(f); err != nil {
		return fmt.Errorf("wal: fsync %s: %w", f.Name(), err)
	}
	w.fsyncs.Add(1)
	w.m.fsyncs.Inc()
	w.m.fsyncTime.Observe(time.Since(t).Seconds())
	return nil
}

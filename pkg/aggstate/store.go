package aggstate

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/adclick/adclick/pkg/dedup"
	"github.com/adclick/adclick/pkg/diskfile"
	"github.com/adclick/adclick/pkg/remover"
	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/bloom"
)

// Key prefixes.
const (
	prefixMeta   = 'm'
	prefixID     = 'd' // 'd' | minute | click_id: ids of late clicks and handed-over ids
	prefixFile   = 'f' // 'f' | minute -> id count: the minute's id file is part of the state
	prefixOutbox = 'o' // 'o' | sequence -> encoded partial
	// 'p' | first sequence -> number of partials: an outbox file holding
	// them is part of the state (outboxfile.go)
	prefixOutboxFile = 'p'
)

// idFileSuffix names a closed minute's id file: <minute>.ids.
const idFileSuffix = ".ids"

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

// Store is the aggregator's Pebble database and its id files. Safe for
// concurrent use; a Batch is used by one goroutine.
type Store struct {
	mu     sync.RWMutex // write-held by Close and while id files come and go
	db     *pebble.DB
	idsDir string
	files  map[int64]*dedup.File // the closed minutes' id files, by minute
	log    *slog.Logger
	rm     *remover.Remover // deletes id files past the late horizon and acknowledged outbox files, paced
	closed bool

	outboxDir   string
	outboxMu    sync.Mutex   // guards outboxFiles
	outboxFiles []outboxFile // the outbox files the database names, by first sequence
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Open opens (creating if needed) the database in dir, the id files in
// idsDir and the outbox files in outboxDir: those the database refers to
// are opened (an id file missing is an error; an outbox file is read by
// Outbox), any other (left by a commit a crash interrupted) is deleted.
func Open(dir, idsDir, outboxDir string, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.Default()
	}
	for _, d := range []string{dir, idsDir, outboxDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("aggstate: create %s: %w", d, err)
		}
	}
	opts := &pebble.Options{
		Logger: pebbleLogger{log.With("component", "pebble")},
		// A closing minute writes millions of click ids in unsynced
		// batches, then one synced commit. Syncing Pebble's log in the
		// background every 1 MiB keeps that final fsync short, so it does
		// not queue the write-ahead log's fsyncs (which acks wait on)
		// behind a gigabyte of dirty pages on the same disk.
		WALBytesPerSync: 1 << 20,
		// The outbox is written and, once every reducer acknowledged it,
		// range-deleted within seconds: in a 32 MiB memtable most of it
		// never reaches an sstable (Pebble's 4 MiB default flushed every
		// closing minute's partials and then compacted their tombstones).
		MemTableSize: 32 << 20,
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
	s := &Store{db: db, idsDir: idsDir, outboxDir: outboxDir, files: make(map[int64]*dedup.File), log: log, rm: remover.New(log, 0, 0)}
	err = s.openIDFiles()
	if err == nil {
		err = s.openOutboxFiles()
	}
	if err != nil {
		s.closeFiles()
		s.rm.Close()
		db.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) idFilePath(minute int64) string {
	return filepath.Join(s.idsDir, strconv.FormatInt(minute, 10)+idFileSuffix)
}

// openIDFiles opens the id files the database refers to and deletes the others.
func (s *Store) openIDFiles() error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixFile}, UpperBound: []byte{prefixFile + 1}})
	if err != nil {
		return fmt.Errorf("aggstate: list id files: %w", err)
	}
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if len(k) != 9 {
			continue
		}
		m := int64(binary.BigEndian.Uint64(k[1:]) ^ 1<<63)
		f, err := dedup.OpenFile(s.idFilePath(m))
		if err != nil {
			it.Close()
			return fmt.Errorf("aggstate: the id file of closed minute %d: %w (the state database refers to it; restore it, or the data dir)", m, err)
		}
		if want := binary.BigEndian.Uint64(it.Value()); uint64(f.Len()) != want || f.Minute() != m {
			f.Close()
			it.Close()
			return fmt.Errorf("aggstate: %w: %s holds %d ids of minute %d, the state database says %d of minute %d", dedup.ErrCorrupt, f.Path(), f.Len(), f.Minute(), want, m)
		}
		s.files[m] = f
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("aggstate: list id files: %w", err)
	}
	return s.removeUnreferenced(s.idsDir, "id", func(name string) bool {
		m, err := strconv.ParseInt(strings.TrimSuffix(name, idFileSuffix), 10, 64)
		return err == nil && strings.HasSuffix(name, idFileSuffix) && s.files[m] != nil
	})
}

// removeUnreferenced deletes the files of dir that no commit refers to
// (referenced says which are), left by commits a crash interrupted, and
// syncs dir if it deleted any; kind names them in messages.
func (s *Store) removeUnreferenced(dir, kind string, referenced func(name string) bool) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("aggstate: %w", err)
	}
	removed := 0
	for _, e := range entries {
		if referenced(e.Name()) {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("aggstate: remove an %s file no commit refers to: %w", kind, err)
		}
		removed++
	}
	if removed > 0 {
		s.log.Info("removed files of commits a restart interrupted", "kind", kind, "files", removed, "dir", dir)
		return diskfile.SyncDir(dir)
	}
	return nil
}

func (s *Store) closeFiles() {
	for _, f := range s.files {
		f.Close()
	}
	s.files = nil
}

// WriteIDFile writes the ids f holds under (closed) minute into the
// minute's id file, synced. It becomes part of the state with the commit
// of a Batch that names it (AddIDFile); until then a restart deletes it.
func (s *Store) WriteIDFile(f *dedup.Frozen, minute int64) (int, error) {
	n, err := f.WriteFile(minute, s.idFilePath(minute))
	if err != nil {
		return 0, fmt.Errorf("aggstate: %w", err)
	}
	return n, nil
}

// IDFiles is the number of id files and the ids they hold.
func (s *Store) IDFiles() (files, ids int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, f := range s.files {
		ids += f.Len()
	}
	return len(s.files), ids
}

// Close closes the database; everything committed stays durable.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.closeFiles()
	s.rm.Close()
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

// Outbox returns the retained partials, encoded (clusterv1.Partial), in
// sequence order: those kept as keys and those of the outbox files.
func (s *Store) Outbox() ([][]byte, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, ErrClosed
	}
	type seqPart struct {
		seq uint64
		p   []byte
	}
	var all []seqPart
	add := func(seq uint64, p []byte) { all = append(all, seqPart{seq, p}) }
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixOutbox}, UpperBound: []byte{prefixOutbox + 1}})
	if err != nil {
		return nil, fmt.Errorf("aggstate: outbox: %w", err)
	}
	for it.First(); it.Valid(); it.Next() {
		if k := it.Key(); len(k) == 9 {
			add(binary.BigEndian.Uint64(k[1:]), slices.Clone(it.Value()))
		}
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("aggstate: outbox: %w", err)
	}
	s.outboxMu.Lock()
	files := slices.Clone(s.outboxFiles)
	s.outboxMu.Unlock()
	for _, f := range files {
		if err := s.readOutboxFile(f, add); err != nil {
			return nil, err
		}
	}
	slices.SortFunc(all, func(a, b seqPart) int { return cmp.Compare(a.seq, b.seq) })
	out := make([][]byte, len(all))
	for i, sp := range all {
		out[i] = sp.p
	}
	return out, nil
}

// Seen reports whether id was persisted as counted in (closed) minute:
// in the minute's id file, or as a key (late clicks, handed-over ids).
func (s *Store) Seen(minute int64, id string) (bool, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return false, ErrClosed
	}
	if f := s.files[minute]; f != nil {
		ok, err := f.Has(id)
		if ok || err != nil {
			return ok, err
		}
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

// EachID calls fn with the click ids of every minute >= from: those of
// the id files, minute by minute in ascending order, then those kept as
// keys likewise; at most batch ids per call (the slice is reused between
// calls).
func (s *Store) EachID(from int64, batch int, fn func(minute int64, ids []string) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	minutes := make([]int64, 0, len(s.files))
	for m := range s.files {
		if m >= from {
			minutes = append(minutes, m)
		}
	}
	slices.Sort(minutes)
	for _, m := range minutes {
		if err := s.files[m].Each(batch, func(ids []string) error { return fn(m, ids) }); err != nil {
			return err
		}
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

// DropOutbox deletes the partials with sequence <= through: keys not
// synced (a drop lost in a crash only makes reducers get no-op resends),
// and the outbox files all of whose partials are at or below through.
func (s *Store) DropOutbox(through uint64) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	if err := s.db.DeleteRange(outboxKey(0), outboxKey(through+1), pebble.NoSync); err != nil {
		return fmt.Errorf("aggstate: drop outbox through %d: %w", through, err)
	}
	s.outboxMu.Lock()
	defer s.outboxMu.Unlock()
	return s.dropOutboxFilesLocked(through)
}

// Batch collects writes committed at once. Not safe for concurrent use.
type Batch struct {
	s     *Store
	b     *pebble.Batch
	key   []byte
	ids   int
	files []int64 // id files this batch makes part of the state
	// outbox files this batch makes part of the state
	outboxFiles []outboxFile
	forget      int64 // id files of minutes before this are dropped after the commit
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

// AddPartial keeps the encoded partial p (clusterv1.Partial) in the
// outbox under its sequence.
func (b *Batch) AddPartial(seq uint64, p []byte) error {
	return b.b.Set(outboxKey(seq), p, nil)
}

// AddIDFile makes minute's id file, written by WriteIDFile with n ids,
// part of the state when the batch commits.
func (b *Batch) AddIDFile(minute int64, n int) {
	_ = b.b.Set(appendMinute([]byte{prefixFile}, minute), binary.BigEndian.AppendUint64(nil, uint64(n)), nil)
	b.files = append(b.files, minute)
}

// SetMeta writes the meta record.
func (b *Batch) SetMeta(m Meta) { _ = b.b.Set([]byte{prefixMeta}, m.encode(), nil) }

// ForgetIDsBefore deletes the ids of every minute before the given one,
// keys and id files (the files once the batch committed).
func (b *Batch) ForgetIDsBefore(minute int64) {
	for _, p := range []byte{prefixID, prefixFile} {
		_ = b.b.DeleteRange(appendMinute([]byte{p}, -1<<63), appendMinute([]byte{p}, minute), nil)
	}
	b.forget = minute
}

// Commit writes the batch, synced, and releases it; then it opens the id
// files the batch added and deletes those it forgot.
func (b *Batch) Commit() error {
	s := b.s
	s.mu.RLock()
	err := b.commitLocked()
	if err == nil && len(b.outboxFiles) > 0 {
		s.outboxMu.Lock()
		s.outboxFiles = append(s.outboxFiles, b.outboxFiles...)
		s.outboxMu.Unlock()
	}
	s.mu.RUnlock()
	if err != nil || len(b.files) == 0 && b.forget == 0 {
		return err
	}
	opened := make(map[int64]*dedup.File, len(b.files))
	for _, m := range b.files {
		f, err := dedup.OpenFile(s.idFilePath(m))
		if err != nil {
			for _, f := range opened {
				f.Close()
			}
			return fmt.Errorf("aggstate: open the id file just committed: %w", err)
		}
		opened[m] = f
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		for _, f := range opened {
			f.Close()
		}
		return ErrClosed
	}
	var drop []*dedup.File
	for m, f := range s.files {
		if m < b.forget {
			drop = append(drop, f)
			delete(s.files, m)
		}
	}
	for m, f := range opened {
		if old := s.files[m]; old != nil {
			old.Close()
		}
		s.files[m] = f
	}
	s.mu.Unlock()
	for _, f := range drop {
		f.Close()
		// Not referred to any more: a file left by a failed or
		// interrupted removal is deleted at the next Open. A minute's id
		// file is hundreds of MB at full speed; deleted at once, its
		// discards would hold every fsync on the disk (package remover).
		s.rm.Remove(f.Path())
	}
	return nil
}

func (b *Batch) commitLocked() error {
	defer b.b.Close()
	if b.s.closed {
		return ErrClosed
	}
	if err := b.b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("aggstate: commit: %w", err)
	}
	return nil
}

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

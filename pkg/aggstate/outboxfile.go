package aggstate

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/adclick/adclick/pkg/diskfile"
	"github.com/cockroachdb/pebble"
)

// A closing minute's partials (tens of MB at full speed) go to an outbox
// file, written sequentially, written back as it grows and fsynced, then
// named by the commit's batch (AddOutboxFile) like an id file; the few
// partials of a correction stay keys in the database. Inserted into
// Pebble, a close's partials cost ~150 ms of CPU at 50k clicks/s (a
// runtime trace of the close: memtable inserts, its log, GC of the batch)
// for data deleted within seconds, and every Forward waited for a CPU
// meanwhile.
//
// File layout: header (magic, first sequence u64, count u32, CRC-32C of
// the first 20 bytes u32), then per partial: length u32, CRC-32C u32,
// bytes. Integers little-endian.
const (
	outboxFileSuffix     = ".partials"
	outboxFileMagic      = "ADOUTBX1"
	outboxFileHeaderSize = 24
	outboxPartHeaderSize = 8
	// OutboxFileMin is the size from which a commit's partials go to an
	// outbox file; smaller sets stay keys (a file costs two more fsyncs).
	OutboxFileMin        = 256 << 10
	outboxWriteBackEvery = 4 << 20
)

// ErrCorruptOutbox is returned when an outbox file does not hold what its
// header and the state database say.
var ErrCorruptOutbox = errors.New("aggstate: corrupt outbox file")

func (s *Store) outboxFilePath(first uint64) string {
	return filepath.Join(s.outboxDir, strconv.FormatUint(first, 10)+outboxFileSuffix)
}

func outboxFileKey(first uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{prefixOutboxFile}, first)
}

// WriteOutboxFile writes parts, the encoded partials of sequences first,
// first+1, ..., as an outbox file, synced. It becomes part of the state
// with the commit of a Batch that names it (AddOutboxFile); until then a
// restart deletes it.
func (s *Store) WriteOutboxFile(first uint64, parts [][]byte) (err error) {
	path := s.outboxFilePath(first)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("aggstate: %w", err)
	}
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("aggstate: close %s: %w", path, cerr)
		}
		if err != nil {
			os.Remove(path)
		}
	}()
	var hdr [outboxFileHeaderSize]byte
	copy(hdr[:], outboxFileMagic)
	binary.LittleEndian.PutUint64(hdr[8:], first)
	binary.LittleEndian.PutUint32(hdr[16:], uint32(len(parts)))
	binary.LittleEndian.PutUint32(hdr[20:], crc32.Checksum(hdr[:20], castagnoli))
	w := diskfile.NewWriter(f, 0, 1<<20, outboxWriteBackEvery)
	w.Write(hdr[:])
	var ph [outboxPartHeaderSize]byte
	for _, p := range parts {
		binary.LittleEndian.PutUint32(ph[0:], uint32(len(p)))
		binary.LittleEndian.PutUint32(ph[4:], crc32.Checksum(p, castagnoli))
		w.Write(ph[:])
		w.Write(p)
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("aggstate: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("aggstate: sync %s: %w", path, err)
	}
	return diskfile.SyncDir(s.outboxDir)
}

// AddOutboxFile makes the outbox file written by WriteOutboxFile(first,
// parts) with n partials part of the state when the batch commits.
func (b *Batch) AddOutboxFile(first uint64, n int) {
	_ = b.b.Set(outboxFileKey(first), binary.BigEndian.AppendUint64(nil, uint64(n)), nil)
	b.outboxFiles = append(b.outboxFiles, outboxFile{first: first, n: uint64(n)})
}

type outboxFile struct{ first, n uint64 }

func (f outboxFile) last() uint64 { return f.first + f.n - 1 }

// readOutboxFile returns the partials of an outbox file the database
// names (first, n), checked against it and their checksums.
func (s *Store) readOutboxFile(of outboxFile, add func(seq uint64, p []byte)) error {
	path := s.outboxFilePath(of.first)
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("aggstate: the outbox file of partials %d..%d: %w (the state database refers to it; restore it, or the data dir)", of.first, of.last(), err)
	}
	bad := func(what string) error {
		return fmt.Errorf("%w: %s: %s (the state database refers to partials %d..%d in it; restore it, or the data dir)", ErrCorruptOutbox, path, what, of.first, of.last())
	}
	if len(b) < outboxFileHeaderSize || string(b[:8]) != outboxFileMagic ||
		binary.LittleEndian.Uint32(b[20:]) != crc32.Checksum(b[:20], castagnoli) {
		return bad("no valid header")
	}
	if first, n := binary.LittleEndian.Uint64(b[8:]), uint64(binary.LittleEndian.Uint32(b[16:])); first != of.first || n != of.n {
		return bad(fmt.Sprintf("it holds %d partials from %d", n, first))
	}
	b = b[outboxFileHeaderSize:]
	for i := range of.n {
		if len(b) < outboxPartHeaderSize {
			return bad(fmt.Sprintf("it ends inside partial %d", of.first+i))
		}
		l, crc := binary.LittleEndian.Uint32(b[0:]), binary.LittleEndian.Uint32(b[4:])
		b = b[outboxPartHeaderSize:]
		if uint64(len(b)) < uint64(l) || crc32.Checksum(b[:l], castagnoli) != crc {
			return bad(fmt.Sprintf("partial %d is damaged", of.first+i))
		}
		add(of.first+i, b[:l:l])
		b = b[l:]
	}
	if len(b) != 0 {
		return bad(fmt.Sprintf("%d bytes follow the last partial", len(b)))
	}
	return nil
}

// openOutboxFiles lists the outbox files the database refers to (read at
// Outbox) and deletes the others, left by commits a crash interrupted.
func (s *Store) openOutboxFiles() error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixOutboxFile}, UpperBound: []byte{prefixOutboxFile + 1}})
	if err != nil {
		return fmt.Errorf("aggstate: list outbox files: %w", err)
	}
	for it.First(); it.Valid(); it.Next() {
		if k, v := it.Key(), it.Value(); len(k) == 9 && len(v) == 8 {
			s.outboxFiles = append(s.outboxFiles, outboxFile{first: binary.BigEndian.Uint64(k[1:]), n: binary.BigEndian.Uint64(v)})
		}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("aggstate: list outbox files: %w", err)
	}
	return s.removeUnreferenced(s.outboxDir, "outbox", func(name string) bool {
		first, err := strconv.ParseUint(strings.TrimSuffix(name, outboxFileSuffix), 10, 64)
		return err == nil && strings.HasSuffix(name, outboxFileSuffix) &&
			slices.ContainsFunc(s.outboxFiles, func(f outboxFile) bool { return f.first == first })
	})
}

// dropOutboxFilesLocked forgets the outbox files whose partials are all
// at or below through: their keys are deleted, synced (a file must not
// go while a restart could still look for it), then the files, paced.
func (s *Store) dropOutboxFilesLocked(through uint64) error {
	var drop []outboxFile
	keep := s.outboxFiles[:0]
	for _, f := range s.outboxFiles {
		if f.last() <= through {
			drop = append(drop, f)
		} else {
			keep = append(keep, f)
		}
	}
	if len(drop) == 0 {
		return nil
	}
	b := s.db.NewBatch()
	for _, f := range drop {
		_ = b.Delete(outboxFileKey(f.first), nil)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		b.Close()
		s.outboxFiles = append(keep, drop...)
		return fmt.Errorf("aggstate: drop outbox files through %d: %w", through, err)
	}
	b.Close()
	s.outboxFiles = keep
	for _, f := range drop {
		s.rm.Remove(s.outboxFilePath(f.first))
	}
	return nil
}

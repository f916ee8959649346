package wal

import (
	"errors"
	"fmt"
	"os"

	"github.com/adclick/adclick/pkg/diskfile"
)

// segment is the file the writer appends to. Where the file system allows,
// it is written around the page cache (diskfile.DirectWriter): the log is
// read only at recovery, and a busy node writes tens of MB a second to it,
// every page of which cost the kernel a fresh page-cache page (on a VM
// that returns freed memory to its host, a host fault each: 2.5 s of
// system CPU per GiB written, against 0.17 s direct). A direct segment's
// last block is written padded with zeros and rewritten, completed, by
// the next write; finish cuts the padding once the segment is complete.
// The rewrite repeats the block's earlier bytes unchanged, so a write of
// it torn by a power loss can only lose what it adds, which nothing has
// acknowledged yet (as when the kernel writes back a page of a buffered
// file). A segment left padded by a crash is read back correctly
// (replaySegment).
type segment struct {
	f  *os.File               // the buffered descriptor; nil when direct
	dw *diskfile.DirectWriter // nil when buffered
}

// writeDirect is false in tests of the page cache path.
var writeDirect = true

// createSegment creates the segment file at path, which must not exist.
func createSegment(path string) (*segment, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("wal: create segment: %w", err)
	}
	if writeDirect {
		dw, err := diskfile.OpenDirect(path, 0)
		if err == nil {
			_ = f.Close()
			return &segment{dw: dw}, nil
		}
		if !errors.Is(err, diskfile.ErrNoDirect) {
			_ = f.Close()
			return nil, fmt.Errorf("wal: open segment %s for direct writes: %w", path, err)
		}
	}
	return &segment{f: f}, nil
}

// file is the descriptor to fsync.
func (s *segment) file() *os.File {
	if s.dw != nil {
		return s.dw.File()
	}
	return s.f
}

// write appends p; a direct segment keeps it buffered until flush, or
// until it has a MiB.
func (s *segment) write(p []byte) error {
	if s.dw != nil {
		s.dw.Write(p)
		return nil
	}
	if _, err := s.f.Write(p); err != nil {
		return fmt.Errorf("wal: write %s: %w", s.f.Name(), err)
	}
	return nil
}

// flush writes everything written so far to the file (to be fsynced).
func (s *segment) flush() error {
	if s.dw != nil {
		return s.dw.Flush()
	}
	return nil
}

// finish flushes and cuts a direct segment's zero padding: the segment is
// complete, the caller fsyncs it.
func (s *segment) finish() error {
	if s.dw == nil {
		return nil
	}
	if err := s.dw.Flush(); err != nil {
		return err
	}
	if err := s.dw.File().Truncate(s.dw.Offset()); err != nil {
		return fmt.Errorf("wal: cut the padding of %s: %w", s.dw.File().Name(), err)
	}
	return nil
}

func (s *segment) close() error {
	if s.dw != nil {
		return s.dw.Close()
	}
	return s.f.Close()
}

// isPadding tells whether the bytes after a segment's last record are the
// zero padding of a direct write's last block (a crash, or Abandon, before
// the segment was finished).
func isPadding(rest []byte) bool {
	if len(rest) >= diskfile.DirectAlign {
		return false
	}
	for _, b := range rest {
		if b != 0 {
			return false
		}
	}
	return true
}

// Package diskfile writes big files without stalling the other writers of
// the disk: dirty pages are written back every few MB as a file grows
// (WriteBack, Writer), so a final fsync, or the write-ahead log's fsync
// that acknowledgements wait on, never queues behind hundreds of MB of
// them; a file that is written once and seldom read goes around the page
// cache (DirectWriter); and a directory is fsynced after a rename or
// removal (SyncDir).
package diskfile

import (
	"fmt"
	"os"
)

// SyncDir fsyncs a directory, so a creation, rename or removal in it is durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("diskfile: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("diskfile: sync directory %s: %w", dir, err)
	}
	return nil
}

// Writer writes sequentially from an offset through a buffer, writing
// back every `every` bytes. Errors are sticky: Write does nothing after
// one, and Flush returns it.
type Writer struct {
	f           *os.File
	off, synced int64
	every       int64
	buf         []byte
	err         error
}

// NewWriter writes to f from off, buffering bufSize bytes and writing
// back every `every` bytes.
func NewWriter(f *os.File, off int64, bufSize int, every int64) *Writer {
	return &Writer{f: f, off: off, synced: off, every: every, buf: make([]byte, 0, bufSize)}
}

// Write appends p.
func (w *Writer) Write(p []byte) {
	for len(p) > 0 && w.err == nil {
		n := min(len(p), cap(w.buf)-len(w.buf))
		w.buf = append(w.buf, p[:n]...)
		p = p[n:]
		if len(w.buf) == cap(w.buf) {
			w.flush()
		}
	}
}

// Offset is where the next byte written goes.
func (w *Writer) Offset() int64 { return w.off + int64(len(w.buf)) }

// Flush writes what is buffered and returns the first error met.
func (w *Writer) Flush() error {
	w.flush()
	return w.err
}

func (w *Writer) flush() {
	if w.err != nil || len(w.buf) == 0 {
		return
	}
	if _, w.err = w.f.WriteAt(w.buf, w.off); w.err != nil {
		return
	}
	w.off += int64(len(w.buf))
	w.buf = w.buf[:0]
	if w.off-w.synced >= w.every {
		w.err = WriteBack(w.f, w.synced, w.off-w.synced)
		w.synced = w.off
	}
}

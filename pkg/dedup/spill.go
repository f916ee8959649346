package dedup

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/adclick/adclick/pkg/diskfile"
)

// spillSuffix names the file a minute's full arena chunks go to while the
// minute is open; Frozen.WriteFile finishes it under the minute's final
// name. A restart deletes such files (the log rebuilds the minute).
const spillSuffix = ".ids.open"

// spillQueue is how many full chunks (1 MiB each) may wait for the disk
// before an Add that fills another waits too.
const spillQueue = 16

// errBox holds the first error of a set's spillers; it is shared by the
// set and every bucket it ever had, so a failure is seen by the owner.
type errBox struct {
	mu  sync.Mutex
	err error
}

func (e *errBox) set(err error) {
	e.mu.Lock()
	if e.err == nil {
		e.err = err
	}
	e.mu.Unlock()
}

func (e *errBox) get() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err
}

// spiller writes a bucket's full chunks to its file at their arena
// offsets, on a goroutine of its own, each followed by a write-back of
// its range, so a closing minute has only its index left to write and the
// disk sees a steady stream instead of a burst that would delay the
// write-ahead log's fsyncs. The owner drops a chunk from memory (reap)
// only once it is written; until then lookups read it in memory.
type spiller struct {
	f        *os.File
	path     string
	jobs     chan spillJob
	done     chan struct{}
	closed   bool
	finished bool         // renamed to the minute's id file: it stays
	written  atomic.Int64 // chunks [0, written) are in the file
	released int          // owner: chunks [0, released) were dropped from memory
	box      *errBox
}

type spillJob struct {
	ci int
	c  []byte
}

func newSpiller(dir string, minute int64, box *errBox) *spiller {
	sp := &spiller{box: box, path: filepath.Join(dir, strconv.FormatInt(minute, 10)+spillSuffix), done: make(chan struct{})}
	f, err := os.OpenFile(sp.path, os.O_CREATE|os.O_TRUNC|os.O_RDWR, 0o644)
	if err != nil {
		box.set(fmt.Errorf("dedup: spill minute %d: %w", minute, err))
		close(sp.done)
		sp.closed = true
		return sp
	}
	sp.f = f
	sp.jobs = make(chan spillJob, spillQueue)
	go sp.run()
	return sp
}

func (sp *spiller) run() {
	defer close(sp.done)
	failed := false
	for j := range sp.jobs {
		if failed {
			continue
		}
		off := arenaStart + int64(j.ci)*chunkSize
		if _, err := sp.f.WriteAt(j.c, off); err != nil {
			sp.box.set(fmt.Errorf("dedup: spill to %s: %w", sp.path, err))
			failed = true
			continue
		}
		if err := diskfile.WriteBack(sp.f, off, int64(len(j.c))); err != nil {
			sp.box.set(fmt.Errorf("dedup: spill to %s: %w", sp.path, err))
			failed = true
			continue
		}
		sp.written.Store(int64(j.ci) + 1)
	}
}

// put hands the full chunk ci to the writer; chunks come in order. After
// a failure the chunk simply stays in memory.
func (sp *spiller) put(ci int, c []byte) {
	if sp.closed || sp.box.get() != nil {
		return
	}
	sp.jobs <- spillJob{ci: ci, c: c}
}

// reap drops from memory the chunks the writer has written.
func (sp *spiller) reap(chunks [][]byte) {
	for w := int(sp.written.Load()); sp.released < w; sp.released++ {
		putChunk(chunks[sp.released])
		chunks[sp.released] = nil
	}
}

// stop waits for the writer to finish what it was given.
func (sp *spiller) stop() {
	if !sp.closed {
		sp.closed = true
		close(sp.jobs)
	}
	<-sp.done
}

// discard stops the writer and deletes the file, unless it was finished
// under its final name.
func (sp *spiller) discard() {
	sp.stop()
	if sp.f != nil {
		sp.f.Close()
		sp.f = nil
		if !sp.finished {
			os.Remove(sp.path)
		}
	}
}

// read reads spilled chunk ci (n bytes) into buf.
func (sp *spiller) read(buf []byte, ci int, n uint32) ([]byte, error) {
	if _, err := sp.f.ReadAt(buf[:n], arenaStart+int64(ci)*chunkSize); err != nil {
		err = fmt.Errorf("dedup: read back %s: %w", sp.path, err)
		sp.box.set(err)
		return nil, err
	}
	return buf[:n], nil
}

// equal compares id with the id spilled at (ci, off). A read error is
// recorded in the set's error (the owner must not acknowledge anything
// then) and answers false.
func (sp *spiller) equal(ci, off int, id string) bool {
	ok, err := equalAt(sp.f, arenaStart+int64(ci)*chunkSize+int64(off), id)
	if err != nil {
		sp.box.set(fmt.Errorf("dedup: read back %s: %w", sp.path, err))
	}
	return ok
}

// chunkPool recycles 1 MiB arena chunks: spilled ones come back here.
var chunkPool = sync.Pool{New: func() any { return new([chunkSize]byte) }}

func getChunk(size int) []byte {
	if size == chunkSize {
		return chunkPool.Get().(*[chunkSize]byte)[:0]
	}
	return make([]byte, 0, size)
}

func putChunk(c []byte) {
	if cap(c) == chunkSize {
		chunkPool.Put((*[chunkSize]byte)(c[:chunkSize]))
	}
}

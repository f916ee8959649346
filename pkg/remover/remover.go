// Package remover deletes large files in the background, a few megabytes
// at a time.
//
// Why: on a file system that discards freed blocks (ext4 mounted with
// -o discard, common on cloud disks), unlinking a file of hundreds of MB
// issues its discards when the journal commits, and every fsync on that
// file system waits behind them. Measured on this project's dev machine:
// unlinking a 64 MiB write-ahead log segment took 60-106 ms, and the other
// logs' fsyncs (which acknowledge clicks) went from ~5 ms to 40-60 ms while
// a closed minute's segments were deleted. Truncating the file by Step and
// pausing in between frees a little per journal commit instead.
package remover

import (
	"errors"
	"log/slog"
	"os"
	"sync"
	"time"
)

// Defaults: 4 MiB per step and 20 ms between steps, 200 MB/s at most per
// Remover, several times what a node writes.
const (
	DefaultStep  = 4 << 20
	DefaultPause = 20 * time.Millisecond
)

// Remover deletes queued files one after another on a goroutine of its
// own. Safe for concurrent use.
type Remover struct {
	step  int64
	pause time.Duration
	log   *slog.Logger

	mu      sync.Mutex
	queue   []string
	kick    chan struct{}
	quit    chan struct{}
	done    chan struct{}
	stopped bool
}

// New starts a Remover that shrinks files by step bytes with pause in
// between (defaults for values <= 0).
func New(log *slog.Logger, step int64, pause time.Duration) *Remover {
	if log == nil {
		log = slog.Default()
	}
	if step <= 0 {
		step = DefaultStep
	}
	if pause <= 0 {
		pause = DefaultPause
	}
	r := &Remover{step: step, pause: pause, log: log,
		kick: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	go r.run()
	return r
}

// Remove queues path for deletion and returns at once. The caller must no
// longer need the file: it shrinks from its end before it is unlinked. A
// file that is already gone is fine. After Close, path is deleted at once.
func (r *Remover) Remove(path string) {
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		r.removeNow(path)
		return
	}
	r.queue = append(r.queue, path)
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Pending is the number of files queued or being deleted.
func (r *Remover) Pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.queue)
}

// Close deletes what is still queued at once (a shutdown does not wait for
// the pacing) and stops the goroutine.
func (r *Remover) Close() {
	for _, p := range r.stop() {
		r.removeNow(p)
	}
}

// Abandon stops the goroutine like a crash would: files still queued
// stay on disk (their owner finds them at its next start). Later Removes
// delete at once.
func (r *Remover) Abandon() { r.stop() }

// stop ends the goroutine and returns what was still queued, once: a
// second stop returns nothing.
func (r *Remover) stop() []string {
	r.mu.Lock()
	first := !r.stopped
	r.stopped = true
	r.mu.Unlock()
	if first {
		close(r.quit)
	}
	<-r.done
	r.mu.Lock()
	defer r.mu.Unlock()
	rest := r.queue
	r.queue = nil
	return rest
}

func (r *Remover) run() {
	defer close(r.done)
	for {
		r.mu.Lock()
		var path string
		if len(r.queue) > 0 {
			path = r.queue[0]
		}
		r.mu.Unlock()
		if path == "" {
			select {
			case <-r.kick:
				continue
			case <-r.quit:
				return
			}
		}
		if !r.shrink(path) {
			return // quit: Close deletes the rest, this file included
		}
		r.removeNow(path)
		r.mu.Lock()
		r.queue = r.queue[1:]
		r.mu.Unlock()
	}
}

// shrink truncates path step by step down to one step; false if quit
// came first.
func (r *Remover) shrink(path string) bool {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return true // gone, or not ours to open: removeNow reports it
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return true
	}
	for size := st.Size(); size > r.step; {
		size -= r.step
		if err := f.Truncate(size); err != nil {
			r.log.Warn("cannot shrink a file before deleting it; deleting it whole", "file", path, "err", err)
			return true
		}
		select {
		case <-time.After(r.pause):
		case <-r.quit:
			return false
		}
	}
	return true
}

func (r *Remover) removeNow(path string) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		r.log.Warn("cannot delete a file no longer needed; it stays on disk", "file", path, "err", err)
	}
}

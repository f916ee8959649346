package remover

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func makeFile(t *testing.T, dir, name string, size int64) string {
	t.Helper()
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(make([]byte, size)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func gone(p string) bool {
	_, err := os.Stat(p)
	return errors.Is(err, os.ErrNotExist)
}

func size(t *testing.T, p string) int64 {
	st, err := os.Stat(p)
	if err != nil {
		return -1
	}
	return st.Size()
}

func TestRemovesQueuedFilesInOrder(t *testing.T) {
	dir := t.TempDir()
	r := New(nil, 64<<10, time.Millisecond)
	defer r.Close()
	a := makeFile(t, dir, "a", 1<<20)
	b := makeFile(t, dir, "b", 100) // smaller than a step: unlinked whole
	r.Remove(a)
	r.Remove(b)
	r.Remove(filepath.Join(dir, "never-existed"))
	waitFor(t, "both files deleted", func() bool { return gone(a) && gone(b) && r.Pending() == 0 })
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("left in dir: %v", ents)
	}
}

func TestShrinksStepByStep(t *testing.T) {
	dir := t.TempDir()
	r := New(nil, 1<<20, time.Hour) // one step, then a pause longer than the test
	a := makeFile(t, dir, "a", 10<<20)
	r.Remove(a)
	waitFor(t, "the first step", func() bool { return size(t, a) == 9<<20 })
	if got := r.Pending(); got != 1 {
		t.Fatalf("Pending = %d during the pause, want 1", got)
	}
	// Close does not wait out the pacing: the file is deleted at once.
	r.Close()
	if !gone(a) {
		t.Fatalf("%s still exists after Close (size %d)", a, size(t, a))
	}
	// After Close, Remove deletes at once.
	b := makeFile(t, dir, "b", 3<<20)
	r.Remove(b)
	if !gone(b) {
		t.Fatal("Remove after Close did not delete the file")
	}
	r.Close() // twice is fine
}

// TestAbandonLeavesQueuedFiles: like a crash, Abandon deletes nothing more;
// the owner finds the file at its next start.
func TestAbandonLeavesQueuedFiles(t *testing.T) {
	dir := t.TempDir()
	r := New(nil, 1<<20, time.Hour)
	a := makeFile(t, dir, "a", 4<<20)
	r.Remove(a)
	waitFor(t, "the first step", func() bool { return size(t, a) == 3<<20 })
	r.Abandon()
	if gone(a) {
		t.Fatal("Abandon deleted a queued file")
	}
	r.Abandon()
	r.Close() // after Abandon: nothing queued any more
	if gone(a) {
		t.Fatal("Close after Abandon deleted a file Abandon had dropped")
	}
}

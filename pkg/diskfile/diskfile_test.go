package diskfile

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestWriterWritesEverythingInOrder: pieces of every size, across buffer
// and write-back boundaries, land at their offsets after the start.
func TestWriterWritesEverythingInOrder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const start = 100
	w := NewWriter(f, start, 64, 200)
	r := rand.New(rand.NewPCG(1, 2))
	var want bytes.Buffer
	for range 300 {
		p := make([]byte, r.IntN(150))
		for i := range p {
			p[i] = byte(r.Uint32())
		}
		w.Write(p)
		want.Write(p)
		if got := w.Offset(); got != start+int64(want.Len()) {
			t.Fatalf("offset %d, want %d", got, start+want.Len())
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[start:], want.Bytes()) || len(got) != start+want.Len() {
		t.Fatalf("file holds %d bytes, not what was written (%d after %d)", len(got), want.Len(), start)
	}
	if err := SyncDir(filepath.Dir(path)); err != nil {
		t.Fatal(err)
	}
}

// TestWriterErrorIsSticky: after a failed write nothing more is written
// and Flush reports the failure.
func TestWriterErrorIsSticky(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	f.Close() // writes now fail
	w := NewWriter(f, 0, 8, 1<<20)
	w.Write(make([]byte, 20))
	w.Write(make([]byte, 20))
	if err := w.Flush(); err == nil {
		t.Fatal("writes to a closed file reported no error")
	}
}

// TestDirectWriter writes pieces of random sizes around the page cache
// after bytes already in the file, then reads the file back through it.
func TestDirectWriter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	head := bytes.Repeat([]byte("h"), 3*DirectAlign)
	if err := os.WriteFile(path, head, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenDirect(path, 100); err == nil {
		t.Fatal("OpenDirect from an unaligned offset: no error")
	}
	start := int64(2 * DirectAlign) // over part of what is there
	w, err := OpenDirect(path, start)
	if errors.Is(err, ErrNoDirect) {
		t.Skipf("no direct I/O in %s", filepath.Dir(path))
	}
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(3, 4))
	want := bytes.NewBuffer(slices.Clone(head[:start]))
	for want.Len() < int(start)+3*directBufSize+777 {
		p := make([]byte, r.IntN(100_000))
		for i := range p {
			p[i] = byte(r.Uint32())
		}
		w.Write(p)
		want.Write(p)
		if got := w.Offset(); got != int64(want.Len()) {
			t.Fatalf("offset %d, want %d", got, want.Len())
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	end := w.Offset()
	if end != int64(want.Len()) {
		t.Fatalf("offset after Flush %d, want %d", end, want.Len())
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got)%DirectAlign != 0 || len(got) < want.Len() || len(got) >= want.Len()+DirectAlign {
		t.Fatalf("file of %d bytes after writing %d: want it padded to the next multiple of %d", len(got), want.Len(), DirectAlign)
	}
	if !bytes.Equal(got[:want.Len()], want.Bytes()) || !bytes.Equal(got[want.Len():], make([]byte, len(got)-want.Len())) {
		t.Fatal("file does not hold what was written, then zeros")
	}
}

package diskfile

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
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

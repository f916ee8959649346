package dedup

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/adclick/adclick/pkg/diskfile"
)

// frozenOf adds ids under minute to a fresh set and detaches it.
func frozenOf(minute int64, ids []string) *Frozen {
	s := New()
	for _, id := range ids {
		s.Add(minute, id)
	}
	return s.Detach(minute + 60)
}

// TestFileRoundTrip writes a minute with many ids (several arena chunks,
// growing shards), the empty id, long ids kept in overflow and forced hash
// collisions, then looks every id up in the file, and ids that are not there.
func TestFileRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		ids     []string
		collide bool
	}{
		{name: "empty minute"},
		{name: "one id", ids: []string{"a"}},
		{name: "empty, long and prefix ids", ids: []string{"", "ab", "a", "abc", strings.Repeat("x", maxArenaID), strings.Repeat("y", maxArenaID+1), strings.Repeat("z", 5000)}},
		{name: "many ids over several chunks", ids: manyIDs(60000, 40)},
		{name: "all on one hash", ids: manyIDs(300, 3), collide: true},
	}
	for _, tt := range tests {
		for _, direct := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/direct=%v", tt.name, direct), func(t *testing.T) {
				testFileRoundTrip(t, tt.ids, tt.collide, direct)
			})
		}
	}
}

// testFileRoundTrip is one case of TestFileRoundTrip; direct is whether
// the file's tail may be written around the page cache.
func testFileRoundTrip(t *testing.T, ids []string, collide, direct bool) {
	old := writeDirect
	writeDirect = direct
	t.Cleanup(func() { writeDirect = old })
	if collide {
		old := hashID
		hashID = func(string) uint64 { return 1 << 63 }
		t.Cleanup(func() { hashID = old })
	}
	f := frozenOf(120, ids)
	path := filepath.Join(t.TempDir(), "120.ids")
	n, err := f.WriteFile(120, path)
	if err != nil {
		t.Fatal(err)
	}
	if n != len(ids) {
		t.Fatalf("wrote %d ids, want %d", n, len(ids))
	}
	if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
		t.Fatalf("temporary file left behind: %v", err)
	}
	idf, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer idf.Close()
	if idf.Minute() != 120 || idf.Len() != len(ids) {
		t.Fatalf("minute %d len %d, want 120 and %d", idf.Minute(), idf.Len(), len(ids))
	}
	for _, id := range ids {
		if ok, err := idf.Has(id); !ok || err != nil {
			t.Fatalf("Has(%.20q) = %v, %v; want true", id, ok, err)
		}
	}
	for _, id := range []string{"absent", "a-", strings.Repeat("x", maxArenaID-1), "click-0000000-x", strings.Repeat("z", 4999)} {
		if slices.Contains(ids, id) {
			continue
		}
		if ok, err := idf.Has(id); ok || err != nil {
			t.Fatalf("Has(%.20q) = %v, %v; want false", id, ok, err)
		}
	}
	var got []string
	if err := idf.Each(1000, func(ids []string) error {
		if len(ids) > 1000 {
			t.Fatalf("batch of %d ids, want at most 1000", len(ids))
		}
		got = append(got, ids...)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := slices.Clone(ids)
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("Each gave %d ids, want %d (first difference matters)", len(got), len(want))
	}
	// Where the slots start says which path wrote them.
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	first := binary.LittleEndian.Uint64(raw[fileHeaderSize:])
	wantAlign := uint64(8)
	if direct && directWorks(t, filepath.Dir(path)) {
		wantAlign = diskfile.DirectAlign
	}
	if first%wantAlign != 0 || first < arenaStart {
		t.Fatalf("slots start at %d, want a multiple of %d after the arena", first, wantAlign)
	}
}

// directWorks tells whether dir's file system takes direct writes.
func directWorks(t *testing.T, dir string) bool {
	p := filepath.Join(dir, "probe-direct")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(p)
	w, err := diskfile.OpenDirect(p, 0)
	if err != nil {
		return false
	}
	w.Close()
	return true
}

func manyIDs(n, width int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("click-%07d-%s", i, strings.Repeat("q", i%width))
	}
	return ids
}

// TestFileCorrupt checks that a damaged header or a cut file is refused at
// open with ErrCorrupt, and a damaged location is an error, not a wrong answer.
func TestFileCorrupt(t *testing.T) {
	ids := manyIDs(5000, 10)
	path := filepath.Join(t.TempDir(), "0.ids")
	if _, err := frozenOf(0, ids).WriteFile(0, path); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for name, damage := range map[string]func([]byte) []byte{
		"flipped header byte": func(b []byte) []byte { b[20] ^= 1; return b },
		"flipped directory":   func(b []byte) []byte { b[fileHeaderSize+100] ^= 1; return b },
		"cut short":           func(b []byte) []byte { return b[:len(b)-10] },
		"bad magic":           func(b []byte) []byte { b[0] = 'X'; return b },
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "bad.ids")
			if err := os.WriteFile(p, damage(slices.Clone(good)), 0o644); err != nil {
				t.Fatal(err)
			}
			if f, err := OpenFile(p); !errors.Is(err, ErrCorrupt) {
				if f != nil {
					f.Close()
				}
				t.Fatalf("OpenFile = %v, want ErrCorrupt", err)
			}
		})
	}
	t.Run("location past the arena", func(t *testing.T) {
		b := slices.Clone(good)
		// Point every location of every shard far past the end.
		f, err := OpenFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.dir {
			for i := range d.slots {
				off := d.off + i*8 // the location is the slot's low 32 bits
				if string(b[off:off+8]) != "\x00\x00\x00\x00\x00\x00\x00\x00" {
					b[off], b[off+1], b[off+2], b[off+3] = 0xf0, 0xff, 0xff, 0xff
				}
			}
		}
		f.Close()
		p := filepath.Join(t.TempDir(), "loc.ids")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		bad, err := OpenFile(p)
		if err != nil {
			t.Fatal(err)
		}
		defer bad.Close()
		if ok, err := bad.Has(ids[0]); ok || !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Has = %v, %v; want an ErrCorrupt", ok, err)
		}
	})
}

// TestSpilling: a spilling set writes full chunks to the minute's spill
// file and drops them from memory; lookups of spilled ids read the file,
// stay exact, and the finished id file holds every id. Forgetting or
// closing a minute deletes its spill file.
func TestSpilling(t *testing.T) {
	dir := t.TempDir()
	s := NewSpilling(dir)
	ids := manyIDs(200000, 30) // ~5 MiB of arena: several chunks spill
	for _, id := range ids {
		if !s.Add(600, id) {
			t.Fatalf("Add(%q) = false for a new id", id)
		}
		s.Add(660, id) // a second minute, forgotten below
	}
	for i, id := range ids {
		if i%7 == 0 && s.Add(600, id) {
			t.Fatalf("Add(%q) = true for a duplicate", id)
		}
		if !s.Has(600, id) {
			t.Fatalf("Has(%q) = false", id)
		}
	}
	if s.Has(600, "click-9999999-") {
		t.Fatal("Has of an id never added")
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	if open, _ := filepath.Glob(filepath.Join(dir, "*"+spillSuffix)); len(open) != 2 {
		t.Fatalf("spill files %v, want one per minute", open)
	}
	if mem := s.Bytes(); mem > int64(len(ids))*2*30 {
		t.Fatalf("set holds %d bytes for %d ids: spilled chunks were not dropped", mem, 2*len(ids))
	}
	f := s.Detach(660)
	path := filepath.Join(dir, "600.ids")
	n, err := f.WriteFile(600, path)
	if err != nil || n != len(ids) {
		t.Fatalf("WriteFile = %d, %v; want %d", n, err, len(ids))
	}
	f.Release()
	s.Forget(720)
	if left, _ := filepath.Glob(filepath.Join(dir, "*")); len(left) != 1 || left[0] != path {
		t.Fatalf("dir holds %v, want only %s", left, path)
	}
	idf, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer idf.Close()
	for i, id := range ids {
		if i%3 != 0 {
			continue
		}
		if ok, err := idf.Has(id); !ok || err != nil {
			t.Fatalf("file Has(%q) = %v, %v", id, ok, err)
		}
	}
	total := 0
	if err := idf.Each(4096, func(ids []string) error { total += len(ids); return nil }); err != nil || total != len(ids) {
		t.Fatalf("Each gave %d ids (%v), want %d", total, err, len(ids))
	}
	s2 := NewSpilling(dir)
	for _, id := range ids[:100000] {
		s2.Add(900, id)
	}
	s2.Close()
	if left, _ := filepath.Glob(filepath.Join(dir, "*"+spillSuffix)); len(left) != 0 {
		t.Fatalf("Close left %v", left)
	}
}

package aggstate

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func openStore(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(filepath.Join(dir, "state"), filepath.Join(dir, "ids"), filepath.Join(dir, "outbox"), nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func part(seq uint64) []byte { return fmt.Appendf(nil, "partial-%d", seq) }

func wantOutbox(t *testing.T, s *Store, seqs ...uint64) {
	t.Helper()
	got, err := s.Outbox()
	if err != nil {
		t.Fatal(err)
	}
	var want [][]byte
	for _, q := range seqs {
		want = append(want, part(q))
	}
	if !slices.EqualFunc(got, want, func(a, b []byte) bool { return string(a) == string(b) }) {
		t.Fatalf("outbox %q, want %q", got, want)
	}
}

// TestOutboxFiles: partials in an outbox file are part of the outbox once
// a committed batch names the file, in sequence order with those kept as
// keys; a file no commit names is deleted at Open; a file goes once every
// partial in it is dropped, and a restart then does not look for it.
func TestOutboxFiles(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	b := s.NewBatch()
	for _, q := range []uint64{1, 2, 8} {
		if err := b.AddPartial(q, part(q)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.WriteOutboxFile(3, [][]byte{part(3), part(4), part(5)}); err != nil {
		t.Fatal(err)
	}
	b.AddOutboxFile(3, 3)
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	// Written, never committed: as if a crash interrupted the commit.
	if err := s.WriteOutboxFile(6, [][]byte{part(6), part(7)}); err != nil {
		t.Fatal(err)
	}
	wantOutbox(t, s, 1, 2, 3, 4, 5, 8)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir)
	if _, err := os.Stat(filepath.Join(dir, "outbox", "6.partials")); !os.IsNotExist(err) {
		t.Fatalf("the uncommitted outbox file is still there after Open (%v)", err)
	}
	wantOutbox(t, s, 1, 2, 3, 4, 5, 8)
	// Partly acknowledged: the file stays whole (resending 3 and 4 after a
	// restart is a no-op at the reducers).
	if err := s.DropOutbox(4); err != nil {
		t.Fatal(err)
	}
	wantOutbox(t, s, 3, 4, 5, 8)
	if err := s.DropOutbox(5); err != nil {
		t.Fatal(err)
	}
	wantOutbox(t, s, 8)
	if err := s.Close(); err != nil { // deletes what the remover still holds
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "outbox", "3.partials")); !os.IsNotExist(err) {
		t.Fatalf("a dropped outbox file is still there (%v)", err)
	}
	s = openStore(t, dir)
	defer s.Close()
	wantOutbox(t, s, 8)
}

// TestOutboxFileDamage: a damaged or missing outbox file the state names
// is an error naming it, never partials silently lost.
func TestOutboxFileDamage(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	if err := s.WriteOutboxFile(10, [][]byte{part(10), part(11)}); err != nil {
		t.Fatal(err)
	}
	b := s.NewBatch()
	b.AddOutboxFile(10, 2)
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "outbox", "10.partials")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	damaged := slices.Clone(data)
	damaged[len(damaged)-2] ^= 1
	if err := os.WriteFile(path, damaged, 0o644); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir)
	if _, err := s.Outbox(); !errors.Is(err, ErrCorruptOutbox) || !strings.Contains(err.Error(), "partial 11") {
		t.Fatalf("Outbox of a damaged file: %v", err)
	}
	s.Close()

	if err := os.WriteFile(path, data[:len(data)-3], 0o644); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir)
	if _, err := s.Outbox(); !errors.Is(err, ErrCorruptOutbox) {
		t.Fatalf("Outbox of a truncated file: %v", err)
	}
	s.Close()

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir)
	defer s.Close()
	if _, err := s.Outbox(); err == nil || !strings.Contains(err.Error(), "10..11") {
		t.Fatalf("Outbox with the file missing: %v", err)
	}
}

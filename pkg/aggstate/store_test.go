package aggstate

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/adclick/adclick/pkg/dedup"
)

func frozen(minute int64, ids ...string) *dedup.Frozen {
	s := dedup.New()
	for _, id := range ids {
		s.Add(minute, id)
	}
	return s.Detach(minute + 60)
}

// TestIDFiles: an id file is part of the state only once a committed batch
// names it; Seen finds its ids; ForgetIDsBefore deletes it with the keys;
// at Open, files no commit names are deleted and a named file that is
// missing is an error naming it.
func TestIDFiles(t *testing.T) {
	dir := t.TempDir()
	stateDir, idsDir := filepath.Join(dir, "state"), filepath.Join(dir, "ids")
	s, err := Open(stateDir, idsDir, filepath.Join(dir, "outbox"), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []int64{60, 120} {
		n, err := s.WriteIDFile(frozen(m, "a", "b"), m)
		if err != nil || n != 2 {
			t.Fatalf("WriteIDFile(%d) = %d, %v", m, n, err)
		}
	}
	b := s.NewBatch()
	b.AddIDFile(60, 2) // 120's file is written but never committed
	b.AddID(60, "late")
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]bool{"a": true, "b": true, "late": true, "c": false} {
		if got, err := s.Seen(60, id); got != want || err != nil {
			t.Fatalf("Seen(60, %q) = %v, %v; want %v", id, got, err, want)
		}
	}
	if got, _ := s.Seen(120, "a"); got {
		t.Fatal("an uncommitted id file answers lookups")
	}
	var each []string
	if err := s.EachID(0, 10, func(m int64, ids []string) error { each = append(each, ids...); return nil }); err != nil || len(each) != 3 {
		t.Fatalf("EachID gave %v (%v), want the file's 2 ids and the key", each, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(stateDir, idsDir, filepath.Join(dir, "outbox"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(idsDir, "120.ids")); !os.IsNotExist(err) {
		t.Fatalf("uncommitted id file after Open: %v, want it deleted", err)
	}
	if files, ids := s.IDFiles(); files != 1 || ids != 2 {
		t.Fatalf("IDFiles = %d, %d; want 1, 2", files, ids)
	}
	b = s.NewBatch()
	b.ForgetIDsBefore(120)
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	// Deleted in the background, a few MB at a time (package remover).
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		_, err := os.Stat(filepath.Join(idsDir, "60.ids"))
		if os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("id file of a forgotten minute: %v, want it deleted", err)
		}
	}
	if got, _ := s.Seen(60, "late"); got {
		t.Fatal("forgotten key still seen")
	}
	// A named file that went missing stops Open with its name.
	if _, err := s.WriteIDFile(frozen(180, "x"), 180); err != nil {
		t.Fatal(err)
	}
	b = s.NewBatch()
	b.AddIDFile(180, 1)
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := os.Remove(filepath.Join(idsDir, "180.ids")); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(stateDir, idsDir, filepath.Join(dir, "outbox"), nil); err == nil || !strings.Contains(err.Error(), "180") {
		t.Fatalf("Open with a missing id file: %v, want an error naming minute 180", err)
	}
	// A named file whose content is not what the state says is corrupt.
	if _, err := frozen(180, "x", "y").WriteFile(180, filepath.Join(idsDir, "180.ids")); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(stateDir, idsDir, filepath.Join(dir, "outbox"), nil); !errors.Is(err, dedup.ErrCorrupt) {
		t.Fatalf("Open with a mismatched id file: %v, want ErrCorrupt", err)
	}
}

package filter

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/adclick/adclick/pkg/clock"
	"github.com/adclick/adclick/pkg/etcdembed"
)

func TestStoreAndWatcherWithEtcd(t *testing.T) {
	srv, err := etcdembed.Start(t.TempDir(), "127.0.0.1:0", slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	cli, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	now := time.Date(2026, 3, 1, 12, 0, 30, 0, time.UTC)
	st := NewStore(cli, clock.NewFake(now))
	w, err := Watch(ctx, cli, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	f1, err := st.Create(ctx, Filter{Countries: []string{"us"}})
	if err != nil {
		t.Fatal(err)
	}
	f2, err := st.Create(ctx, Filter{IPs: []string{"10.0.0.0/8"}})
	if err != nil {
		t.Fatal(err)
	}
	if f1.ID != 1 || f2.ID != 2 {
		t.Fatalf("ids %d, %d; want 1, 2", f1.ID, f2.ID)
	}
	// 12:00:30 + 105 s = 12:02:15, rounded up: 12:03. A click may lie 60 s
	// ahead and an aggregator act on a view up to the 30 s TTL old: the
	// effective minute must start after both, whatever the second of
	// creation.
	if want := time.Date(2026, 3, 1, 12, 3, 0, 0, time.UTC).Unix(); f1.EffectiveFrom != want {
		t.Fatalf("effective from %s, want %s", time.Unix(f1.EffectiveFrom, 0).UTC(), time.Unix(want, 0).UTC())
	}
	for sec := 0; sec < 60; sec += 7 {
		at := now.Add(time.Duration(sec) * time.Second)
		if from := EffectiveFrom(at, DefaultLead); time.Unix(from, 0).Sub(at) < DefaultLead || from%60 != 0 {
			t.Fatalf("created at %s: effective from %s, less than %s ahead", at, time.Unix(from, 0).UTC(), DefaultLead)
		}
	}
	if !w.Fresh(time.Second) {
		t.Fatal("a view just read is not fresh")
	}
	if w.Fresh(0) {
		t.Fatal("fresh within 0s")
	}
	if _, err := st.Create(ctx, Filter{Countries: []string{"xyz"}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("invalid create: %v", err)
	}
	waitFor(t, func() bool { return w.Current().Len() == 2 })
	if got, _ := w.Current().Get(1); got.Countries[0] != "US" {
		t.Fatalf("watched filter 1: %+v", got)
	}
	if err := st.Delete(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := st.Delete(ctx, 1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	waitFor(t, func() bool { return w.Current().Len() == 1 })
	list, err := st.List(ctx)
	if err != nil || len(list) != 1 || list[0].ID != 2 {
		t.Fatalf("List: %+v %v", list, err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

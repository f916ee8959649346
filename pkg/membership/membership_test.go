package membership

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/adclick/adclick/pkg/etcdembed/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func startEtcd(t *testing.T) *clientv3.Client { return etcdtest.Client(t) }

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not reached within 15s: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func ids(ms []Member) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	return out
}

func TestRegisterWatchAndLeaseLoss(t *testing.T) {
	cli := startEtcd(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := Watch(ctx, cli, Aggregators, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	changes := w.Subscribe()
	a, err := Register(ctx, cli, Aggregators, Member{ID: "a", Addr: "127.0.0.1:1", FirstMinute: 60}, 2*time.Second, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	b, err := Register(ctx, cli, Aggregators, Member{ID: "b", Addr: "127.0.0.1:2"}, 2*time.Second, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both registered and live", func() bool { return len(w.Live()) == 2 })
	if got := w.Members(); got[0].ID != "a" || got[0].FirstMinute != 60 || got[1].ID != "b" {
		t.Fatalf("members %+v", got)
	}
	// Members are updated before subscribers are told, so the
	// notification may trail the wait above by a moment.
	select {
	case <-changes:
	case <-time.After(15 * time.Second):
		t.Fatal("no change notification within 15s")
	}

	// Losing the lease (as after an etcd outage longer than the TTL) makes
	// the node register again with a new lease.
	a.mu.Lock()
	lease := a.leaseID
	a.mu.Unlock()
	if _, err := cli.Revoke(ctx, lease); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a registered again with a new lease", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.leaseID != lease && len(w.Live()) == 2
	})

	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b not live after Close", func() bool { return len(w.Live()) == 1 && w.Live()[0].ID == "a" })
	if got := ids(w.Members()); len(got) != 2 {
		t.Fatalf("a stopped node stays a member: %v", got)
	}
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "none live after Close", func() bool { return len(w.Live()) == 0 })
}

func TestWatchRelistsAfterCompaction(t *testing.T) {
	cli := startEtcd(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := cli.Put(ctx, Reducers.Key("r1"), `{"id":"r1","addr":"x:1"}`); err != nil {
		t.Fatal(err)
	}
	w, err := Watch(ctx, cli, Reducers, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(w.Members()); len(got) != 1 || got[0] != "r1" {
		t.Fatalf("initial %v", got)
	}
	// Make changes and compact them away; the watcher must end up with the
	// same state as a fresh listing.
	for _, id := range []string{"r2", "r3"} {
		if _, err := cli.Put(ctx, Reducers.Key(id), `{"id":"`+id+`","addr":"x:1"}`); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := cli.Delete(ctx, Reducers.Key("r1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "r2 and r3 only", func() bool {
		got := ids(w.Members())
		return len(got) == 2 && got[0] == "r2" && got[1] == "r3"
	})
}

func TestParseMembersSkipsMalformed(t *testing.T) {
	ms, err := ParseMembers(Aggregators, map[string][]byte{
		Aggregators.Key("a"):     []byte(`{"id":"a","addr":"h:1"}`),
		Aggregators.Key("bad"):   []byte(`not json`),
		Aggregators.Key("other"): []byte(`{"id":"a","addr":"h:1"}`), // id does not match key
	}, map[string][]byte{Aggregators.LiveKey("a"): nil})
	if err == nil || len(ms) != 1 || ms[0].ID != "a" || !ms[0].Live {
		t.Fatalf("got %+v, %v", ms, err)
	}
}

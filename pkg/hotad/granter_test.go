package hotad

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/adclick/adclick/pkg/clock"
	"github.com/adclick/adclick/pkg/etcdembed/etcdtest"
	"github.com/adclick/adclick/pkg/ring"
)

func startEtcd(t *testing.T) *clientv3.Client { return etcdtest.Client(t) }

func history(t *testing.T, cli *clientv3.Client) *ring.History {
	t.Helper()
	h, _, err := ring.LoadHistory(context.Background(), cli)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestGrantLifecycle: one lease key per ad (a second taker is refused),
// the grant appended from the earliest change; a release ends it ahead; a
// holder that dies lets its lease lapse and another node ends the grant.
func TestGrantLifecycle(t *testing.T) {
	cli := startEtcd(t)
	ctx := context.Background()
	clk := clock.Real{}
	if _, _, err := ring.Update(ctx, cli, clk, func(*ring.History, time.Time) (*ring.History, error) {
		return ring.Founding([]string{"a", "b", "c"}, clk.Now(), 5*time.Second), nil
	}); err != nil {
		t.Fatal(err)
	}
	ga := NewGranter(GranterConfig{Node: "a", TTL: time.Second, FanoutMax: 3}, cli, clk, slog.Default(), NewMetrics(nil))
	gb := NewGranter(GranterConfig{Node: "b", TTL: time.Second, FanoutMax: 3}, cli, clk, slog.Default(), NewMetrics(nil))
	before := history(t, cli)
	g, err := ga.Take(ctx, "ad-hot")
	if err != nil || g == nil {
		t.Fatalf("take: %v %v", g, err)
	}
	if want := before.EarliestChange(time.Unix(g.ProposedAt, 0)); g.From < want || g.Fanout != 3 || g.Origin != ring.OriginAuto {
		t.Fatalf("grant %+v, want fan-out 3 from %d", g, want)
	}
	// A view older than the append says nothing about the grant's end.
	if ga.EndedIn("ad-hot", before) || ga.EndedIn("ad-hot", history(t, cli)) {
		t.Fatal("EndedIn on a view without the end")
	}
	if _, err := gb.Take(ctx, "ad-hot"); !errors.Is(err, ErrTaken) {
		t.Fatalf("second take: %v", err)
	}
	if o := history(t, cli).OpenGrant("ad-hot"); o == nil || len(history(t, cli).Grants) != 1 {
		t.Fatal("grant not in the history once")
	}
	// The holder keeps it alive past its TTL; nobody ends it meanwhile.
	for range 4 {
		ga.KeepAlive(ctx)
		if ended, err := gb.EndLapsed(ctx, history(t, cli)); err != nil || len(ended) > 0 {
			t.Fatalf("ended a live grant: %v %v", ended, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	// Cooling: the holder ends it ahead and revokes the lease.
	if err := ga.Release(ctx, "ad-hot", true); err != nil {
		t.Fatal(err)
	}
	h := history(t, cli)
	if gr := h.Grants[0]; gr.Until == 0 || gr.Until < gr.From {
		t.Fatalf("released grant %+v", gr)
	}
	// Taken again (from the end of the first on), then the holder "dies":
	// no keep-alive; the lease lapses and b ends the grant.
	g2, err := ga.Take(ctx, "ad-hot")
	if err != nil || g2 == nil || g2.From < h.Grants[0].Until {
		t.Fatalf("take again: %+v %v", g2, err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		ended, err := gb.EndLapsed(ctx, history(t, cli))
		if err != nil {
			t.Fatal(err)
		}
		if len(ended) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a lapsed grant was not ended")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if gr := history(t, cli).Grants[1]; gr.Until == 0 {
		t.Fatalf("lapsed grant still open: %+v", gr)
	}
}

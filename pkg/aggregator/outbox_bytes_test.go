package aggregator

import (
	"fmt"
	"strings"
	"testing"
	"time"

	clusterv1 "github.com/adclick/adclick/gen/adclick/cluster/v1"
	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// TestOutboxBoundedInBytes fills the outbox while no reducer is registered
// (a reducer away) with few but large partials: the byte count must equal
// the partials' encoded size (also after a restart), the outbox must be
// full by --max-outbox-bytes long before --max-outbox, the refusal must
// name the flag, and delivery must bring the count back to zero.
func TestOutboxBoundedInBytes(t *testing.T) {
	const maxBytes = 4 << 10
	env := newTestAggregator(t, start, nil, func(c *Config) { c.MaxOutboxBytes = maxBytes })
	if env.agg.cfg.MaxOutbox != defaultMaxOutbox || (Config{}).withDefaults().MaxOutboxBytes != 256<<20 {
		t.Fatalf("defaults: --max-outbox %d, --max-outbox-bytes %d", env.agg.cfg.MaxOutbox, (Config{}).withDefaults().MaxOutboxBytes)
	}
	if err := (Config{MaxOutboxBytes: -1}).Validate(); err == nil || !strings.Contains(err.Error(), "--max-outbox-bytes") {
		t.Fatalf("Validate with negative --max-outbox-bytes: %v", err)
	}
	for m := range 4 {
		at := start.Add(time.Duration(m) * time.Minute)
		env.clk.Set(at)
		var evs []*adclickv1.ClickEvent
		for i := range 40 {
			evs = append(evs, click(fmt.Sprintf("m%d-c%d", m, i), fmt.Sprintf("ad-with-a-rather-long-id-%04d", i), at))
		}
		forward(t, env.agg, evs...)
	}
	env.clk.Add(3 * time.Minute)
	if err := env.agg.tick(); err != nil {
		t.Fatal(err)
	}
	parts, err := env.agg.store.Outbox()
	if err != nil {
		t.Fatal(err)
	}
	var want int64
	for _, b := range parts {
		p := &clusterv1.Partial{}
		if err := proto.Unmarshal(b, p); err != nil {
			t.Fatal(err)
		}
		want += int64(proto.Size(p))
	}
	if got := env.agg.ob.retainedBytes(); got != want || want < maxBytes {
		t.Fatalf("outbox holds %d bytes by its count and %d by its partials (%d of them); want equal and over %d", got, want, len(parts), maxBytes)
	}
	if len(parts) >= env.agg.cfg.MaxOutbox || !env.agg.outboxFull() {
		t.Fatalf("%d partials, full %v: want full by bytes, not by count", len(parts), env.agg.outboxFull())
	}
	err = env.agg.outboxRefusal()
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "--max-outbox-bytes") || !strings.Contains(err.Error(), "outbox full") {
		t.Fatalf("refusal %v; want RESOURCE_EXHAUSTED naming --max-outbox-bytes", err)
	}

	// A restart counts the same bytes from disk.
	env.crash()
	env.open(t)
	if got := env.agg.ob.retainedBytes(); got != want {
		t.Fatalf("after a restart the outbox counts %d bytes, want %d", got, want)
	}
	// The reducer is back: everything is delivered, nothing is retained.
	red := startReducer(t, 0)
	env.members.Set(red.member("r-1"))
	env.run(t)
	poll(t, "the outbox to empty", func() bool { return env.agg.ob.retainedBytes() == 0 && env.agg.ob.retained() == 0 })
	if env.agg.outboxFull() {
		t.Fatal("an empty outbox is full")
	}
	counts, _ := red.snapshot()
	var total int64
	for k, n := range counts {
		if k.filter == 0 {
			total += n
		}
	}
	if total != 4*40 {
		t.Fatalf("reducer counted %d clicks, want %d", total, 4*40)
	}
}

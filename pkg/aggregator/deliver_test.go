package aggregator

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	clusterv1 "github.com/adclick/adclick/gen/adclick/cluster/v1"
	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
	"github.com/adclick/adclick/pkg/clock"
	"github.com/adclick/adclick/pkg/membership"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// serveAggregator serves a over gRPC on loopback and returns a client.
func serveAggregator(t *testing.T, a *Aggregator) clusterv1.AggregatorServiceClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	a.Register(srv)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return clusterv1.NewAggregatorServiceClient(conn)
}

// model is the test's independent statement of what must be counted.
type model struct {
	eff3   int64
	seen   map[string]bool
	counts map[countKey]int64
	now    func() time.Time
	closed func() int64 // first minute not closed
	stats  map[clusterv1.EventStatus]int
	late   int
}

// expect returns the status the aggregator must answer for ev, and records
// its counts if it is to be counted.
func (m *model) expect(ev *adclickv1.ClickEvent) clusterv1.EventStatus {
	s := m.status(ev)
	m.stats[s]++
	return s
}

func (m *model) status(ev *adclickv1.ClickEvent) clusterv1.EventStatus {
	at := ev.ClickTime.AsTime()
	now := m.now()
	if at.Before(clock.MinuteTime(clock.Minute(now.Add(-24*time.Hour)))) || at.After(now.Add(time.Minute)) {
		return rejected
	}
	if m.seen[ev.ClickId] {
		return duplicate
	}
	m.seen[ev.ClickId] = true
	min := clock.Minute(at)
	if min < m.closed() {
		m.late++
	}
	m.counts[countKey{0, ev.AdId, min}]++
	for _, f := range matchTruth(ev, min, m.eff3) {
		m.counts[countKey{f, ev.AdId, min}]++
	}
	return accepted
}

// TestDeliverEndToEnd forwards clicks over gRPC (with duplicates, late and
// rejected ones) while the fake clock moves, and checks that two reducers,
// one of which fails its first calls, end with exactly the ground truth and
// every minute closed once, in order.
func TestDeliverEndToEnd(t *testing.T) {
	eff3 := clock.Minute(start) + 120
	env := newTestAggregator(t, start, testFilters(t, eff3), func(c *Config) {
		c.PartialMaxCounts = 7 // many small partials: batching and splitting are exercised
		c.DeliverBatch = 3
	})
	flaky, steady := startReducer(t, 5), startReducer(t, 0)
	env.members.Set(flaky.member("r-flaky"), steady.member("r-steady"))
	env.run(t)
	client := serveAggregator(t, env.agg)

	m := &model{eff3: eff3, seen: map[string]bool{}, counts: map[countKey]int64{}, now: env.clk.Now, stats: map[clusterv1.EventStatus]int{}}
	m.closed = func() int64 { // minutes close on the tick: wait until due ones are
		now := env.clk.Now()
		due := max(env.agg.FirstMinute(), clock.Minute(now.Add(-time.Minute-15*time.Second))+60)
		poll(t, "due minutes to close", func() bool {
			env.agg.mu.Lock()
			defer env.agg.mu.Unlock()
			return env.agg.counter.Next() >= due
		})
		return due
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var sent []*adclickv1.ClickEvent
	countries := []string{"", "US", "DE"}
	ips := []string{"", "10.9.8.7", "192.0.2.7", "2001:db8::1"}
	users := []string{"", "u1", "u2"}
	id := 0
	newClick := func(at time.Time) *adclickv1.ClickEvent {
		id++
		ev := click(fmt.Sprint("click-", id), fmt.Sprint("ad-", rng.IntN(5)), at)
		ev.Country, ev.Ip, ev.UserId = countries[rng.IntN(3)], ips[rng.IntN(4)], users[rng.IntN(3)]
		return ev
	}
	for round := range 12 {
		now := env.clk.Now()
		var batch []*adclickv1.ClickEvent
		for range 40 {
			var at time.Time
			switch r := rng.IntN(10); {
			case r < 6: // recent
				at = now.Add(-time.Duration(rng.IntN(30)) * time.Second)
			case r < 8: // late: minutes ago
				at = now.Add(-time.Duration(1+rng.IntN(10)) * time.Minute)
			case r < 9: // slightly in the future, allowed
				at = now.Add(time.Duration(rng.IntN(55)) * time.Second)
			default: // rejected: too far in the future, or beyond the horizon
				at = now.Add(time.Hour)
				if rng.IntN(2) == 0 {
					at = now.Add(-25 * time.Hour)
				}
			}
			batch = append(batch, newClick(at))
		}
		// Retries of earlier clicks, and a duplicate inside the batch.
		for range 8 {
			if len(sent) > 0 {
				batch = append(batch, sent[rng.IntN(len(sent))])
			}
		}
		batch = append(batch, batch[0])
		sent = append(sent, batch...)
		want := make([]clusterv1.EventStatus, len(batch))
		for i, ev := range batch {
			want[i] = m.expect(ev)
		}
		resp, err := client.Forward(context.Background(), &clusterv1.ForwardRequest{Events: batch})
		if err != nil {
			t.Fatalf("round %d: Forward: %v", round, err)
		}
		for i := range want {
			if resp.Status[i] != want[i] {
				t.Fatalf("round %d event %d (%s at %s): status %v, want %v (reason %q)", round, i, batch[i].ClickId, batch[i].ClickTime.AsTime(), resp.Status[i], want[i], resp.Reasons[int32(i)])
			}
		}
		env.clk.Add(20 * time.Second)
	}
	if m.stats[accepted] == 0 || m.stats[duplicate] < 50 || m.stats[rejected] == 0 || m.late == 0 {
		t.Fatalf("the workload lacks variety: %v, %d late", m.stats, m.late)
	}
	env.clk.Add(3 * time.Minute) // every minute with clicks is due
	lastDue := clock.Minute(env.clk.Now().Add(-time.Minute - 15*time.Second))

	for _, r := range []*fakeReducer{flaky, steady} {
		poll(t, "reducer "+r.addr+" to have every minute closed and the exact counts", func() bool {
			counts, closed := r.snapshot()
			return len(closed) > 0 && closed[len(closed)-1] >= lastDue && maps.Equal(counts, m.counts)
		})
		counts, closed := r.snapshot()
		for i, c := range closed {
			if want := env.agg.FirstMinute() + int64(i)*60; c != want {
				t.Fatalf("closing partial %d is for minute %d, want %d (closed %v)", i, c, want, closed)
			}
		}
		if !maps.Equal(counts, m.counts) {
			t.Fatalf("counts differ from ground truth")
		}
	}
	poll(t, "outbox to be empty", func() bool { return env.agg.ob.retained() == 0 })
	if got := counterValue(t, env.agg.m.late); got != float64(m.late) {
		t.Errorf("late clicks metric %v, want %d", got, m.late)
	}
	if n := counterValue(t, env.agg.m.deliverErrors.WithLabelValues("r-flaky")); n < 5 {
		t.Errorf("deliver errors for the flaky reducer: %v, want at least 5", n)
	}
}

// TestResendAfterReducerLosesState: a reducer that forgets what it applied
// answers FAILED_PRECONDITION with applied_through 0; the aggregator
// resends from sequence 1 (still retained, as another reducer has not
// acknowledged it) and the reducer ends exact.
func TestResendAfterReducerLosesState(t *testing.T) {
	env := newTestAggregator(t, start, nil, nil)
	r := startReducer(t, 0)
	down := membership.Member{ID: "r-down", Addr: "127.0.0.1:1"} // nothing listens: keeps everything retained
	env.members.Set(r.member("r-1"), down)
	env.run(t)
	forward(t, env.agg, click("a1", "a", start), click("b1", "b", start))
	env.clk.Add(time.Minute)
	poll(t, "first minute delivered", func() bool { c, _ := r.snapshot(); return c[countKey{0, "a", clock.Minute(start)}] == 1 })

	r.mu.Lock()
	r.applied, r.counts, r.closed = map[string]uint64{}, map[countKey]int64{}, nil
	r.mu.Unlock()
	forward(t, env.agg, click("a2", "a", env.clk.Now()))
	env.clk.Add(time.Minute)
	m0, m1 := clock.Minute(start), clock.Minute(start)+60
	want := map[countKey]int64{{0, "a", m0}: 1, {0, "b", m0}: 1, {0, "a", m1}: 1}
	poll(t, "reducer to be exact again after losing its state", func() bool {
		c, closed := r.snapshot()
		return maps.Equal(c, want) && len(closed) >= 2 && closed[0] == env.agg.FirstMinute()
	})
}

// TestFlushDelivers: Flush delivers corrections, also when Run is not
// running, and neither sends nor closes open minutes: they stay in the log.
func TestFlushDelivers(t *testing.T) {
	env := newTestAggregator(t, start, nil, nil)
	r := startReducer(t, 2)
	env.members.Set(r.member("r-1"))
	forward(t, env.agg, click("a1", "a", start), click("late", "a", start.Add(-10*time.Minute)))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := env.agg.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	counts, closed := r.snapshot()
	want := map[countKey]int64{{0, "a", clock.Minute(start) - 600}: 1}
	if !maps.Equal(counts, want) || len(closed) != 0 {
		t.Fatalf("after Flush: counts %v closed %v; want %v and no minute closed", counts, closed, want)
	}
}

// TestMembershipChanges: a reducer registering later starts from the oldest
// retained partial; partials are dropped only once every registered
// reducer acknowledged them.
func TestMembershipChanges(t *testing.T) {
	env := newTestAggregator(t, start, nil, nil)
	env.run(t)
	forward(t, env.agg, click("a1", "a", start))
	env.clk.Add(time.Minute)
	poll(t, "the first minute to close", func() bool { return env.agg.ob.retained() >= 1 })

	r1 := startReducer(t, 0) // registers after partials were emitted: gets them from sequence 1
	env.members.Set(r1.member("r-1"))
	m0 := clock.Minute(start)
	poll(t, "r-1 to get the retained partial", func() bool { c, _ := r1.snapshot(); return c[countKey{0, "a", m0}] == 1 })
	poll(t, "outbox to drop what r-1 acknowledged", func() bool { return env.agg.ob.retained() == 0 })

	r2 := startReducer(t, 1000) // fails every call: holds partials in the outbox
	env.members.Set(r1.member("r-1"), r2.member("r-2"))
	forward(t, env.agg, click("b1", "b", env.clk.Now()))
	env.clk.Add(time.Minute)
	poll(t, "r-1 to get the second minute", func() bool { c, _ := r1.snapshot(); return c[countKey{0, "b", m0 + 60}] == 1 })
	if n := env.agg.ob.retained(); n == 0 {
		t.Fatal("outbox dropped partials r-2 has not acknowledged")
	}
	env.members.Set(r1.member("r-1")) // r-2 leaves
	poll(t, "outbox to drop partials once r-2 left", func() bool { return env.agg.ob.retained() == 0 })
}

// TestPacer: deliveries of n counts are spaced to the rate, after a burst
// allowance; a pause resets nothing owed, and no rate means no wait.
func TestPacer(t *testing.T) {
	t0 := time.Unix(1000, 0)
	p := pacer{rate: 1000}
	if d := p.after(100, t0); d != 0 {
		t.Fatalf("first 100 counts (100 ms of budget): wait %v, want 0 (within the burst)", d)
	}
	if d := p.after(1000, t0); d != 900*time.Millisecond {
		t.Fatalf("1100 counts at once: wait %v, want 900ms (1.1 s of budget minus the 200 ms burst)", d)
	}
	if d := p.after(100, t0.Add(10*time.Second)); d != 0 {
		t.Fatalf("after a long pause: wait %v, want 0", d)
	}
	if d := (&pacer{}).after(1e9, t0); d != 0 {
		t.Fatalf("no rate: wait %v, want 0", d)
	}
}

// TestSpreadRate: a closing minute's counts are paced to reach a reducer
// evenly over the spread, within the floor and the cap.
func TestSpreadRate(t *testing.T) {
	const s = 30 * time.Second
	tests := []struct {
		name    string
		pending int
		since   time.Duration
		spread  time.Duration
		max     int
		want    float64
	}{
		{"a minute just closed", 750_000, 0, s, 100_000, 25_000},
		{"a third of the spread gone", 500_000, 10 * time.Second, s, 100_000, 25_000},
		{"a few corrections: the floor", 100, 0, s, 100_000, deliverMinRate},
		{"more than the cap allows", 6_000_000, 0, s, 100_000, 100_000},
		{"past the spread: catching up at the cap", 500_000, time.Minute, s, 100_000, 100_000},
		{"past the spread, no cap: no limit", 500_000, time.Minute, s, -1, 0},
		{"spreading off: the cap", 750_000, 0, -1, 100_000, 100_000},
		{"spreading off, no cap: no limit", 750_000, 0, -1, -1, 0},
	}
	for _, tt := range tests {
		if got := spreadRate(tt.pending, tt.since, tt.spread, tt.max); got != tt.want {
			t.Errorf("%s: spreadRate(%d, %v, %v, %d) = %g, want %g", tt.name, tt.pending, tt.since, tt.spread, tt.max, got, tt.want)
		}
	}
}

// TestOutboxPending: the counts a reducer has yet to acknowledge.
func TestOutboxPending(t *testing.T) {
	ob := newOutbox(newMetrics(nil), func(uint64) {})
	ob.setMembers([]string{"r-1", "r-2"})
	if n, _ := ob.pending("r-1"); n != 0 {
		t.Fatalf("empty outbox: %d pending", n)
	}
	before := time.Now()
	if err := ob.add([]encodedPartial{{seq: 1, counts: 10}, {seq: 2, counts: 20}, {seq: 3, counts: 40}}); err != nil {
		t.Fatal(err)
	}
	ob.ack("r-1", 2)
	n, at := ob.pending("r-1")
	if n != 40 || at.Before(before) {
		t.Fatalf("r-1 acknowledged through 2: pending %d added %v, want 40 after %v", n, at, before)
	}
	if n, _ := ob.pending("r-2"); n != 70 {
		t.Fatalf("r-2 acknowledged nothing: pending %d, want 70", n)
	}
	if n, _ := ob.pending("unknown"); n != 0 {
		t.Fatalf("unregistered reducer: pending %d, want 0", n)
	}
	// After a trim (both acknowledged 1 and 2) and more partials.
	ob.ack("r-2", 3)
	if err := ob.add([]encodedPartial{{seq: 4, counts: 5}}); err != nil {
		t.Fatal(err)
	}
	if ob.retained() != 2 {
		t.Fatalf("retained %d partials, want 2 (3 and 4)", ob.retained())
	}
	if n, _ := ob.pending("r-1"); n != 45 {
		t.Fatalf("r-1 acknowledged through 2 of 4: pending %d, want 45", n)
	}
	if n, _ := ob.pending("r-2"); n != 5 {
		t.Fatalf("r-2 acknowledged through 3 of 4: pending %d, want 5", n)
	}
	// Partials read back from disk, and a reducer that asks for a resend.
	ob = newOutbox(newMetrics(nil), func(uint64) {})
	if err := ob.load([]encodedPartial{{seq: 7, counts: 3}, {seq: 8, counts: 4}}, 9); err != nil {
		t.Fatal(err)
	}
	ob.setMembers([]string{"r-1"})
	if n, _ := ob.pending("r-1"); n != 7 {
		t.Fatalf("after load: pending %d, want 7", n)
	}
	ob.ack("r-1", 7)
	if n, _ := ob.pending("r-1"); n != 4 {
		t.Fatalf("after load, acknowledged through 7: pending %d, want 4", n)
	}
}

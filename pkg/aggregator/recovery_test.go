package aggregator

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clusterv1 "github.com/adclick/adclick/gen/adclick/cluster/v1"
	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
	"github.com/adclick/adclick/pkg/clock"
	"github.com/adclick/adclick/pkg/dedup"
	"github.com/adclick/adclick/pkg/wal"
)

// client plays the router: it sends batches, remembers every batch ever
// sent, and keeps the ground truth of what must be counted: every distinct
// click once, in its minute, for filter 0 and the filters it matches.
type client struct {
	t       *testing.T
	rng     *rand.Rand
	n       int
	sent    [][]*adclickv1.ClickEvent
	acked   map[string]bool // click ids answered ACCEPTED or DUPLICATE
	truth   map[countKey]int64
	counted map[string]bool
}

func newClient(t *testing.T) *client {
	return &client{t: t, rng: rand.New(rand.NewPCG(7, 8)), acked: map[string]bool{}, truth: map[countKey]int64{}, counted: map[string]bool{}}
}

// batch makes n new clicks at times spread over [from, to).
func (c *client) batch(n int, from, to time.Time) []*adclickv1.ClickEvent {
	countries := []string{"US", "DE", ""}
	evs := make([]*adclickv1.ClickEvent, n)
	for i := range evs {
		c.n++
		at := from.Add(time.Duration(c.rng.Int64N(int64(to.Sub(from)))))
		evs[i] = click(fmt.Sprintf("click-%05d", c.n), fmt.Sprintf("ad-%d", c.rng.IntN(5)), at)
		evs[i].Country = countries[c.rng.IntN(len(countries))]
		evs[i].Ip = fmt.Sprintf("10.0.0.%d", c.rng.IntN(4))
		if c.rng.IntN(4) == 0 {
			evs[i].Ip = "192.0.2.1"
		}
	}
	return evs
}

// send forwards evs; an error leaves the batch to be retried. Every click
// answered is added to the truth once.
func (c *client) send(a *Aggregator, evs []*adclickv1.ClickEvent) ([]clusterv1.EventStatus, error) {
	c.sent = append(c.sent, evs)
	resp, err := a.Forward(context.Background(), &clusterv1.ForwardRequest{Events: evs})
	if err != nil {
		return nil, err
	}
	for i, ev := range evs {
		switch resp.Status[i] {
		case accepted, duplicate:
			c.acked[ev.ClickId] = true
			if !c.counted[ev.ClickId] {
				c.counted[ev.ClickId] = true
				m := clock.Minute(ev.ClickTime.AsTime())
				c.truth[countKey{0, ev.AdId, m}]++
				for _, f := range matchTruth(ev, m, 0) {
					c.truth[countKey{f, ev.AdId, m}]++
				}
			}
		default:
			c.t.Fatalf("click %s: %v (%s)", ev.ClickId, resp.Status[i], resp.Reasons[int32(i)])
		}
	}
	return resp.Status, nil
}

func (c *client) mustSend(a *Aggregator, evs []*adclickv1.ClickEvent) []clusterv1.EventStatus {
	c.t.Helper()
	st, err := c.send(a, evs)
	if err != nil {
		c.t.Fatalf("Forward: %v", err)
	}
	return st
}

// retryAll resends every batch ever sent, as a client whose acks were lost
// would: clicks answered before must now be duplicates.
func (c *client) retryAll(a *Aggregator) {
	c.t.Helper()
	before := maps.Clone(c.acked)
	for _, evs := range slices.Clone(c.sent) {
		st := c.mustSend(a, evs)
		for i, ev := range evs {
			if before[ev.ClickId] && st[i] != duplicate {
				c.t.Fatalf("click %s acknowledged before the restart answered %v on retry, want DUPLICATE", ev.ClickId, st[i])
			}
		}
	}
}

// waitExact waits until the reducer's counts equal the truth and every
// minute from first through last closed once, in order, and checks no
// sequence was reused for other content.
func waitExact(t *testing.T, r *fakeReducer, c *client, first, last int64) {
	t.Helper()
	var counts map[countKey]int64
	var closed []int64
	deadline := time.Now().Add(15 * time.Second)
	for {
		counts, closed = r.snapshot()
		want := []int64{}
		for m := first; m <= last; m += 60 {
			want = append(want, m)
		}
		if maps.Equal(counts, c.truth) && slices.Equal(closed, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("reducer not exact:\n got %v\nwant %v\nclosed %v, want %v", counts, c.truth, closed, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.reused) > 0 {
		t.Fatalf("sequences reused with other content: %v", r.reused)
	}
}

// TestCrashRecovery drives an aggregator through kill -9 crashes (one
// with a batch caught between write and fsync, one with a torn log tail)
// and a clean restart, with the client retrying every batch after each
// restart, minutes closing across restarts and late clicks, and compares
// what the reducer received with the client's ground truth.
func TestCrashRecovery(t *testing.T) {
	ctl := newSyncCtl()
	env := newTestAggregator(t, start, testFilters(t, 0), func(c *Config) {
		c.WAL.SegmentBytes = 4 << 10 // many segments, so deletion happens
		c.walSync = ctl.sync
		c.outboxFileMin = 1 // every commit's partials in an outbox file (other tests keep them as keys)
	})
	r := startReducer(t, 0)
	env.members.Set(r.member("r-1"))
	stop := env.run(t)
	c := newClient(t)
	inc, first := env.agg.Incarnation(), env.agg.FirstMinute()
	m0 := clock.MinuteTime(first) // start is 12:00:30, first minute 12:00

	// Before the first crash: minute m0 closes, then late clicks and
	// retries for it are checked against the ids on disk.
	m0Batch := c.batch(20, m0, m0.Add(time.Minute))
	c.mustSend(env.agg, m0Batch)
	for range 10 {
		c.mustSend(env.agg, c.batch(30, m0, m0.Add(90*time.Second)))
	}
	env.clk.Set(m0.Add(time.Minute + 20*time.Second))
	waitExact(t, r, &client{truth: filterMinute(c.truth, first)}, first, clock.Minute(m0))
	for _, s := range c.mustSend(env.agg, m0Batch) {
		if s != duplicate {
			t.Fatalf("retry of a closed minute's click: %v, want DUPLICATE", s)
		}
	}
	for range 5 {
		c.mustSend(env.agg, c.batch(10, m0, m0.Add(time.Minute)))                      // late
		c.mustSend(env.agg, c.batch(30, m0.Add(time.Minute), m0.Add(140*time.Second))) // open
	}

	// A batch is written but its fsync never returns: kill -9.
	ctl.set(1)
	caught := c.batch(25, m0.Add(time.Minute), m0.Add(2*time.Minute))
	res := make(chan error, 1)
	go func() { _, err := c.send(env.agg, caught); res <- err }()
	<-ctl.blocked
	stop()
	crashed := make(chan struct{})
	go func() { env.crash(); close(crashed) }()
	if err := <-res; err == nil {
		t.Fatal("a batch whose fsync never finished was acknowledged")
	}
	ctl.set(0)
	<-crashed

	env.open(t)
	if env.agg.Incarnation() != inc || env.agg.FirstMinute() != first {
		t.Fatalf("after restart incarnation %d first minute %d, want %d and %d", env.agg.Incarnation(), env.agg.FirstMinute(), inc, first)
	}
	stop = env.run(t)
	c.retryAll(env.agg)
	c.mustSend(env.agg, c.batch(10, m0, m0.Add(time.Minute))) // late after the restart
	env.clk.Set(m0.Add(3*time.Minute + 20*time.Second))
	c.mustSend(env.agg, c.batch(40, m0.Add(time.Minute), m0.Add(4*time.Minute)))
	env.clk.Set(m0.Add(5*time.Minute + 20*time.Second))
	waitExact(t, r, c, first, clock.Minute(m0)+240)
	poll(t, "log segments of closed minutes to be deleted", func() bool {
		segs := env.agg.wal.Segments()
		return len(segs) > 0 && segs[0] > 1 && len(segs) <= 3
	})

	// Clean shutdown with an open minute: it is not sent early, it
	// survives in the log and closes after the restart.
	c.mustSend(env.agg, c.batch(30, m0.Add(5*time.Minute), m0.Add(6*time.Minute)))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := env.agg.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	stop()
	if err := env.agg.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if counts, _ := r.snapshot(); maps.Equal(counts, c.truth) {
		t.Fatal("the open minute was sent at shutdown")
	}
	env.open(t)
	stop = env.run(t)
	c.retryAll(env.agg)
	env.clk.Set(m0.Add(6*time.Minute + 20*time.Second))
	waitExact(t, r, c, first, clock.Minute(m0)+300)

	// kill -9 with a torn tail: the last record is cut in half.
	c.mustSend(env.agg, c.batch(30, m0.Add(6*time.Minute), m0.Add(7*time.Minute)))
	torn := c.batch(30, m0.Add(6*time.Minute), m0.Add(7*time.Minute))
	c.mustSend(env.agg, torn)
	stop()
	env.crash()
	segs, _ := filepath.Glob(filepath.Join(env.cfg.DataDir, "wal", "*.wal"))
	last := segs[len(segs)-1]
	fi, err := os.Stat(last)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(last, fi.Size()-100); err != nil {
		t.Fatal(err)
	}
	for _, ev := range torn { // the client never got these acks
		delete(c.acked, ev.ClickId)
	}
	env.open(t)
	stop = env.run(t)
	c.retryAll(env.agg)
	env.clk.Set(m0.Add(7*time.Minute + 20*time.Second))
	waitExact(t, r, c, first, clock.Minute(m0)+360)
	stop()
}

// filterMinute keeps the truth of one minute.
func filterMinute(truth map[countKey]int64, m int64) map[countKey]int64 {
	out := map[countKey]int64{}
	for k, v := range truth {
		if k.minute == m {
			out[k] = v
		}
	}
	return out
}

// TestClosedMinuteDedupAfterRestart: once a minute is closed its ids live
// only on disk, and a retry is still a duplicate after a restart, within
// the late horizon; a new click of that minute is a correction.
func TestClosedMinuteDedupAfterRestart(t *testing.T) {
	env := newTestAggregator(t, start, nil, nil)
	a := env.agg
	m0 := clock.MinuteTime(a.FirstMinute())
	forward(t, a, click("c1", "a", m0.Add(time.Second)))
	env.clk.Set(m0.Add(time.Minute + 15*time.Second))
	if err := a.tick(); err != nil {
		t.Fatal(err)
	}
	if a.seen.Len() != 0 {
		t.Fatalf("memory holds %d ids after the minute closed", a.seen.Len())
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	env.clk.Add(2 * time.Hour)
	env.open(t)
	if got := forward(t, env.agg, click("c1", "a", m0.Add(time.Second))).Status[0]; got != duplicate {
		t.Fatalf("retry of a closed minute's click after restart: %v, want DUPLICATE", got)
	}
	if got := forward(t, env.agg, click("c2", "a", m0.Add(time.Second))).Status[0]; got != accepted {
		t.Fatalf("new click of a closed minute after restart: %v, want ACCEPTED", got)
	}
	if got := forward(t, env.agg, click("c2", "a", m0.Add(time.Second))).Status[0]; got != duplicate {
		t.Fatalf("retried late click: %v, want DUPLICATE", got)
	}
}

// TestFsyncFailureStops: when the log cannot be synced the batch is not
// acknowledged, Run returns the error, and nothing is acknowledged after.
func TestFsyncFailureStops(t *testing.T) {
	ctl := newSyncCtl()
	env := newTestAggregator(t, start, nil, func(c *Config) { c.walSync = ctl.sync })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- env.agg.Run(ctx) }()
	forward(t, env.agg, click("ok", "a", start))
	ctl.set(2)
	if _, err := env.agg.Forward(ctx, &clusterv1.ForwardRequest{Events: []*adclickv1.ClickEvent{click("x", "a", start)}}); err == nil {
		t.Fatal("a batch was acknowledged although its fsync failed")
	}
	select {
	case err := <-runErr:
		if err == nil {
			t.Fatal("Run returned nil after a failed fsync")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop after a failed fsync")
	}
	ctl.set(0)
	_, err := env.agg.Forward(ctx, &clusterv1.ForwardRequest{Events: []*adclickv1.ClickEvent{click("y", "a", start)}})
	if err == nil || !wantCode(err, "Unavailable") {
		t.Fatalf("Forward after a failed fsync: %v, want UNAVAILABLE", err)
	}
}

// TestWALBufferFull: when appends outrun syncing beyond the bound, Forward
// answers RESOURCE_EXHAUSTED instead of buffering more.
func TestWALBufferFull(t *testing.T) {
	ctl := newSyncCtl()
	env := newTestAggregator(t, start, nil, func(c *Config) {
		c.walSync = ctl.sync
		c.WAL = wal.Config{MaxBufferBytes: 16}
	})
	ctl.set(1)
	done := make(chan error, 1)
	go func() {
		_, err := env.agg.Forward(context.Background(), &clusterv1.ForwardRequest{Events: []*adclickv1.ClickEvent{click("c1", "a", start), click("c2", "a", start), click("c3", "a", start)}})
		done <- err
	}()
	<-ctl.blocked
	_, err := env.agg.Forward(context.Background(), &clusterv1.ForwardRequest{Events: []*adclickv1.ClickEvent{click("d", "a", start)}})
	if !wantCode(err, "ResourceExhausted") {
		t.Fatalf("Forward with a full log buffer: %v, want RESOURCE_EXHAUSTED", err)
	}
	ctl.set(0) // the blocked sync fails: the aggregator stops
	<-done
}

func TestOpenIDsBound(t *testing.T) {
	env := newTestAggregator(t, start, nil, func(c *Config) { c.MaxOpenIDs = 2 })
	if _, err := env.agg.Forward(context.Background(), &clusterv1.ForwardRequest{Events: []*adclickv1.ClickEvent{click("c1", "a", start), click("c2", "a", start)}}); err != nil {
		t.Fatal(err)
	}
	_, err := env.agg.Forward(context.Background(), &clusterv1.ForwardRequest{Events: []*adclickv1.ClickEvent{click("c3", "a", start)}})
	if !wantCode(err, "ResourceExhausted") || !strings.Contains(err.Error(), "--max-open-ids") {
		t.Fatalf("Forward beyond --max-open-ids: %v, want RESOURCE_EXHAUSTED naming the flag", err)
	}
}

// TestLargeBatchSplitsLogRecords: a batch whose log record would grow past
// maxRecordPart is logged as several records; after a crash every click of
// it is recovered exactly once.
func TestLargeBatchSplitsLogRecords(t *testing.T) {
	old := maxRecordPart
	maxRecordPart = 300 // bytes: a few clicks per record
	t.Cleanup(func() { maxRecordPart = old })
	env := newTestAggregator(t, start, nil, nil)
	var evs []*adclickv1.ClickEvent
	want := map[countKey]int64{}
	for i := range 200 {
		ev := click(fmt.Sprintf("click-%04d-%s", i, strings.Repeat("x", 20)), fmt.Sprintf("ad-%d", i%9), start)
		evs = append(evs, ev)
		want[countKey{0, ev.AdId, clock.Minute(start)}]++
	}
	before := env.agg.wal.Stats().Appends
	for _, s := range forward(t, env.agg, evs...).Status {
		if s != accepted {
			t.Fatalf("status %s", s)
		}
	}
	if n := env.agg.wal.Stats().Appends - before; n < 10 {
		t.Fatalf("one batch of 200 long clicks made %d log records; want it split", n)
	}
	env.crash()
	env.open(t)
	got := emitted(t, env.agg)
	for k, n := range want {
		if got[k] != n {
			t.Fatalf("%v recovered %d, want %d", k, got[k], n)
		}
	}
	if s := forward(t, env.agg, evs[17]).Status[0]; s != duplicate {
		t.Fatalf("resend after recovery: %s", s)
	}
}

// TestIDFilesLifecycle: a closed minute's ids go to its id file, which the
// state refers to; a file no commit refers to (a crash between writing it
// and the commit) is deleted at the next start without touching dedup; a
// minute leaving the late horizon takes its file with it.
func TestIDFilesLifecycle(t *testing.T) {
	env := newTestAggregator(t, start, nil, func(c *Config) { c.LateHorizon = 10 * time.Minute })
	a := env.agg
	m0 := clock.MinuteTime(a.FirstMinute())
	ids := []string{"c1", "c2", "c3"}
	for _, id := range ids {
		forward(t, a, click(id, "a", m0.Add(time.Second)))
	}
	env.clk.Set(m0.Add(time.Minute + 16*time.Second))
	if err := a.tick(); err != nil {
		t.Fatal(err)
	}
	idsDir := filepath.Join(env.cfg.DataDir, "ids")
	m0File := filepath.Join(idsDir, fmt.Sprint(a.FirstMinute())+".ids")
	if _, err := os.Stat(m0File); err != nil {
		t.Fatalf("closed minute's id file: %v", err)
	}
	if files, n := a.store.IDFiles(); files != 1 || n != len(ids) {
		t.Fatalf("state refers to %d id files with %d ids, want 1 with %d", files, n, len(ids))
	}
	// A later minute's file written but never committed, as a crash leaves it.
	stray := dedup.New()
	stray.Add(a.FirstMinute()+60, "c9")
	if _, err := a.store.WriteIDFile(stray.Detach(a.FirstMinute()+120), a.FirstMinute()+60); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(idsDir, "123.ids.tmp"), []byte("torn"), 0o644); err != nil {
		t.Fatal(err)
	}
	env.crash()
	env.open(t)
	a = env.agg
	left, _ := filepath.Glob(filepath.Join(idsDir, "*"))
	if len(left) != 1 || left[0] != m0File {
		t.Fatalf("after restart the ids dir holds %v, want only %s", left, m0File)
	}
	for _, id := range ids {
		if got := forward(t, a, click(id, "a", m0.Add(time.Second))).Status[0]; got != duplicate {
			t.Fatalf("retry of %s after restart: %v, want DUPLICATE", id, got)
		}
	}
	if got := forward(t, a, click("c9", "a", m0.Add(61*time.Second))).Status[0]; got != accepted {
		t.Fatalf("click of the stray file's minute: %v, want ACCEPTED (the uncommitted file must not count)", got)
	}
	// The minute leaves the horizon: its file goes.
	env.clk.Set(m0.Add(11 * time.Minute))
	if err := a.tick(); err != nil {
		t.Fatal(err)
	}
	// Deleted in the background, a few MB at a time (pkg/remover).
	poll(t, "the id file of a minute past the horizon deleted", func() bool {
		_, err := os.Stat(m0File)
		return os.IsNotExist(err)
	})
	if files, _ := a.store.IDFiles(); files != 1 { // the minute of c9 closed meanwhile
		t.Fatalf("state refers to %d id files, want 1", files)
	}
}

// TestSpilledMinuteExact: a minute big enough that its ids spill to disk
// while open (several 1 MiB chunks) still dedups exactly: retries while
// open (confirmed from the spill file), after a kill -9 (the spill file is
// deleted and the log rebuilds the minute), and after the minute closed
// (from its id file); the emitted count is the number of distinct clicks.
func TestSpilledMinuteExact(t *testing.T) {
	env := newTestAggregator(t, start, nil, nil)
	m0 := clock.MinuteTime(env.agg.FirstMinute())
	at := m0.Add(40 * time.Second)
	const n = 80000 // ~3.5 MiB of 40-byte ids
	evs := make([]*adclickv1.ClickEvent, n)
	for i := range evs {
		evs[i] = click(fmt.Sprintf("spilled-click-%08d-%s", i, strings.Repeat("x", 10)), fmt.Sprint("ad-", i%97), at)
	}
	resend := func(what string) {
		t.Helper()
		for i := 0; i < n; i += 4000 {
			batch := evs[i : i+1000]
			for j, s := range forward(t, env.agg, batch...).Status {
				if s != duplicate {
					t.Fatalf("%s: resend of %s answered %v, want DUPLICATE", what, batch[j].ClickId, s)
				}
			}
		}
	}
	for i := 0; i < n; i += 2000 {
		for _, s := range forward(t, env.agg, evs[i:i+2000]...).Status {
			if s != accepted {
				t.Fatalf("first send answered %v", s)
			}
		}
	}
	spills, _ := filepath.Glob(filepath.Join(env.cfg.DataDir, "ids", "*.ids.open"))
	if len(spills) != 1 {
		t.Fatalf("spill files %v, want the open minute's", spills)
	}
	resend("open minute")
	env.crash()
	env.open(t)
	if spills, _ := filepath.Glob(filepath.Join(env.cfg.DataDir, "ids", "*.ids.open")); len(spills) > 1 {
		t.Fatalf("after restart: spill files %v", spills)
	}
	resend("open minute after kill -9")
	env.clk.Set(m0.Add(time.Minute + 16*time.Second))
	if err := env.agg.tick(); err != nil {
		t.Fatal(err)
	}
	if files, ids := env.agg.store.IDFiles(); files != 1 || ids != n {
		t.Fatalf("id files: %d with %d ids, want 1 with %d", files, ids, n)
	}
	resend("closed minute")
	var total int64
	for k, v := range emitted(t, env.agg) {
		if k.filter == 0 {
			total += v
		}
	}
	if total != n {
		t.Fatalf("emitted %d clicks, want %d", total, n)
	}
}

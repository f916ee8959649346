package aggregator

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	clusterv1 "github.com/adclick/adclick/gen/adclick/cluster/v1"
	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
	"github.com/adclick/adclick/pkg/clock"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var start = time.Date(2026, 3, 1, 12, 0, 30, 0, time.UTC)

const (
	accepted  = clusterv1.EventStatus_EVENT_STATUS_ACCEPTED
	duplicate = clusterv1.EventStatus_EVENT_STATUS_DUPLICATE
	rejected  = clusterv1.EventStatus_EVENT_STATUS_REJECTED
)

// emitted sums what the outbox holds and what is counted but not yet
// emitted (taking it out of the counter).
func emitted(t *testing.T, a *Aggregator) map[countKey]int64 {
	t.Helper()
	out := map[countKey]int64{}
	a.mu.Lock()
	for _, p := range a.counter.Drain() {
		for _, c := range p.Counts {
			out[countKey{c.Filter, c.Ad, p.Minute}] += c.N
		}
	}
	a.mu.Unlock()
	a.ob.mu.Lock()
	defer a.ob.mu.Unlock()
	for _, e := range a.ob.parts {
		p, err := e.message()
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range p.Counts {
			out[countKey{c.Filter, c.AdId, p.Minute}] += c.Count
		}
	}
	return out
}

func forward(t *testing.T, a *Aggregator, evs ...*adclickv1.ClickEvent) *clusterv1.ForwardResponse {
	t.Helper()
	resp, err := a.Forward(context.Background(), &clusterv1.ForwardRequest{Events: evs})
	if err != nil {
		t.Fatalf("Forward: %v", err)
	}
	if len(resp.Status) != len(evs) {
		t.Fatalf("Forward answered %d statuses for %d events", len(resp.Status), len(evs))
	}
	return resp
}

func TestForwardStatuses(t *testing.T) {
	horizonStart := clock.MinuteTime(clock.Minute(start.Add(-24 * time.Hour)))
	tests := []struct {
		name    string
		batches [][]*adclickv1.ClickEvent
		want    [][]clusterv1.EventStatus
		reasons []string // substrings of the reasons of rejected events, in order
	}{
		{
			name:    "on time",
			batches: [][]*adclickv1.ClickEvent{{click("c1", "a", start.Add(-20*time.Second))}},
			want:    [][]clusterv1.EventStatus{{accepted}},
		},
		{
			name:    "duplicate in the same batch",
			batches: [][]*adclickv1.ClickEvent{{click("c1", "a", start), click("c1", "a", start), click("c2", "a", start)}},
			want:    [][]clusterv1.EventStatus{{accepted, duplicate, accepted}},
		},
		{
			name: "duplicate across batches, also late ones",
			batches: [][]*adclickv1.ClickEvent{
				{click("c1", "a", start), click("old", "a", start.Add(-time.Hour))},
				{click("old", "a", start.Add(-time.Hour)), click("c1", "a", start)},
			},
			want: [][]clusterv1.EventStatus{{accepted, accepted}, {duplicate, duplicate}},
		},
		{
			name: "late horizon: first minute inside is taken, the one before is not",
			batches: [][]*adclickv1.ClickEvent{{
				click("in", "a", horizonStart),
				click("out", "a", horizonStart.Add(-time.Nanosecond)),
			}},
			want:    [][]clusterv1.EventStatus{{accepted, rejected}},
			reasons: []string{"older than the late horizon (24h0m0s); not counted"},
		},
		{
			name: "future: one minute ahead is taken, beyond is not",
			batches: [][]*adclickv1.ClickEvent{{
				click("f1", "a", start.Add(time.Minute)),
				click("f2", "a", start.Add(time.Minute+time.Millisecond)),
			}},
			want:    [][]clusterv1.EventStatus{{accepted, rejected}},
			reasons: []string{"is more than 1m0s in the future"},
		},
		{
			name: "missing click time",
			batches: [][]*adclickv1.ClickEvent{{
				{ClickId: "x", AdId: "a"},
			}},
			want:    [][]clusterv1.EventStatus{{rejected}},
			reasons: []string{"click_time is missing"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newTestAggregator(t, start, nil, nil)
			var reasons []string
			for i, b := range tt.batches {
				resp := forward(t, env.agg, b...)
				for j, s := range resp.Status {
					if s != tt.want[i][j] {
						t.Errorf("batch %d event %d: status %v, want %v", i, j, s, tt.want[i][j])
					}
					if r, ok := resp.Reasons[int32(j)]; ok != (s == rejected) {
						t.Errorf("batch %d event %d: status %v with reason %q", i, j, s, r)
					} else if ok {
						reasons = append(reasons, r)
					}
				}
			}
			if len(reasons) != len(tt.reasons) {
				t.Fatalf("reasons %q, want %d", reasons, len(tt.reasons))
			}
			for i, r := range reasons {
				if !strings.Contains(r, tt.reasons[i]) {
					t.Errorf("reason %q does not contain %q", r, tt.reasons[i])
				}
			}
		})
	}
}

// TestFilterCounting counts clicks for filter 0 and every matching filter,
// honoring a filter's effective minute, and compares with the test's own
// statement of the filters.
func TestFilterCounting(t *testing.T) {
	eff3 := clock.Minute(start)
	env := newTestAggregator(t, start, testFilters(t, eff3), nil)
	evs := []*adclickv1.ClickEvent{
		{ClickId: "1", AdId: "a", Country: "US", Ip: "10.1.2.3", UserId: "u1"},
		{ClickId: "2", AdId: "a", Country: "DE", Ip: "192.0.2.7"},
		{ClickId: "3", AdId: "b", Country: "US", Ip: "::ffff:10.0.0.1"}, // IPv4-mapped matches the v4 prefix
		{ClickId: "4", AdId: "b", UserId: "u1"},                         // before filter 3 is effective
		{ClickId: "5", AdId: "b", UserId: "u1"},
		{ClickId: "6", AdId: "c", Ip: "192.0.2.8"},
		{ClickId: "1", AdId: "a", Country: "US", Ip: "10.1.2.3", UserId: "u1"}, // duplicate
	}
	times := []time.Duration{-10 * time.Second, -10 * time.Second, 0, -40 * time.Second, 5 * time.Second, 0, -10 * time.Second}
	truth := map[countKey]int64{}
	seen := map[string]bool{}
	for i, ev := range evs {
		at := start.Add(times[i])
		ev.ClickTime = click("", "", at).ClickTime
		if seen[ev.ClickId] {
			continue
		}
		seen[ev.ClickId] = true
		m := clock.Minute(at)
		truth[countKey{0, ev.AdId, m}]++
		for _, f := range matchTruth(ev, m, eff3) {
			truth[countKey{f, ev.AdId, m}]++
		}
	}
	forward(t, env.agg, evs...)
	if got := emitted(t, env.agg); !maps.Equal(got, truth) {
		t.Fatalf("counts\n got %v\nwant %v", got, truth)
	}
}

// TestLateClicks: clicks before the first minute or for a closed minute are
// counted as corrections (non-closing partials), and in the metric.
func TestLateClicks(t *testing.T) {
	env := newTestAggregator(t, start, nil, nil)
	a := env.agg
	first := a.FirstMinute()
	if want := clock.Minute(start.Add(-15 * time.Second)); first != want {
		t.Fatalf("FirstMinute %d, want %d", first, want)
	}
	forward(t, a, click("early", "a", clock.MinuteTime(first).Add(-time.Second))) // before FirstMinute
	forward(t, a, click("on", "a", clock.MinuteTime(first).Add(time.Second)))
	env.clk.Set(clock.MinuteTime(first).Add(time.Minute + 15*time.Second)) // first is due
	a.tick()
	forward(t, a, click("late", "a", clock.MinuteTime(first).Add(2*time.Second)))
	a.tick()
	if got := counterValue(t, a.m.late); got != 2 {
		t.Errorf("late clicks metric %v, want 2", got)
	}
	a.ob.mu.Lock()
	defer a.ob.mu.Unlock()
	type part struct {
		minute int64
		closes bool
		n      int64
	}
	var got []part
	for i, e := range a.ob.parts {
		p, err := e.message()
		if err != nil {
			t.Fatal(err)
		}
		if p.Sequence != uint64(i+1) {
			t.Errorf("partial %d has sequence %d", i, p.Sequence)
		}
		var n int64
		for _, c := range p.Counts {
			n += c.Count
		}
		got = append(got, part{p.Minute, p.ClosesMinute, n})
	}
	want := []part{
		{first, true, 1},       // closing partial of the first minute
		{first - 60, false, 1}, // correction for before FirstMinute
		{first, false, 1},      // correction after the close
	}
	if len(got) != len(want) {
		t.Fatalf("partials %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("partial %d: %+v, want %+v", i, got[i], want[i])
		}
	}
}

// TestManyLateClicks: a batch of late clicks of a closed minute, many
// enough to be looked up on several goroutines, half of them retries of
// clicks the minute counted (now only in its id file), half new: the
// retries are duplicates, the new ones become one correction, and every
// one was looked up on disk.
func TestManyLateClicks(t *testing.T) {
	env := newTestAggregator(t, start, nil, nil)
	a := env.agg
	first := a.FirstMinute()
	at := clock.MinuteTime(first).Add(time.Second)
	var on []*adclickv1.ClickEvent
	for i := range 300 {
		on = append(on, click(fmt.Sprintf("on-%d", i), fmt.Sprintf("ad-%d", i%5), at))
	}
	forward(t, a, on...)
	env.clk.Set(clock.MinuteTime(first).Add(time.Minute + 15*time.Second))
	if err := a.tick(); err != nil {
		t.Fatal(err)
	}
	lookups := counterValue(t, a.m.lateLookups)
	var batch []*adclickv1.ClickEvent
	for i := range 100 {
		batch = append(batch, on[100+i], click(fmt.Sprintf("late-%d", i), fmt.Sprintf("ad-%d", i%4), at))
	}
	resp := forward(t, a, batch...)
	for i, st := range resp.Status {
		want := clusterv1.EventStatus_EVENT_STATUS_ACCEPTED
		if i%2 == 0 {
			want = clusterv1.EventStatus_EVENT_STATUS_DUPLICATE
		}
		if st != want {
			t.Fatalf("event %d (%s): status %v, want %v", i, batch[i].ClickId, st, want)
		}
	}
	if got := counterValue(t, a.m.lateLookups) - lookups; got != 200 {
		t.Errorf("%v late lookups, want 200", got)
	}
	if err := a.tick(); err != nil {
		t.Fatal(err)
	}
	a.ob.mu.Lock()
	defer a.ob.mu.Unlock()
	corrections := map[string]int64{}
	for _, e := range a.ob.parts {
		p, err := e.message()
		if err != nil {
			t.Fatal(err)
		}
		if p.ClosesMinute {
			continue
		}
		for _, c := range p.Counts {
			if c.Filter == 0 {
				corrections[c.AdId] += c.Count
			}
		}
	}
	want := map[string]int64{"ad-0": 25, "ad-1": 25, "ad-2": 25, "ad-3": 25}
	if !maps.Equal(corrections, want) {
		t.Fatalf("corrections %v, want %v", corrections, want)
	}
}

// TestHorizonForgets: as the clock moves on, ids of minutes that leave the
// late horizon are forgotten and their clicks rejected, never counted twice.
func TestHorizonForgets(t *testing.T) {
	env := newTestAggregator(t, start, nil, func(c *Config) { c.LateHorizon = 10 * time.Minute })
	a := env.agg
	at := start.Add(-5 * time.Minute)
	forward(t, a, click("c", "a", at))
	if got := forward(t, a, click("c", "a", at)).Status[0]; got != duplicate {
		t.Fatalf("retry inside the horizon: %v, want DUPLICATE", got)
	}
	env.clk.Add(6 * time.Minute)
	a.tick()
	if a.seen.Len() != 0 {
		t.Fatalf("dedup still holds %d ids after their minute left the horizon", a.seen.Len())
	}
	if got := forward(t, a, click("c", "a", at)).Status[0]; got != rejected {
		t.Fatalf("retry beyond the horizon: %v, want REJECTED", got)
	}
	// The clock stepping back does not bring the minute back.
	env.clk.Add(-6 * time.Minute)
	if got := forward(t, a, click("c", "a", at)).Status[0]; got != rejected {
		t.Fatalf("retry after the clock stepped back: %v, want REJECTED", got)
	}
}

func TestOutboxFull(t *testing.T) {
	env := newTestAggregator(t, start, nil, func(c *Config) { c.MaxOutbox = 3 })
	env.clk.Add(5 * time.Minute) // several minutes due; no reducer registered, so all are kept
	env.agg.tick()
	_, err := env.agg.Forward(context.Background(), &clusterv1.ForwardRequest{Events: []*adclickv1.ClickEvent{click("c", "a", env.clk.Now())}})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "outbox full") {
		t.Fatalf("Forward with a full outbox: %v, want RESOURCE_EXHAUSTED", err)
	}
}

func TestFlushStopsForward(t *testing.T) {
	env := newTestAggregator(t, start, nil, nil)
	forward(t, env.agg, click("c", "a", start), click("late", "a", start.Add(-10*time.Minute)))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	// No reducer is registered: nothing can be delivered, Flush reports it.
	// The open minute is not sent early: only the correction is counted.
	if err := env.agg.Flush(ctx); err == nil || !strings.Contains(err.Error(), "1 partials not yet acknowledged") {
		t.Fatalf("Flush without reducers: %v, want an error naming 1 partial", err)
	}
	_, err := env.agg.Forward(context.Background(), &clusterv1.ForwardRequest{Events: []*adclickv1.ClickEvent{click("d", "a", start)}})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("Forward after Flush: %v, want UNAVAILABLE", err)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{name: "zero means defaults", cfg: Config{}},
		{name: "negative lateness", cfg: Config{AllowedLateness: -time.Second}, wantErr: "--allowed-lateness"},
		{name: "horizon too short", cfg: Config{AllowedLateness: time.Minute, LateHorizon: 2 * time.Minute}, wantErr: "--late-horizon"},
		{name: "negative outbox", cfg: Config{MaxOutbox: -1}, wantErr: "--max-outbox"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if (err == nil) != (tt.wantErr == "") || err != nil && !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate() = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestCommitDoesNotStallForward: while a commit writes a closed minute's
// click ids, Forward goes on: new clicks are accepted, and a resend of a
// click of the minute being written is still found a duplicate.
func TestCommitDoesNotStallForward(t *testing.T) {
	env := newTestAggregator(t, start, nil, nil)
	var evs []*adclickv1.ClickEvent
	for i := range 1000 {
		evs = append(evs, click(fmt.Sprintf("c%d", i), fmt.Sprintf("ad-%d", i%7), start))
	}
	forward(t, env.agg, evs...)
	writing, release := make(chan struct{}), make(chan struct{})
	env.agg.commitHook = func() { close(writing); <-release }
	env.clk.Add(time.Minute + env.cfg.AllowedLateness)
	committed := make(chan error, 1)
	go func() { committed <- env.agg.tick() }()
	<-writing
	done := make(chan *clusterv1.ForwardResponse, 1)
	go func() {
		resp, err := env.agg.Forward(context.Background(), &clusterv1.ForwardRequest{Events: []*adclickv1.ClickEvent{
			evs[3], click("new", "ad-1", env.clk.Now()), click("late-new", "ad-2", start),
		}})
		if err != nil {
			t.Error(err)
		}
		done <- resp
	}()
	select {
	case resp := <-done:
		if want := []clusterv1.EventStatus{duplicate, accepted, accepted}; fmt.Sprint(resp.GetStatus()) != fmt.Sprint(want) {
			t.Fatalf("during the commit: %v, want %v", resp.GetStatus(), want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Forward waited for the commit writing the closed minute's ids")
	}
	close(release)
	if err := <-committed; err != nil {
		t.Fatal(err)
	}
	env.agg.commitHook = nil
	// After the commit the ids are on disk: the resend is still a duplicate.
	if s := forward(t, env.agg, evs[5]).Status[0]; s != duplicate {
		t.Fatalf("after the commit: %s", s)
	}
}

// TestLateLookupRacingACommit: late clicks are looked up on disk before
// Forward takes the counting lock. A resend of a late click whose first
// copy a commit moves to disk in between (it is then in neither the open
// set nor the commit being written) must still be a duplicate: the early
// "absent" is not trusted once a commit finished, and the id is looked up
// again under the lock.
func TestLateLookupRacingACommit(t *testing.T) {
	env := newTestAggregator(t, start, nil, nil)
	forward(t, env.agg, click("on-time", "ad-1", start))
	env.clk.Add(time.Minute + env.cfg.AllowedLateness)
	if err := env.agg.tick(); err != nil {
		t.Fatal(err)
	}
	// A late click of the closed minute: counted, its id in memory until
	// the next commit.
	late := click("late", "ad-1", start.Add(time.Second))
	if s := forward(t, env.agg, late).Status[0]; s != accepted {
		t.Fatalf("late click: %s, want accepted", s)
	}
	early, locked := counterValue(t, env.agg.m.lateLookups), counterValue(t, env.agg.m.lateLookupsLocked)

	// The resend is looked up early (absent: its id is still in memory),
	// then a commit writes that id to disk before Forward takes the lock.
	committed := false
	env.agg.lateLookupHook = func() {
		if !committed {
			committed = true
			if err := env.agg.tick(); err != nil {
				t.Error(err)
			}
		}
	}
	if s := forward(t, env.agg, late).Status[0]; s != duplicate {
		t.Fatalf("resend racing a commit: %s, want duplicate (counted twice)", s)
	}
	env.agg.lateLookupHook = nil
	if !committed {
		t.Fatal("the hook did not run: no early lookup")
	}
	if got := counterValue(t, env.agg.m.lateLookupsLocked) - locked; got != 1 {
		t.Fatalf("lookups under the lock: %v, want 1 (the early answer was stale)", got)
	}

	// Without a racing commit, late resends and new late clicks are
	// answered from the early lookups alone.
	locked = counterValue(t, env.agg.m.lateLookupsLocked)
	resp := forward(t, env.agg, late, click("on-time", "ad-1", start), click("late-2", "ad-2", start.Add(2*time.Second)))
	if want := []clusterv1.EventStatus{duplicate, duplicate, accepted}; fmt.Sprint(resp.GetStatus()) != fmt.Sprint(want) {
		t.Fatalf("late batch: %v, want %v", resp.GetStatus(), want)
	}
	if got := counterValue(t, env.agg.m.lateLookupsLocked) - locked; got != 0 {
		t.Fatalf("lookups under the lock: %v, want 0", got)
	}
	if got := counterValue(t, env.agg.m.lateLookups) - early; got != 1+3 {
		t.Fatalf("early lookups: %v, want 4", got)
	}
}

package aggregator

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv1 "github.com/adclick/adclick/gen/adclick/cluster/v1"
	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
	"github.com/adclick/adclick/pkg/clock"
	"github.com/adclick/adclick/pkg/filter"
	"github.com/adclick/adclick/pkg/membership"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// fakeMembers is a MemberSource the test changes by hand.
type fakeMembers struct {
	mu      sync.Mutex
	members []membership.Member
	subs    []chan struct{}
}

func (f *fakeMembers) Members() []membership.Member {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.members
}

func (f *fakeMembers) Subscribe() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := make(chan struct{}, 1)
	f.subs = append(f.subs, ch)
	return ch
}

func (f *fakeMembers) set(ms ...membership.Member) {
	f.mu.Lock()
	f.members = ms
	subs := f.subs
	f.mu.Unlock()
	for _, ch := range subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// fixedFilters is a FilterSource with one snapshot.
type fixedFilters struct{ set *filter.Set }

func (f fixedFilters) Current() *filter.Set { return f.set }

// testFilters: 1 = country US, 2 = ips in 10.0.0.0/8 or 192.0.2.7,
// 3 = user u1 from minute eff3 on.
func testFilters(t testing.TB, eff3 int64) *filter.Set {
	t.Helper()
	set, err := filter.NewSet([]filter.Filter{
		{ID: 1, Countries: []string{"US"}},
		{ID: 2, IPs: []string{"10.0.0.0/8", "192.0.2.7"}},
		{ID: 3, UserIDs: []string{"u1"}, EffectiveFrom: eff3},
	})
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// matchTruth is the test's own statement of testFilters.
func matchTruth(ev *adclickv1.ClickEvent, minute, eff3 int64) []int64 {
	var out []int64
	if ev.Country == "US" {
		out = append(out, 1)
	}
	if strings.HasPrefix(ev.Ip, "10.") || strings.HasPrefix(ev.Ip, "::ffff:10.") || ev.Ip == "192.0.2.7" {
		out = append(out, 2)
	}
	if ev.UserId == "u1" && minute >= eff3 {
		out = append(out, 3)
	}
	return out
}

func click(id, ad string, at time.Time) *adclickv1.ClickEvent {
	return &adclickv1.ClickEvent{ClickId: id, AdId: ad, ClickTime: timestamppb.New(at)}
}

type countKey struct {
	filter int64
	ad     string
	minute int64
}

// fakeReducer implements ReducerService: it applies partials of each
// (aggregator, incarnation) in sequence order, records them, and can fail
// its first calls. Safe for concurrent use.
type fakeReducer struct {
	clusterv1.UnimplementedReducerServiceServer
	mu        sync.Mutex
	failFirst int // answer UNAVAILABLE to this many calls
	calls     int
	applied   map[string]uint64 // aggregator/incarnation -> applied through
	counts    map[countKey]int64
	closed    []int64 // minutes, in the order their closing partial arrived
	addr      string
}

func startReducer(t *testing.T, failFirst int) *fakeReducer {
	t.Helper()
	r := &fakeReducer{failFirst: failFirst, applied: map[string]uint64{}, counts: map[countKey]int64{}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	clusterv1.RegisterReducerServiceServer(srv, r)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	r.addr = lis.Addr().String()
	return r
}

func (r *fakeReducer) Apply(_ context.Context, req *clusterv1.ApplyRequest) (*clusterv1.ApplyResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.calls <= r.failFirst {
		return nil, status.Error(codes.Unavailable, "fake reducer: failing on purpose")
	}
	key := fmt.Sprintf("%s/%d", req.AggregatorId, req.Incarnation)
	through := r.applied[key]
	for _, p := range req.Partials {
		if p.Sequence <= through {
			continue // resend: no-op
		}
		if p.Sequence != through+1 {
			st, _ := status.New(codes.FailedPrecondition, fmt.Sprintf("gap: have %d, got %d", through, p.Sequence)).
				WithDetails(&clusterv1.ApplyResponse{AppliedThrough: through})
			r.applied[key] = through
			return nil, st.Err()
		}
		for _, c := range p.Counts {
			r.counts[countKey{c.Filter, c.AdId, p.Minute}] += c.Count
		}
		if p.ClosesMinute {
			r.closed = append(r.closed, p.Minute)
		}
		through = p.Sequence
	}
	r.applied[key] = through
	return &clusterv1.ApplyResponse{AppliedThrough: through}, nil
}

func (r *fakeReducer) snapshot() (map[countKey]int64, []int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := make(map[countKey]int64, len(r.counts))
	for k, v := range r.counts {
		c[k] = v
	}
	return c, append([]int64(nil), r.closed...)
}

func (r *fakeReducer) member(id string) membership.Member {
	return membership.Member{ID: id, Addr: r.addr}
}

// poll waits until cond holds, failing the test after a deadline.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type testEnv struct {
	agg     *Aggregator
	clk     *clock.Fake
	members *fakeMembers
}

func newTestAggregator(t testing.TB, start time.Time, set *filter.Set, mutate func(*Config)) *testEnv {
	t.Helper()
	cfg := Config{NodeID: "agg-1", AllowedLateness: 15 * time.Second, TickInterval: 5 * time.Millisecond, DeliverBackoffMax: 100 * time.Millisecond}
	if mutate != nil {
		mutate(&cfg)
	}
	env := &testEnv{clk: clock.NewFake(start), members: &fakeMembers{}}
	a, err := New(cfg, Deps{
		Clock:    env.clk,
		Log:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		Filters:  fixedFilters{set},
		Reducers: env.members,
	})
	if err != nil {
		t.Fatal(err)
	}
	env.agg = a
	return env
}

func (e *testEnv) run(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.agg.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

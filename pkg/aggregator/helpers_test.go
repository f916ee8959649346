package aggregator

import (
	"context"
	"errors"
	"fmt"
	"github.com/adclick/adclick/pkg/ring/ringtest"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv1 "github.com/adclick/adclick/gen/adclick/cluster/v1"
	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
	"github.com/adclick/adclick/pkg/clock"
	"github.com/adclick/adclick/pkg/filter"
	"github.com/adclick/adclick/pkg/membership"
	"github.com/adclick/adclick/pkg/membership/membershiptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// fakeMembers is a member source the test sets by hand.
type fakeMembers = membershiptest.Source

// fixedFilters is a FilterSource with one snapshot.
type fixedFilters struct{ set *filter.Set }

func (f fixedFilters) Current() *filter.Set { return f.set }

func (f fixedFilters) Fresh(time.Duration) bool { return true }

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
	content   map[string]map[uint64]string // aggregator/incarnation -> sequence -> partial content
	reused    []string                     // sequences received again with other content
}

func startReducer(t *testing.T, failFirst int) *fakeReducer {
	t.Helper()
	r := &fakeReducer{failFirst: failFirst, applied: map[string]uint64{}, counts: map[countKey]int64{}, content: map[string]map[uint64]string{}}
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
	if r.content[key] == nil {
		r.content[key] = map[uint64]string{}
	}
	for _, p := range req.Partials {
		c := prototext.Format(p)
		if old, ok := r.content[key][p.Sequence]; ok && old != c {
			r.reused = append(r.reused, fmt.Sprintf("%s seq %d: had %q, got %q", key, p.Sequence, old, c))
		}
		if p.Sequence <= through {
			continue // resend: no-op
		}
		if p.Sequence != through+1 {
			st, _ := status.New(codes.FailedPrecondition, fmt.Sprintf("gap: have %d, got %d", through, p.Sequence)).
				WithDetails(&clusterv1.ApplyResponse{AppliedThrough: through})
			r.applied[key] = through
			return nil, st.Err()
		}
		r.content[key][p.Sequence] = c
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
	ring    *ringtest.Source
	members *fakeMembers
	cfg     Config
	set     *filter.Set
}

func newTestAggregator(t testing.TB, start time.Time, set *filter.Set, mutate func(*Config)) *testEnv {
	t.Helper()
	cfg := Config{NodeID: "agg-1", DataDir: t.TempDir(), AllowedLateness: 15 * time.Second, TickInterval: 5 * time.Millisecond, DeliverBackoffMax: 100 * time.Millisecond}
	if mutate != nil {
		mutate(&cfg)
	}
	env := &testEnv{clk: clock.NewFake(start), ring: ringtest.New(cfg.NodeID), members: &fakeMembers{}, cfg: cfg, set: set}
	env.open(t)
	return env
}

// open starts an aggregator on the environment's data dir and clock; it is
// closed at the end of the test unless it crashed or was closed before.
func (e *testEnv) open(t testing.TB) {
	t.Helper()
	a, err := New(e.cfg, Deps{
		Clock:    e.clk,
		Log:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		Filters:  fixedFilters{e.set},
		Reducers: e.members,
		Ring:     e.ring,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.agg = a
	t.Cleanup(func() { _ = a.Close() })
}

// crash abandons the aggregator like a kill -9: what the log has not
// synced is lost, nothing is flushed or delivered; the files are released
// so that a new aggregator can open them. Run must have stopped.
func (e *testEnv) crash() {
	a := e.agg
	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
	a.wal.Abandon()
	_ = a.store.Close()
}

// run runs the aggregator until the test ends or the returned stop is called.
func (e *testEnv) run(t *testing.T) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	a := e.agg
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// syncCtl is an fsync hook tests switch between syncing, blocking until
// released, and failing. Safe for concurrent use.
type syncCtl struct {
	mu      sync.Mutex
	mode    int // 0 sync, 1 block, 2 fail
	release chan struct{}
	blocked chan struct{} // receives when a sync blocks
}

func newSyncCtl() *syncCtl { return &syncCtl{blocked: make(chan struct{}, 1)} }

func (s *syncCtl) set(mode int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mode == 1 && mode != 1 {
		close(s.release)
	}
	if mode == 1 && s.mode != 1 {
		s.release = make(chan struct{})
	}
	s.mode = mode
}

func (s *syncCtl) sync(f *os.File) error {
	s.mu.Lock()
	mode, release := s.mode, s.release
	s.mu.Unlock()
	switch mode {
	case 1:
		select {
		case s.blocked <- struct{}{}:
		default:
		}
		<-release
		return errors.New("fsync interrupted (test crash)")
	case 2:
		return errors.New("injected EIO")
	}
	return f.Sync()
}

func wantCode(err error, code string) bool {
	st, ok := status.FromError(err)
	return ok && st.Code().String() == code
}

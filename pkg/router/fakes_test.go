package router

import (
	"context"
	"io"
	"log/slog"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	clusterv1 "github.com/adclick/adclick/gen/adclick/cluster/v1"
	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
	"github.com/adclick/adclick/pkg/clock"
	"github.com/adclick/adclick/pkg/filter"
	"github.com/adclick/adclick/pkg/membership"
	"github.com/adclick/adclick/pkg/membership/membershiptest"
	"github.com/adclick/adclick/pkg/ring/ringtest"
)

// fakeMembers is a member source the test sets by hand.
type fakeMembers = membershiptest.Source

// fakeFilters is a FilterSource.
type fakeFilters struct{ set atomic.Pointer[filter.Set] }

func (f *fakeFilters) Current() *filter.Set { return f.set.Load() }

func (f *fakeFilters) Set(t *testing.T, fs ...filter.Filter) {
	t.Helper()
	s, err := filter.NewSet(fs)
	if err != nil {
		t.Fatal(err)
	}
	f.set.Store(s)
}

// fakeStore is an in-memory FilterStore with the real store's validation.
type fakeStore struct {
	mu    sync.Mutex
	clock clock.Clock
	next  int64
	byID  map[int64]filter.Filter
}

func (s *fakeStore) Create(_ context.Context, f filter.Filter) (filter.Filter, error) {
	f, err := filter.Normalize(f)
	if err != nil {
		return f, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next++
	f.ID, f.EffectiveFrom = s.next, filter.EffectiveFrom(s.clock.Now(), filter.DefaultLead)
	if s.byID == nil {
		s.byID = map[int64]filter.Filter{}
	}
	s.byID[f.ID] = f
	return f, nil
}

func (s *fakeStore) List(context.Context) ([]filter.Filter, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []filter.Filter
	for _, f := range s.byID {
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func (s *fakeStore) Delete(_ context.Context, id int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.byID[id]; !ok {
		return filter.ErrNotFound
	}
	delete(s.byID, id)
	return nil
}

// lateUser marks events the fake aggregator rejects as too old.
const (
	lateUser   = "late"
	lateReason = "older than the late horizon"
	slowUser   = "slow" // the fake aggregator answers such a batch a little later
)

// fakeAggregator dedups by click_id like the real one and records what it got.
type fakeAggregator struct {
	clusterv1.UnimplementedAggregatorServiceServer
	id   string
	fail atomic.Int32 // a codes.Code to answer with, 0 = serve
	hang atomic.Bool  // answer only when the caller gives up

	mu      sync.Mutex
	seen    map[string]bool
	ads     []string // ad ids received, in order
	batches int
	// owns, when set, is the aggregator's own view of the ring: events it
	// does not own are answered NOT_OWNER.
	owns func(ad string, minute int64) bool
}

func (a *fakeAggregator) Forward(ctx context.Context, req *clusterv1.ForwardRequest) (*clusterv1.ForwardResponse, error) {
	if a.hang.Load() {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if c := codes.Code(a.fail.Load()); c != codes.OK {
		return nil, status.Errorf(c, "fake aggregator %s fails", a.id)
	}
	resp := &clusterv1.ForwardResponse{Reasons: map[int32]string{}}
	slow := false
	a.mu.Lock()
	a.batches++
	for i, ev := range req.Events {
		a.ads = append(a.ads, ev.AdId)
		slow = slow || ev.UserId == slowUser
		switch {
		case a.owns != nil && !a.owns(ev.AdId, clock.MinuteOfUnix(ev.ClickTime.GetSeconds())):
			resp.Status = append(resp.Status, clusterv1.EventStatus_EVENT_STATUS_NOT_OWNER)
		case ev.UserId == lateUser:
			resp.Status = append(resp.Status, clusterv1.EventStatus_EVENT_STATUS_REJECTED)
			resp.Reasons[int32(i)] = lateReason
		case a.seen[ev.ClickId]:
			resp.Status = append(resp.Status, clusterv1.EventStatus_EVENT_STATUS_DUPLICATE)
		default:
			a.seen[ev.ClickId] = true
			resp.Status = append(resp.Status, clusterv1.EventStatus_EVENT_STATUS_ACCEPTED)
		}
	}
	a.mu.Unlock()
	if slow {
		time.Sleep(20 * time.Millisecond) // reorders answers of pipelined requests
	}
	return resp, nil
}

func (a *fakeAggregator) batchCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.batches
}

func (a *fakeAggregator) received() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.ads...)
}

// fakeReducer answers queries with a count that names it and records requests.
type fakeReducer struct {
	clusterv1.UnimplementedReducerServiceServer
	id    string
	count int64
	fail  atomic.Int32 // a codes.Code to answer with, 0 = serve
	hang  atomic.Bool  // answer only when the caller gives up
	calls atomic.Int32

	mu       sync.Mutex
	lastAC   *adclickv1.AggregatedCountRequest
	lastPopl *adclickv1.PopularAdsRequest
}

// enter counts a call and plays the configured hang or failure.
func (f *fakeReducer) enter(ctx context.Context) error {
	f.calls.Add(1)
	if f.hang.Load() {
		<-ctx.Done()
		return ctx.Err()
	}
	if c := codes.Code(f.fail.Load()); c != codes.OK {
		return status.Errorf(c, "fake reducer %s fails", f.id)
	}
	return nil
}

func (f *fakeReducer) AggregatedCount(ctx context.Context, req *adclickv1.AggregatedCountRequest) (*adclickv1.AggregatedCountResponse, error) {
	if err := f.enter(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.lastAC = req
	f.mu.Unlock()
	return &adclickv1.AggregatedCountResponse{AdId: req.AdId, Count: f.count, From: req.From, To: req.To}, nil
}

func (f *fakeReducer) PopularAds(ctx context.Context, req *adclickv1.PopularAdsRequest) (*adclickv1.PopularAdsResponse, error) {
	if err := f.enter(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.lastPopl = req
	f.mu.Unlock()
	return &adclickv1.PopularAdsResponse{Ads: []*adclickv1.AdCount{{AdId: "ad-top", Count: f.count}}, To: req.To}, nil
}

// serve starts a gRPC server on a loopback port and returns its address
// and a function that stops it (also called at cleanup).
func serve(t *testing.T, register func(*grpc.Server)) (string, func()) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	register(s)
	go func() { _ = s.Serve(lis) }()
	var once sync.Once
	stop := func() { once.Do(s.Stop) }
	t.Cleanup(stop)
	return lis.Addr().String(), stop
}

type aggNode struct {
	member membership.Member
	fake   *fakeAggregator
	stop   func()
}

func startAggregator(t *testing.T, id string) *aggNode {
	t.Helper()
	f := &fakeAggregator{id: id, seen: map[string]bool{}}
	addr, stop := serve(t, func(s *grpc.Server) { clusterv1.RegisterAggregatorServiceServer(s, f) })
	return &aggNode{member: membership.Member{ID: id, Addr: addr}, fake: f, stop: stop}
}

type redNode struct {
	member membership.Member
	fake   *fakeReducer
	stop   func()
}

func startReducer(t *testing.T, id string, count int64) *redNode {
	t.Helper()
	f := &fakeReducer{id: id, count: count}
	addr, stop := serve(t, func(s *grpc.Server) { clusterv1.RegisterReducerServiceServer(s, f) })
	return &redNode{member: membership.Member{ID: id, Addr: addr}, fake: f, stop: stop}
}

// env is a router served over loopback gRPC with fake collaborators.
type env struct {
	router  *Router
	clock   *clock.Fake
	ring    *ringtest.Source
	aggs    *fakeMembers
	reds    *fakeMembers
	filters *fakeFilters
	store   *fakeStore
	reg     *prometheus.Registry
	conn    *grpc.ClientConn
	ingest  adclickv1.IngestServiceClient
	query   adclickv1.QueryServiceClient
	filterC adclickv1.FilterServiceClient
}

var testNow = time.Date(2025, 1, 2, 3, 4, 35, 0, time.UTC)

func newEnv(t *testing.T, cfg Config, aggs []*aggNode, reds []*redNode) *env {
	t.Helper()
	e := &env{clock: clock.NewFake(testNow), aggs: &fakeMembers{}, reds: &fakeMembers{}, filters: &fakeFilters{}}
	e.store = &fakeStore{clock: e.clock}
	var ids []string
	for _, a := range aggs {
		e.aggs.Set(append(e.aggs.Members(), a.member)...)
		ids = append(ids, a.member.ID)
	}
	e.ring = ringtest.New(ids...)
	for _, r := range reds {
		e.reds.Set(append(e.reds.Members(), r.member)...)
	}
	e.filters.Set(t)
	e.reg = prometheus.NewPedanticRegistry()
	r, err := New(cfg, Deps{Clock: e.clock, Reg: e.reg, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Aggregators: e.aggs, Reducers: e.reds, Ring: e.ring, Filters: e.filters, FilterStore: e.store})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		if err := r.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	e.router = r
	addr, _ := serve(t, func(s *grpc.Server) { r.Register(s) })
	e.conn, err = grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.conn.Close() })
	e.ingest = adclickv1.NewIngestServiceClient(e.conn)
	e.query = adclickv1.NewQueryServiceClient(e.conn)
	e.filterC = adclickv1.NewFilterServiceClient(e.conn)
	return e
}

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond until it holds or a deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func wantCode(t *testing.T, err error, code codes.Code, substr string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != code {
		t.Fatalf("code = %v (%v), want %v", st.Code(), err, code)
	}
	if substr != "" && !strings.Contains(st.Message(), substr) {
		t.Fatalf("message %q does not contain %q", st.Message(), substr)
	}
}

// metricValue sums the counter or gauge samples, or the histograms' observation
// counts, of the metric family name.
func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue() + float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum
}

package aggregator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	clusterv1 "github.com/adclick/adclick/gen/adclick/cluster/v1"
	"github.com/adclick/adclick/pkg/clock"
	"github.com/adclick/adclick/pkg/dedup"
	"github.com/adclick/adclick/pkg/filter"
	"github.com/adclick/adclick/pkg/membership"
	"github.com/adclick/adclick/pkg/window"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// futureLimit is how far after now a click_time may be.
const futureLimit = time.Minute

// FilterSource gives the current filter snapshot. Current must be cheap
// and safe for concurrent use.
type FilterSource interface{ Current() *filter.Set }

// MemberSource gives the registered reducers and notifies of changes.
type MemberSource interface {
	Members() []membership.Member
	Subscribe() <-chan struct{}
}

// Deps are the aggregator's collaborators.
type Deps struct {
	Clock    clock.Clock
	Log      *slog.Logger
	Reg      prometheus.Registerer
	Filters  FilterSource
	Reducers MemberSource
}

// Aggregator counts forwarded clicks and delivers partials to reducers.
// Safe for concurrent use: Forward may run on many goroutines; Run and
// Flush each at most once at a time.
type Aggregator struct {
	clusterv1.UnimplementedAggregatorServiceServer

	cfg         Config
	clock       clock.Clock
	log         *slog.Logger
	filters     FilterSource
	reducers    MemberSource
	memberCh    <-chan struct{}
	m           *metrics
	incarnation int64
	firstMinute int64
	ob          *outbox
	delivering  sem // held by whoever runs deliver: Run, or Flush when Run does not

	// mu guards the counting state below; Forward holds it once per batch,
	// so dedup and counting are one atomic step.
	mu       sync.Mutex
	seen     *dedup.Set
	counter  *window.Counter
	horizon  int64   // minutes before this are rejected and forgotten; never decreases
	draining bool    // Flush started: Forward refuses new clicks
	fids     []int64 // scratch for matching filter ids
	click    filter.Click
}

// New returns an aggregator whose first minute is the one containing
// now - AllowedLateness.
func New(cfg Config, deps Deps) (*Aggregator, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("aggregator config: %w", err)
	}
	if cfg.NodeID == "" {
		return nil, errors.New("aggregator config: node id is empty (set --node-id)")
	}
	if deps.Clock == nil || deps.Filters == nil || deps.Reducers == nil {
		return nil, errors.New("aggregator: Deps.Clock, Deps.Filters and Deps.Reducers are required")
	}
	if deps.Log == nil {
		deps.Log = slog.Default()
	}
	now := deps.Clock.Now()
	first := clock.Minute(now.Add(-cfg.AllowedLateness))
	m := newMetrics(deps.Reg)
	a := &Aggregator{
		cfg:         cfg,
		clock:       deps.Clock,
		log:         deps.Log.With("component", "aggregator", "node", cfg.NodeID),
		filters:     deps.Filters,
		reducers:    deps.Reducers,
		memberCh:    deps.Reducers.Subscribe(),
		m:           m,
		incarnation: now.UnixNano(),
		firstMinute: first,
		ob:          newOutbox(m),
		delivering:  make(sem, 1),
		seen:        dedup.New(),
		counter:     window.New(first, cfg.AllowedLateness, cfg.PartialMaxCounts),
		horizon:     clock.Minute(now.Add(-cfg.LateHorizon)),
	}
	return a, nil
}

// Incarnation identifies this run: unix nanos at New.
func (a *Aggregator) Incarnation() int64 { return a.incarnation }

// FirstMinute is the first minute this incarnation closes.
func (a *Aggregator) FirstMinute() int64 { return a.firstMinute }

// Forward counts a batch of validated clicks and answers a status per event.
func (a *Aggregator) Forward(_ context.Context, req *clusterv1.ForwardRequest) (*clusterv1.ForwardResponse, error) {
	evs := req.GetEvents()
	resp := &clusterv1.ForwardResponse{Status: make([]clusterv1.EventStatus, len(evs))}
	if len(evs) == 0 {
		return resp, nil
	}
	now := a.clock.Now()
	futureEnd := now.Add(futureLimit)
	set := a.filters.Current()
	useFilters := set.Len() > 0
	var accepted, dups, rejected, late int

	a.mu.Lock()
	if a.draining {
		a.mu.Unlock()
		return nil, status.Errorf(codes.Unavailable, "aggregator %s is shutting down; retry the batch (duplicates are safe)", a.cfg.NodeID)
	}
	if n := a.ob.retained(); n >= a.cfg.MaxOutbox {
		a.mu.Unlock()
		return nil, status.Error(codes.ResourceExhausted, "aggregator outbox full: reducers are not keeping up; retry later")
	}
	a.advanceHorizonLocked(now)
	for i, ev := range evs {
		ct := ev.GetClickTime()
		if ct == nil {
			resp.Status[i] = clusterv1.EventStatus_EVENT_STATUS_REJECTED
			a.reject(resp, i, "click_time is missing; not counted")
			rejected++
			continue
		}
		t := ct.AsTime()
		minute := clock.Minute(t)
		switch {
		case minute < a.horizon:
			resp.Status[i] = clusterv1.EventStatus_EVENT_STATUS_REJECTED
			a.reject(resp, i, fmt.Sprintf("click_time %s is older than the late horizon (%s); not counted", t.Format(time.RFC3339Nano), a.cfg.LateHorizon))
			rejected++
			continue
		case t.After(futureEnd):
			resp.Status[i] = clusterv1.EventStatus_EVENT_STATUS_REJECTED
			a.reject(resp, i, fmt.Sprintf("click_time %s is more than %s in the future (now %s); not counted", t.Format(time.RFC3339Nano), futureLimit, now.UTC().Format(time.RFC3339Nano)))
			rejected++
			continue
		}
		if !a.seen.Add(minute, ev.GetClickId()) {
			resp.Status[i] = clusterv1.EventStatus_EVENT_STATUS_DUPLICATE
			dups++
			continue
		}
		a.fids = a.fids[:0]
		if useFilters {
			a.click.Country, a.click.UserID, a.click.IP = ev.GetCountry(), ev.GetUserId(), netip.Addr{}
			if ip := ev.GetIp(); ip != "" {
				a.click.IP, _ = netip.ParseAddr(ip) // validated by the router; zero if not
			}
			a.fids = set.AppendMatching(a.fids, &a.click, minute)
		}
		if a.counter.Add(minute, ev.GetAdId(), a.fids) {
			late++
		}
		accepted++ // resp.Status[i] is already ACCEPTED (the zero value)
	}
	a.mu.Unlock()

	a.m.accepted.Add(float64(accepted))
	a.m.duplicate.Add(float64(dups))
	a.m.rejected.Add(float64(rejected))
	a.m.late.Add(float64(late))
	return resp, nil
}

func (a *Aggregator) reject(resp *clusterv1.ForwardResponse, i int, reason string) {
	if resp.Reasons == nil {
		resp.Reasons = make(map[int32]string)
	}
	resp.Reasons[int32(i)] = reason
}

// advanceHorizonLocked moves the late horizon to now and forgets the ids of
// minutes that left it. The horizon never moves back, so a forgotten
// minute's clicks are rejected from then on even if the clock steps back.
func (a *Aggregator) advanceHorizonLocked(now time.Time) {
	if h := clock.Minute(now.Add(-a.cfg.LateHorizon)); h > a.horizon {
		a.horizon = h
		a.seen.Forget(h)
	}
}

// tick closes due minutes and moves them and pending corrections to the outbox.
func (a *Aggregator) tick() {
	now := a.clock.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.advanceHorizonLocked(now)
	closed := a.counter.Close(now)
	for _, p := range closed {
		if p.Closes {
			a.m.minutesClosed.Inc()
		}
	}
	// Appending under a.mu keeps sequence order equal to emission order.
	a.ob.add(closed)
	a.ob.add(a.counter.Corrections())
	a.m.openMinutes.Set(float64(a.counter.OpenMinutes()))
	a.m.dedupIDs.Set(float64(a.seen.Len()))
}

// Run closes minutes and flushes corrections every TickInterval, and
// delivers partials to the registered reducers, until ctx is done.
func (a *Aggregator) Run(ctx context.Context) error {
	if !a.delivering.tryAcquire() {
		return errBusy
	}
	defer func() {
		a.delivering.release()
		a.ob.notify() // a waiting Flush takes delivery over
	}()
	var wg sync.WaitGroup
	wg.Go(func() { a.deliver(ctx) })
	t := time.NewTicker(a.cfg.TickInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			a.tick()
		case <-ctx.Done():
			wg.Wait()
			return nil
		}
	}
}

// Flush stops accepting clicks, moves everything counted and not yet
// emitted into the outbox as non-closing partials (minutes are not claimed
// closed early), and delivers the outbox until it is empty or ctx ends. It
// relies on a running Run to deliver, and delivers itself when Run is not
// running (or stops meanwhile). The error tells how much was left.
func (a *Aggregator) Flush(ctx context.Context) error {
	a.mu.Lock()
	a.draining = true
	a.ob.add(a.counter.Drain())
	a.mu.Unlock()
	for {
		// Take the change channel before trying: a Run that stops after a
		// failed try closes it, so this loop comes back to take over.
		ch := a.ob.changes()
		if a.delivering.tryAcquire() {
			defer a.delivering.release()
			dctx, cancel := context.WithCancel(ctx)
			var wg sync.WaitGroup
			wg.Go(func() { a.deliver(dctx) })
			err := a.waitDelivered(ctx)
			cancel()
			wg.Wait()
			return err
		}
		n := a.ob.retained()
		if n == 0 {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("%d partials not yet acknowledged by every registered reducer: %w", n, ctx.Err())
		}
	}
}

package aggregator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	clusterv1 "github.com/adclick/adclick/gen/adclick/cluster/v1"
	"github.com/adclick/adclick/pkg/aggstate"
	"github.com/adclick/adclick/pkg/clock"
	"github.com/adclick/adclick/pkg/dedup"
	"github.com/adclick/adclick/pkg/event"
	"github.com/adclick/adclick/pkg/filter"
	"github.com/adclick/adclick/pkg/grpcbuf"
	"github.com/adclick/adclick/pkg/hotad"
	"github.com/adclick/adclick/pkg/membership"
	"github.com/adclick/adclick/pkg/ring"
	"github.com/adclick/adclick/pkg/wal"
	"github.com/adclick/adclick/pkg/window"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// futureLimit is how far after now a click_time may be.
const futureLimit = time.Minute

// FilterSource gives the current filter snapshot (filter.Watcher). Safe
// for concurrent use; both methods must be cheap.
type FilterSource interface {
	Current() *filter.Set
	// Fresh tells whether the view was confirmed against etcd within ttl.
	Fresh(ttl time.Duration) bool
}

// MemberSource gives the registered reducers and notifies of changes.
type MemberSource interface {
	Members() []membership.Member
	Subscribe() <-chan struct{}
}

// RingView is the aggregator's view of the ring history (ring.Watcher).
// Safe for concurrent use; Current and Fresh must be cheap.
type RingView interface {
	// Current returns the routing of the newest history known.
	Current() *ring.Versions
	// Fresh tells whether the view was confirmed against etcd recently
	// enough (the history's view TTL) to act on at now.
	Fresh(now time.Time) bool
}

// Deps are the aggregator's collaborators.
type Deps struct {
	Clock    clock.Clock
	Log      *slog.Logger
	Reg      prometheus.Registerer
	Filters  FilterSource
	Reducers MemberSource
	Ring     RingView
}

// Aggregator counts forwarded clicks and delivers partials to reducers.
// Safe for concurrent use: Forward may run on many goroutines; Run and
// Flush each at most once at a time.
type Aggregator struct {
	clusterv1.UnimplementedAggregatorServiceServer

	cfg        Config
	clock      clock.Clock
	log        *slog.Logger
	filters    FilterSource
	reducers   MemberSource
	ring       RingView
	memberCh   <-chan struct{}
	m          *metrics
	meta0      aggstate.Meta // as loaded or created at New: incarnation and first minute never change
	ob         *outbox
	delivering sem // held by whoever runs deliver: Run, or Flush when Run does not
	store      *aggstate.Store
	wal        *wal.WAL
	acceptedN  atomic.Uint64 // clicks accepted since start, for the load gossip
	flushing   atomic.Bool   // Flush started: deliveries are not paced
	frozen     atomic.Bool   // frozen for a hand-over (Freeze, until Thaw): deliveries are not paced either
	failed     chan struct{} // closed by fail
	failOnce   sync.Once

	// commitMu serializes commits (tick, Flush, Freeze); Forward never takes it.
	commitMu sync.Mutex

	// mu guards the counting state below; Forward holds it once per batch,
	// so dedup, counting and the log append are one atomic step. A commit
	// holds it only to take closed minutes out and to install the result.
	mu   sync.Mutex
	seen *dedup.Set // ids of open minutes and of late clicks not yet durable
	// prefetched sums what the prefetches read, only so that the reads stay.
	prefetched uint64
	counter    *window.Counter
	meta       aggstate.Meta       // as last committed
	horizon    int64               // minutes before this are rejected and forgotten; never decreases
	segs       map[uint64]*segInfo // what log segments hold that is not yet durable elsewhere
	commits    uint64              // state commits done
	// commitsStarted counts commits whose set of click ids is fixed: a late
	// click appended after that is in a later commit.
	commitsStarted uint64
	closing        *dedup.Frozen // ids of the commit being written: still looked up by Forward
	// commitsDone counts commits that cleared closing (written under mu):
	// a late click looked up on disk before Forward took mu is trusted
	// absent only if no commit finished meanwhile (lateLookups).
	commitsDone atomic.Uint64
	// nextMinute is counter.Next() as Forward or a commit last saw it under
	// mu; Forward reads it without mu to pick the clicks to look up early.
	nextMinute     atomic.Int64
	lateLookupHook func()  // tests: runs after the early lookups, before Forward takes mu
	commitHook     func()  // tests: runs while a commit writes, without the lock
	draining       bool    // Flush started: Forward refuses new clicks
	handing        bool    // handing over to the heir: Forward refuses every click
	closed         bool    // Close (or a simulated crash) released the storage
	failErr        error   // storage failed: nothing is acknowledged or committed any more
	fids           []int64 // scratch for matching filter ids
	rec            []byte  // scratch for the log record of a batch
	click          filter.Click
	hot            hotad.Detector // the ads with the most clicks of the last seconds (hot.go)

	// paceIDs and paceIDBytes are what seen holds of minute paceMinute
	// (the clock's) as the last batch or commit left it under mu; pace
	// reads them without mu. paceNext, under paceMu, is when the next
	// paced batch may go (pace.go).
	paceMinute, paceIDs, paceIDBytes atomic.Int64
	paceMu                           sync.Mutex
	paceNext                         time.Time
}

// segInfo tells when a log segment's clicks are all durable in the state
// database: once every minute up to maxMinute is closed and, if it holds
// late clicks, a commit happened after the last of them was appended.
type segInfo struct {
	maxMinute int64
	hasLate   bool
	lateAt    uint64 // commitsStarted when the last late click was appended
}

// New opens (or creates) the aggregator's state under Config.DataDir and
// recovers: the committed state, then the clicks the log holds beyond it.
// On the first start the first minute is the one containing
// now - AllowedLateness; it and the incarnation are kept forever.
func New(cfg Config, deps Deps) (*Aggregator, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("aggregator config: %w", err)
	}
	if cfg.NodeID == "" {
		return nil, errors.New("aggregator config: node id is empty (set --node-id)")
	}
	if cfg.DataDir == "" {
		return nil, errors.New("aggregator config: data dir is empty (set --data-dir): the aggregator keeps its log and state there")
	}
	if deps.Clock == nil || deps.Filters == nil || deps.Reducers == nil || deps.Ring == nil {
		return nil, errors.New("aggregator: Deps.Clock, Deps.Filters, Deps.Reducers and Deps.Ring are required")
	}
	if deps.Log == nil {
		deps.Log = slog.Default()
	}
	began := time.Now()
	m := newMetrics(deps.Reg)
	a := &Aggregator{
		cfg:        cfg,
		clock:      deps.Clock,
		log:        deps.Log.With("component", "aggregator"),
		filters:    deps.Filters,
		reducers:   deps.Reducers,
		ring:       deps.Ring,
		m:          m,
		delivering: make(sem, 1),
		failed:     make(chan struct{}),
		seen:       dedup.NewSpilling(filepath.Join(cfg.DataDir, "ids")),
		segs:       make(map[uint64]*segInfo),
	}
	store, err := aggstate.Open(filepath.Join(cfg.DataDir, "state"), filepath.Join(cfg.DataDir, "ids"), filepath.Join(cfg.DataDir, "outbox"), deps.Log)
	if err != nil {
		return nil, fmt.Errorf("aggregator: %w", err)
	}
	a.store = store
	a.ob = newOutbox(m, a.dropDurable)
	if err := a.recover(deps); err != nil {
		if a.wal != nil {
			_ = a.wal.Close()
		}
		_ = store.Close()
		return nil, fmt.Errorf("aggregator: recover from %s: %w", cfg.DataDir, err)
	}
	a.memberCh = deps.Reducers.Subscribe()
	m.recoverySeconds.Set(time.Since(began).Seconds())
	return a, nil
}

// recover loads or creates the meta record and the outbox, then replays the log.
func (a *Aggregator) recover(deps Deps) error {
	now := a.clock.Now()
	meta, ok, err := a.store.Meta()
	if err != nil {
		return err
	}
	if !ok {
		first := clock.Minute(now.Add(-a.cfg.AllowedLateness))
		meta = aggstate.Meta{Incarnation: now.UnixNano(), FirstMinute: first, NextMinute: first, NextSeq: 1, Horizon: clock.Minute(now.Add(-a.cfg.LateHorizon))}
		b := a.store.NewBatch()
		b.SetMeta(meta)
		if err := b.Commit(); err != nil {
			return err
		}
	}
	a.meta0, a.meta = meta, meta
	a.horizon = max(meta.Horizon, clock.Minute(now.Add(-a.cfg.LateHorizon)))
	a.counter = window.New(meta.NextMinute, a.cfg.AllowedLateness, a.cfg.PartialMaxCounts)
	stored, err := a.store.Outbox()
	if err != nil {
		return err
	}
	parts := make([]encodedPartial, len(stored))
	for i, b := range stored {
		if parts[i], err = decodePartial(b); err != nil {
			return fmt.Errorf("outbox partial %d on disk: %w", i, err)
		}
	}
	if err := a.ob.load(parts, meta.NextSeq); err != nil {
		return err
	}
	var replayed, skipped int
	w, rec, err := wal.Open(filepath.Join(a.cfg.DataDir, "wal"), a.cfg.WAL, wal.Deps{Log: deps.Log, Reg: deps.Reg, Sync: a.cfg.walSync}, func(seg uint64, payload []byte) error {
		r, s, err := a.replay(seg, payload)
		replayed += r
		skipped += s
		return err
	})
	if err != nil {
		return err
	}
	a.wal = w
	a.m.replayed.Add(float64(replayed))
	a.log.Info("recovered", "incarnation", meta.Incarnation, "first_minute", meta.FirstMinute, "next_minute", meta.NextMinute,
		"next_sequence", meta.NextSeq, "outbox", len(parts), "log_segments", rec.Segments, "log_records", rec.Records,
		"clicks_replayed", replayed, "clicks_already_durable", skipped, "torn_tail_bytes", rec.TornBytes)
	return nil
}

// replay re-adds the clicks of one log record that are not durable in the
// state database yet, exactly as they were added at first: to their open
// minute, or as a correction of a closed one.
func (a *Aggregator) replay(seg uint64, payload []byte) (replayed, skipped int, err error) {
	r, err := newRecordReader(payload, a.fids)
	if err != nil {
		return 0, 0, err
	}
	for r.next() {
		minute := r.minute
		late := minute < a.meta.NextMinute
		if late {
			if minute < a.meta.Horizon {
				skipped++ // closed and committed along with the horizon move; its id may be gone
				continue
			}
			dup, err := a.store.Seen(minute, r.id)
			if err != nil {
				return replayed, skipped, err
			}
			if dup {
				skipped++
				continue
			}
		}
		if !a.seen.Add(minute, r.id) {
			skipped++
			continue
		}
		a.counter.Add(minute, string(r.ad), r.filters)
		a.noteAppendLocked(seg, minute, late)
		replayed++
	}
	a.fids = r.filters
	if r.err == nil {
		if err := a.seen.Err(); err != nil {
			return replayed, skipped, err
		}
	}
	return replayed, skipped, r.err
}

// noteAppendLocked records that seg holds a click of minute not yet durable elsewhere.
func (a *Aggregator) noteAppendLocked(seg uint64, minute int64, late bool) {
	si := a.segs[seg]
	if si == nil {
		si = &segInfo{maxMinute: minute}
		a.segs[seg] = si
	}
	si.maxMinute = max(si.maxMinute, minute)
	if late {
		si.hasLate, si.lateAt = true, a.commitsStarted
	}
}

// Accepted is how many clicks were accepted since the process started.
func (a *Aggregator) Accepted() uint64 { return a.acceptedN.Load() }

// Incarnation identifies this aggregator's sequence space: unix nanos at
// its first start, kept across restarts so sequences continue.
func (a *Aggregator) Incarnation() int64 { return a.meta0.Incarnation }

// FirstMinute is the first minute this incarnation closes, decided at the first start.
func (a *Aggregator) FirstMinute() int64 { return a.meta0.FirstMinute }

// Forward counts a batch of validated clicks and answers a status per
// event, once the accepted ones (and the first copies of the duplicates)
// are durable in the log. A click this aggregator does not own for its
// minute, by its view of the ring history, is answered NOT_OWNER and not
// counted; when that view is too old to trust, the whole batch is refused.
// Routers call ForwardFrame (see Register), which answers the same.
func (a *Aggregator) Forward(ctx context.Context, req *clusterv1.ForwardRequest) (*clusterv1.ForwardResponse, error) {
	evs := make([][]byte, len(req.GetEvents()))
	for i, ev := range req.GetEvents() {
		evs[i], _ = proto.Marshal(ev) // nil when it does not encode: rejected
	}
	return a.forward(ctx, evs)
}

// ForwardFrame is Forward on a request in its protobuf encoding: the
// clicks are read in place, as the router forwards the clients' bytes.
func (a *Aggregator) ForwardFrame(ctx context.Context, f *grpcbuf.Frame) (*clusterv1.ForwardResponse, error) {
	sc := getScratch()
	defer putScratch(sc)
	var err error
	if sc.evs, err = event.SplitEvents(f.B, sc.evs[:0]); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "the request does not decode as a ForwardRequest: %v", err)
	}
	return a.forwardWith(ctx, sc.evs, sc)
}

// Register registers AggregatorService on s, its Forward taking requests
// in their encoding (ForwardFrame).
func (a *Aggregator) Register(s grpc.ServiceRegistrar) {
	s.RegisterService(grpcbuf.WithFrameMethod(&clusterv1.AggregatorService_ServiceDesc, "Forward",
		func(a *Aggregator, ctx context.Context, f *grpcbuf.Frame) (any, error) { return a.ForwardFrame(ctx, f) }), a)
}

// scratch is the reusable space of one Forward call.
type scratch struct {
	evs    [][]byte
	fields []event.Fields // by event; the strings alias the request
	hashes []uint64       // by event: dedup.HashID of its click id
	adHash []uint64       // by event: window.HashAd of its ad
	onDisk []uint8        // by event: what lateLookups found (notLookedUp, absentOnDisk, foundOnDisk)
	late   []int          // indexes of the late clicks, for lateLookups
}

// What lateLookups found about an event's click id in the state database.
const (
	notLookedUp uint8 = iota
	absentOnDisk
	foundOnDisk
)

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

func getScratch() *scratch { return scratchPool.Get().(*scratch) }

func putScratch(sc *scratch) {
	clear(sc.evs) // let the request's buffer go
	clear(sc.fields)
	sc.evs, sc.fields, sc.onDisk = sc.evs[:0], sc.fields[:0], sc.onDisk[:0]
	scratchPool.Put(sc)
}

func (a *Aggregator) forward(ctx context.Context, evs [][]byte) (*clusterv1.ForwardResponse, error) {
	sc := getScratch()
	defer putScratch(sc)
	return a.forwardWith(ctx, evs, sc)
}

// forwardWith counts the encoded events evs. The events are read before
// the counting lock is taken; the strings read alias evs, and whatever
// keeps one (the dedup arena, the counter, the hot-ad detector) copies it.
func (a *Aggregator) forwardWith(ctx context.Context, evs [][]byte, sc *scratch) (*clusterv1.ForwardResponse, error) {
	resp := &clusterv1.ForwardResponse{Status: make([]clusterv1.EventStatus, len(evs))}
	if len(evs) == 0 {
		return resp, nil
	}
	began := time.Now()
	sc.fields = slices.Grow(sc.fields[:0], len(evs))[:len(evs)]
	sc.hashes = slices.Grow(sc.hashes[:0], len(evs))[:len(evs)]
	sc.adHash = slices.Grow(sc.adHash[:0], len(evs))[:len(evs)]
	var rejected int
	for i, ev := range evs {
		reason := "event could not be encoded"
		if ev != nil {
			reason = event.ParseEvent(ev, &sc.fields[i])
		}
		if reason == "" && !sc.fields[i].HasTime {
			reason = "click_time is missing"
		}
		if reason != "" {
			resp.Status[i] = clusterv1.EventStatus_EVENT_STATUS_REJECTED
			a.reject(resp, i, reason+"; not counted")
			rejected++
			continue
		}
		// Hashed here, not under the lock.
		sc.hashes[i] = dedup.HashID(sc.fields[i].ClickID)
		sc.adHash[i] = window.HashAd(sc.fields[i].AdID)
	}
	now := a.clock.Now()
	futureEnd := now.Add(futureLimit)
	if !a.ring.Fresh(now) {
		a.m.refused.WithLabelValues("ring_view_stale").Inc()
		return nil, status.Errorf(codes.Unavailable, "aggregator %s cannot confirm its view of the ring history with etcd (older than the view TTL): it takes no click it might not own; retry the batch (duplicates are safe)", a.cfg.NodeID)
	}
	rv := a.ring.Current()
	if !a.filters.Fresh(rv.History().ViewTTL()) {
		// A filter created meanwhile takes effect a TTL and more ahead: a
		// view confirmed within the TTL has every filter in effect now.
		a.m.refused.WithLabelValues("filter_view_stale").Inc()
		return nil, status.Errorf(codes.Unavailable, "aggregator %s cannot confirm its filters with etcd (older than the view TTL): it takes no click it might count short for a filter; retry the batch (duplicates are safe)", a.cfg.NodeID)
	}
	self := rv.Index(a.cfg.NodeID)
	set := a.filters.Current()
	useFilters := set.Len() > 0
	var accepted, dups, late, notOwned int
	var durableAt uint64 // log end to wait for before answering
	var err error
	looked := a.lateLookups(sc, resp)
	if a.lateLookupHook != nil {
		a.lateLookupHook()
	}

	paced, err := a.pace(ctx, len(evs)-rejected)
	if err != nil {
		return nil, err
	}
	read := time.Now()
	a.mu.Lock()
	locked := time.Now()
	if err := a.refuseLocked(); err != nil {
		a.mu.Unlock()
		return nil, err
	}
	a.advanceHorizonLocked(now)
	next := a.counter.Next()
	a.nextMinute.Store(next)
	// An id found absent early may have reached the disk since, if a
	// commit finished meanwhile (it is then in neither seen nor closing).
	absentValid := a.commitsDone.Load() == looked
	rec := startRecord(a.rec)
	var prev, maxMinute int64
	// Bring what every click's dedup and count will read into the cache
	// before any is added: the reads overlap here, where in the loop below
	// each would wait for the last (see dedup.Set.Prefetch and
	// window.Counter.PrefetchIndex). The second pass reads the counts'
	// rows, which the first pass's index slots lead to.
	var sink uint64
	for i := range sc.fields {
		if resp.Status[i] == clusterv1.EventStatus_EVENT_STATUS_ACCEPTED {
			m := clock.MinuteOfUnix(sc.fields[i].Seconds)
			sink += a.seen.Prefetch(m, sc.hashes[i]) + a.counter.PrefetchIndex(m, sc.adHash[i])
		}
	}
	for i := range sc.fields {
		if resp.Status[i] == clusterv1.EventStatus_EVENT_STATUS_ACCEPTED {
			sink += a.counter.PrefetchRow(clock.MinuteOfUnix(sc.fields[i].Seconds), sc.adHash[i])
		}
	}
	a.prefetched += sink
	for i := range sc.fields {
		if resp.Status[i] != clusterv1.EventStatus_EVENT_STATUS_ACCEPTED {
			continue // did not decode
		}
		ev := &sc.fields[i]
		t := time.Unix(ev.Seconds, int64(ev.Nanos)).UTC()
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
		id := ev.ClickID
		if self < 0 || rv.OwnerAt(ev.AdID, id, minute) != self {
			resp.Status[i] = clusterv1.EventStatus_EVENT_STATUS_NOT_OWNER
			a.reject(resp, i, a.notOwnedReason(rv, ev.AdID, id, minute))
			notOwned++
			continue
		}
		isLate := minute < next
		if isLate && !a.seen.Has(minute, id) {
			// A closed minute's ids are on disk, or in the commit writing them.
			dup := a.closing != nil && a.closing.Has(minute, id)
			switch {
			case dup:
			case sc.onDisk[i] == foundOnDisk: // ids leave the disk only behind the horizon
				dup = true
			case sc.onDisk[i] == absentOnDisk && absentValid:
			default:
				a.m.lateLookupsLocked.Inc()
				var err error
				if dup, err = a.store.Seen(minute, id); err != nil {
					err = a.failLocked(fmt.Errorf("look up a late click id: %w", err))
					a.mu.Unlock()
					return nil, err
				}
			}
			if dup {
				resp.Status[i] = clusterv1.EventStatus_EVENT_STATUS_DUPLICATE
				dups++
				continue
			}
		}
		if !a.seen.AddHashed(minute, id, sc.hashes[i]) {
			resp.Status[i] = clusterv1.EventStatus_EVENT_STATUS_DUPLICATE
			dups++
			continue
		}
		a.fids = a.fids[:0]
		if useFilters {
			// The router validated the click but forwards the client's
			// bytes: the country is normalized here.
			a.click.Country, a.click.UserID, a.click.IP = event.NormalizeCountry(ev.Country), ev.UserID, netip.Addr{}
			if ip := ev.IP; ip != "" {
				a.click.IP, _ = netip.ParseAddr(ip) // validated by the router; zero if not
			}
			a.fids = set.AppendMatching(a.fids, &a.click, minute)
		}
		if a.counter.AddHashed(minute, ev.AdID, sc.adHash[i], a.fids) {
			late++
		}
		rec = appendClick(rec, prev, minute, id, ev.AdID, a.fids)
		prev = minute
		if accepted == 0 || minute > maxMinute {
			maxMinute = minute
		}
		accepted++ // resp.Status[i] is already ACCEPTED (the zero value)
		a.observeHot(rv, ev.AdID, sc.hashes[i], minute, now)
		if len(rec) >= maxRecordPart {
			// A batch of long ids matching many filters is logged as
			// several records: one record over the log's limit would stop
			// the node.
			if durableAt, err = a.appendRecordLocked(rec, maxMinute, late > 0); err != nil {
				a.mu.Unlock()
				return nil, err
			}
			rec, prev = startRecord(rec), 0
		}
	}
	a.rec = rec
	a.publishPaceLocked(now)
	if err := a.seen.Err(); err != nil {
		// An id read back from its spill file may have been answered
		// wrongly: acknowledge nothing and recover from the log.
		err = a.failLocked(fmt.Errorf("click ids of an open minute: %w", err))
		a.mu.Unlock()
		return nil, err
	}
	if len(rec) > 1 { // more than the version byte
		if durableAt, err = a.appendRecordLocked(rec, maxMinute, late > 0); err != nil {
			a.mu.Unlock()
			return nil, err
		}
	} else if durableAt == 0 && dups > 0 {
		// A duplicate is answered only once its first copy is durable: that
		// copy was appended before now, under this lock.
		durableAt = a.wal.Appended()
	}
	a.mu.Unlock()

	counted := time.Now()
	if durableAt > 0 {
		if err := a.wal.Wait(durableAt); err != nil {
			return nil, a.fail(fmt.Errorf("sync the write-ahead log: %w", err))
		}
	}
	a.m.stageRead.Observe((read.Sub(began) - paced).Seconds())
	a.m.stagePace.Observe(paced.Seconds())
	a.m.stageLock.Observe(locked.Sub(read).Seconds())
	a.m.stageCount.Observe(counted.Sub(locked).Seconds())
	a.m.stageDurable.Observe(time.Since(counted).Seconds())
	a.m.notOwned.Add(float64(notOwned))
	a.m.accepted.Add(float64(accepted))
	a.acceptedN.Add(uint64(accepted))
	a.m.duplicate.Add(float64(dups))
	a.m.rejected.Add(float64(rejected))
	a.m.late.Add(float64(late))
	return resp, nil
}

// lateLookups looks up, before Forward takes the counting lock, the ids of
// the batch's late clicks (of minutes closed as of nextMinute) in the
// state database: the id files and Pebble. A client catching up sends
// hundreds of late clicks in a batch, tens of milliseconds of reads
// (measured: 24 ms for one batch right after a minute closed, every
// other Forward waiting behind it when they were read under the lock);
// an id file's index is written around the page cache, so right after a
// close each lookup is a read from the disk, and a batch's lookups run
// lateReaders at a time (one after the other, a batch of 1,000 late
// clicks waited 120-200 ms for its acknowledgement at 50k clicks/s).
// It records what it found in sc.onDisk and returns commitsDone as it was
// before the first read; Forward trusts an "absent" only if no commit
// finished since, and looks the id up again under the lock otherwise.
func (a *Aggregator) lateLookups(sc *scratch, resp *clusterv1.ForwardResponse) uint64 {
	looked := a.commitsDone.Load()
	sc.onDisk = slices.Grow(sc.onDisk[:0], len(sc.fields))[:len(sc.fields)]
	clear(sc.onDisk)
	next := a.nextMinute.Load()
	late := sc.late[:0]
	for i := range sc.fields {
		if resp.Status[i] != clusterv1.EventStatus_EVENT_STATUS_ACCEPTED {
			continue
		}
		ev := &sc.fields[i]
		if clock.Minute(time.Unix(ev.Seconds, int64(ev.Nanos))) < next {
			late = append(late, i)
		}
	}
	sc.late = late
	if len(late) == 0 {
		return looked
	}
	lookup := func(i int) bool {
		ev := &sc.fields[i]
		dup, err := a.store.Seen(clock.Minute(time.Unix(ev.Seconds, int64(ev.Nanos))), ev.ClickID)
		if err != nil {
			return false // looked up again under the lock, where a failure stops the node
		}
		sc.onDisk[i] = absentOnDisk
		if dup {
			sc.onDisk[i] = foundOnDisk
		}
		return true
	}
	var taken, found atomic.Int64 // lookups taken by a reader; done
	read := func() {
		n := int64(0)
		for k := taken.Add(1) - 1; k < int64(len(late)); k = taken.Add(1) - 1 {
			if lookup(late[k]) {
				n++
			}
		}
		found.Add(n)
	}
	if readers := min(lateReaders, (len(late)+lateReadsEach-1)/lateReadsEach); readers == 1 {
		read()
	} else {
		var wg sync.WaitGroup
		for range readers {
			wg.Go(read)
		}
		wg.Wait()
	}
	a.m.lateLookups.Add(float64(found.Load()))
	return looked
}

// A batch's late lookups run on up to lateReaders goroutines, one per
// lateReadsEach lookups: a few late clicks are looked up by one.
const (
	lateReaders   = 16
	lateReadsEach = 8
)

// maxRecordPart is the size at which Forward ends a log record and starts
// another for the rest of the batch: well under wal.MaxRecordBytes.
var maxRecordPart = wal.MaxRecordBytes / 4

// appendRecordLocked appends one record of accepted clicks to the log and
// returns the log end to wait for; a failure stops the node.
func (a *Aggregator) appendRecordLocked(rec []byte, maxMinute int64, late bool) (uint64, error) {
	pos, err := a.wal.Append(rec)
	if err != nil {
		return 0, a.failLocked(fmt.Errorf("append to the write-ahead log: %w", err))
	}
	a.noteAppendLocked(pos.Segment, maxMinute, late)
	return pos.End, nil
}

// refuseLocked answers why no batch can be taken now, or nil.
func (a *Aggregator) refuseLocked() error {
	switch {
	case a.failErr != nil:
		return status.Errorf(codes.Unavailable, "aggregator %s stopped after a storage failure and must be restarted (%v); retry the batch (duplicates are safe)", a.cfg.NodeID, a.failErr)
	case a.draining || a.closed:
		return status.Errorf(codes.Unavailable, "aggregator %s is shutting down; retry the batch (duplicates are safe)", a.cfg.NodeID)
	case a.handing:
		a.m.refused.WithLabelValues("handing_over").Inc()
		return status.Errorf(codes.Unavailable, "aggregator %s is handing its click ids over to its heir after a drain; retry the batch in a few seconds (duplicates are safe)", a.cfg.NodeID)
	}
	// What refuses a batch also keeps the dedup gauges current, at no
	// extra cost (a commit sets them too).
	n, bytes := a.seen.Len(), a.seen.Bytes()
	a.m.dedupIDs.Set(float64(n))
	a.m.dedupBytes.Set(float64(bytes))
	switch {
	case n >= a.cfg.MaxOpenIDs:
		a.m.overload.WithLabelValues("open_ids").Inc()
		return status.Errorf(codes.ResourceExhausted, "aggregator %s remembers %d click ids of open minutes (--max-open-ids=%d): more clicks per minute than this node is sized for; retry later, or add aggregators", a.cfg.NodeID, n, a.cfg.MaxOpenIDs)
	case bytes >= a.cfg.MaxOpenIDBytes:
		a.m.overload.WithLabelValues("open_id_bytes").Inc()
		return status.Errorf(codes.ResourceExhausted, "aggregator %s holds %d bytes of click ids of open minutes in memory (--max-open-id-bytes=%d): more clicks per minute than this node is sized for; retry later, or add aggregators", a.cfg.NodeID, bytes, a.cfg.MaxOpenIDBytes)
	case a.outboxFull():
		return a.outboxRefusal()
	case a.wal.Full():
		a.m.overload.WithLabelValues("wal").Inc()
		return status.Errorf(codes.ResourceExhausted, "aggregator %s: write-ahead log holds more than --wal-max-buffer-bytes (%d) not yet synced: the disk is not keeping up with the load; retry later, or add aggregators", a.cfg.NodeID, a.cfg.WAL.MaxBufferBytes)
	}
	return nil
}

// fail stops the aggregator for good after a storage failure: nothing more
// is acknowledged or committed, and Run returns the error. It returns the
// gRPC error to answer.
func (a *Aggregator) fail(err error) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.failLocked(err)
}

func (a *Aggregator) failLocked(err error) error {
	if a.failErr == nil {
		a.failErr = err
		a.m.failed.Set(1)
		a.log.Error("storage failed: the aggregator stops acknowledging clicks and must be restarted", "err", err)
	}
	a.failOnce.Do(func() { close(a.failed) })
	return status.Errorf(codes.Unavailable, "aggregator %s stopped after a storage failure and must be restarted (%v); retry the batch (duplicates are safe)", a.cfg.NodeID, a.failErr)
}

// notOwnedReason says who owns (ad, click, minute) by rv, for a NOT_OWNER answer.
func (a *Aggregator) notOwnedReason(rv *ring.Versions, ad, id string, minute int64) string {
	owner := "no aggregator"
	if o := rv.OwnerAt(ad, id, minute); o >= 0 {
		owner = rv.IDs()[o]
	}
	return fmt.Sprintf("aggregator %s does not own ad %q in minute %s (the ring history says %s): resend to the owner", a.cfg.NodeID, ad, clock.MinuteTime(minute).Format(time.RFC3339), owner)
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

// tick closes due minutes and makes them, the pending corrections and
// their click ids durable, then hands them to the outbox.
func (a *Aggregator) tick() error {
	dedup.ReleaseIdle(tableIdle)
	return a.commit(a.clock.Now())
}

// tableIdle is how long memory that dedup tables freed stays mapped for
// the next tables: a closed minute's tables are freed seconds after its
// close and the next minute's index grows into them over the minute, so
// two minutes keep the memory while clicks flow and let it go once they stop.
const tableIdle = 2 * time.Minute

// commit closes the minutes due at now and makes durable, in order: the
// click ids of the closed minutes (their id files) and of the pending
// corrections, then one synced batch with their partials (taking the next
// sequences), the names of the new id files and the meta (next minute,
// next sequence, horizon, with the ids before the horizon deleted). Only then are the partials handed
// to the outbox (a sequence is never sent before it is durable, so it is
// never reused).
//
// Closing a minute must not stall ingest: under the lock, commit only takes
// the closed minutes' counts out of the counter and their ids out of the
// open set (a map operation per minute), numbers the partials they will
// make, and keeps the ids where Forward's late-click lookup still finds
// them (a.closing); building and encoding the partials (hundreds of
// thousands of counts a minute at full speed, tens of milliseconds) and
// writing and syncing the id files happen without the lock. Commits are
// serialized by commitMu.
func (a *Aggregator) commit(now time.Time) error {
	a.commitMu.Lock()
	defer a.commitMu.Unlock()

	a.mu.Lock()
	if a.failErr != nil || a.closed {
		err := a.failErr
		a.mu.Unlock()
		return err
	}
	a.advanceHorizonLocked(now)
	closed := a.counter.TakeDue(now)
	corrections := a.counter.TakeCorrections()
	next := a.counter.Next()
	a.nextMinute.Store(next)
	if len(closed) == 0 && len(corrections) == 0 && a.horizon <= a.meta.Horizon {
		a.mu.Unlock()
		return nil
	}
	meta := a.meta
	firstClosed := meta.NextMinute // minutes from here on close now; those before are corrections
	frozen := a.seen.Detach(next)
	a.closing = frozen
	a.commitsStarted++
	// The minutes are numbered here; their partials are built and encoded
	// after the lock is released (encodeTaken).
	taken := append(closed, corrections...)
	firstSeq := meta.NextSeq
	for _, t := range taken {
		meta.NextSeq += uint64(t.NumPartials())
	}
	if a.horizon > meta.Horizon {
		meta.Horizon = a.horizon
	}
	meta.NextMinute = next
	a.publishPaceLocked(now)
	a.m.dedupIDs.Set(float64(a.seen.Len()))
	a.m.dedupBytes.Set(float64(a.seen.Bytes()))
	a.mu.Unlock()

	if a.commitHook != nil {
		a.commitHook()
	}
	parts := encodeTaken(taken, firstSeq)
	err := a.writeCommit(frozen, firstClosed, parts, meta)

	// Unmapping a closed minute's index (hundreds of MB at full speed)
	// happens without the lock, at return: finishCommit has cleared
	// a.closing by then, so no lookup leads there any more.
	defer frozen.Release()
	upTo, err := a.finishCommit(meta, parts, err, len(closed), frozen.Len())
	if err != nil {
		return err
	}
	// Unlinking a segment takes tens of milliseconds (ext4 frees its
	// extents): done without the lock, which every Forward needs.
	// commitMu keeps removals in order.
	a.removeSegments(upTo)
	return nil
}

// finishCommit publishes a commit whose durable write returned err: the
// new meta and the partials for the outbox. It returns the write-ahead
// log segments that became removable (below upTo).
func (a *Aggregator) finishCommit(meta aggstate.Meta, parts []encodedPartial, err error, closed, ids int) (upTo uint64, _ error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.closing = nil
	a.commitsDone.Add(1)
	if err != nil {
		// The closed minutes left the counter: this node cannot go on.
		return 0, a.failLocked(fmt.Errorf("commit closed minutes: %w", err))
	}
	a.meta = meta
	a.commits++
	if err := a.ob.add(parts); err != nil {
		return 0, a.failLocked(err)
	}
	a.m.minutesClosed.Add(float64(closed))
	a.m.commits.Inc()
	a.m.durableIDs.Add(float64(ids))
	a.m.openMinutes.Set(float64(a.counter.OpenMinutes()))
	return a.removableSegmentsLocked(), nil
}

// writeCommit makes frozen's ids durable, then commits parts and meta in
// one synced batch. The ids of each minute that closes now (from
// firstClosed on) go to the minute's id file, written sequentially as the
// minute's in-memory layout and fsynced (no per-id work); the ids of late
// clicks of minutes closed earlier, few, go into the batch as keys. The
// batch names the new files, so they become part of the state with it.
func (a *Aggregator) writeCommit(frozen *dedup.Frozen, firstClosed int64, parts []encodedPartial, meta aggstate.Meta) error {
	b := a.store.NewBatch()
	for _, minute := range frozen.Minutes() {
		if minute >= firstClosed {
			n, err := a.store.WriteIDFile(frozen, minute)
			if err != nil {
				b.Discard()
				return err
			}
			b.AddIDFile(minute, n)
			continue
		}
		if err := frozen.EachIn(minute, func(id string) { b.AddID(minute, id) }); err != nil {
			b.Discard()
			return err
		}
	}
	if err := a.addPartials(b, parts); err != nil {
		b.Discard()
		return err
	}
	if meta.Horizon > a.meta0.Horizon {
		b.ForgetIDsBefore(meta.Horizon)
	}
	b.SetMeta(meta)
	return b.Commit()
}

// addPartials puts parts, of consecutive sequences, in the outbox of b: a
// closing minute's many as an outbox file, a correction's few as keys.
func (a *Aggregator) addPartials(b *aggstate.Batch, parts []encodedPartial) error {
	size := 0
	for _, p := range parts {
		size += len(p.b)
	}
	fileMin := a.cfg.outboxFileMin
	if fileMin == 0 {
		fileMin = aggstate.OutboxFileMin
	}
	if size < fileMin {
		for _, p := range parts {
			if err := b.AddPartial(p.seq, p.b); err != nil {
				return err
			}
		}
		return nil
	}
	bs := make([][]byte, len(parts))
	for i, p := range parts {
		if p.seq != parts[0].seq+uint64(i) {
			return fmt.Errorf("partials to commit are not numbered in sequence: %d at %d after %d", p.seq, i, parts[0].seq)
		}
		bs[i] = p.b
	}
	if err := a.store.WriteOutboxFile(parts[0].seq, bs); err != nil {
		return err
	}
	b.AddOutboxFile(parts[0].seq, len(parts))
	return nil
}

// removableSegmentsLocked returns the segment below which every write-ahead
// log segment holds only clicks durable in the state database (0: none),
// and forgets what it knew about those segments. Forgetting first is safe:
// a segment without an entry counts as removable, which it is already.
func (a *Aggregator) removableSegmentsLocked() uint64 {
	cur := a.wal.Segment()
	var upTo uint64
	for _, s := range a.wal.Segments() {
		if s >= cur {
			break
		}
		if si := a.segs[s]; si != nil && (si.maxMinute >= a.meta.NextMinute || si.hasLate && a.commits <= si.lateAt) {
			break
		}
		upTo = s + 1
	}
	for s := range a.segs {
		if s < upTo {
			delete(a.segs, s)
		}
	}
	return upTo
}

// removeSegments deletes the write-ahead log segments below upTo.
func (a *Aggregator) removeSegments(upTo uint64) {
	if upTo == 0 {
		return
	}
	if _, err := a.wal.RemoveBefore(upTo); err != nil {
		a.log.Warn("cannot delete write-ahead log segments; the rest stay on disk until a restart replays (and skips) them", "err", err)
	}
}

// dropDurable deletes the durable copies of partials every reducer acknowledged.
func (a *Aggregator) dropDurable(through uint64) {
	if err := a.store.DropOutbox(through); err != nil && !errors.Is(err, aggstate.ErrClosed) {
		a.log.Warn("cannot drop acknowledged partials from disk; they will be resent (as no-ops) after a restart", "through", through, "err", err)
	}
}

// Run closes minutes and flushes corrections every TickInterval, and
// delivers partials to the registered reducers, until ctx is done. It
// returns an error when storage failed: the node must then exit.
func (a *Aggregator) Run(ctx context.Context) error {
	if !a.delivering.tryAcquire() {
		return errBusy
	}
	defer func() {
		a.delivering.release()
		a.ob.notify() // a waiting Flush takes delivery over
	}()
	dctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { a.deliver(dctx) })
	defer func() {
		cancel()
		wg.Wait()
	}()
	t := time.NewTicker(a.cfg.TickInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if err := a.tick(); err != nil {
				return fmt.Errorf("aggregator %s: %w", a.cfg.NodeID, err)
			}
		case <-a.failed:
			return fmt.Errorf("aggregator %s: %w", a.cfg.NodeID, a.err())
		case <-ctx.Done():
			return nil
		}
	}
}

func (a *Aggregator) err() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.failErr
}

// Flush stops accepting clicks, commits the minutes due and the pending
// corrections, syncs the log, and delivers the outbox until it is empty or
// ctx ends. Open minutes are not sent: they are in the log and continue
// after a restart. It relies on a running Run to deliver, and delivers
// itself when Run is not running (or stops meanwhile). The error tells how
// much was left.
func (a *Aggregator) Flush(ctx context.Context) error {
	a.flushing.Store(true)
	a.mu.Lock()
	a.draining = true
	ok := a.failErr == nil && !a.closed
	a.mu.Unlock()
	if ok {
		if err := a.commit(a.clock.Now()); err != nil {
			return err
		}
	}
	if err := a.wal.Sync(); err != nil && !errors.Is(err, wal.ErrClosed) {
		return a.fail(fmt.Errorf("sync the write-ahead log: %w", err))
	}
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

// Close syncs and closes the log and the state database. Call it after
// Flush and after Run returned; Forward answers UNAVAILABLE from then on.
func (a *Aggregator) Close() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed, a.draining = true, true
	a.seen.Close() // open minutes are in the log; their spill files go
	a.mu.Unlock()
	werr := a.wal.Close()
	if errors.Is(werr, wal.ErrClosed) {
		werr = nil
	}
	return errors.Join(werr, a.store.Close())
}

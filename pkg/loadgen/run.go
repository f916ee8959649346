package loadgen

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
	"github.com/adclick/adclick/pkg/clock"
	"google.golang.org/grpc"
)

// Deps are the generator's collaborators.
type Deps struct {
	// Clock gives event time and decides when a minute has closed (late
	// clicks); nil means the wall clock. Pacing, durations and latencies use
	// the wall clock.
	Clock clock.Clock
	Log   *slog.Logger
	// Progress receives one line per second while sending; nil: none.
	Progress io.Writer
}

// Result is the outcome of a run; its JSON form is the last line of
// `adclick load` (field order is part of the contract).
type Result struct {
	Events         int64   `json:"events"` // clicks acknowledged during the timed phase
	Seconds        float64 `json:"seconds"`
	EventsPerSec   float64 `json:"events_per_sec"`
	AckP50Ms       float64 `json:"ack_p50_ms"`
	AckP99Ms       float64 `json:"ack_p99_ms"`
	DuplicatesSent int64   `json:"duplicates_sent"` // resent clicks the router answered as duplicates
	LateSent       int64   `json:"late_sent"`       // clicks acknowledged after their minute closed
	Verified       bool    `json:"verified"`
	Mismatches     int64   `json:"mismatches"`
	Retries        int64   `json:"retries"` // clicks resent after a failed request
	Errors         int64   `json:"errors"`  // rejected or never acknowledged clicks
	AckMismatches  int64   `json:"ack_mismatches"`
	TotalEvents    int64   `json:"total_events"`    // every click acknowledged, drain phase included
	DistinctClicks int64   `json:"distinct_clicks"` // the clicks the cluster must have counted
	Minutes        int     `json:"minutes"`
	AdsChecked     int     `json:"ads_checked"`
	SamplesChecked int     `json:"samples_checked"`
	Complete       bool    `json:"complete"`
	VerifySeconds  float64 `json:"verify_seconds"`
	RunID          string  `json:"run_id"`
	// Per second of the timed phase, after a WarmUp: the slowest and the
	// median second's acknowledged clicks, and how many seconds fell below
	// half the median (closing a minute must not stall ingest).
	PerSecMin              float64 `json:"per_sec_min"`
	PerSecMedian           float64 `json:"per_sec_median"`
	SecondsBelowHalfMedian int     `json:"seconds_below_half_median"`
	// Series is every second of the timed phase (written by --series).
	Series []Second `json:"-"`
}

// Second is one second of a run.
type Second struct {
	At        float64 // seconds since the start
	AckedPerS float64 // clicks acknowledged in that second
	SentPerS  float64
	AckP50Ms  float64
	AckP99Ms  float64
}

// WarmUp is the start of a run left out of the per-second figures:
// connections open and the first batches fill the pipelines.
const WarmUp = 5 * time.Second

// Runner is one load run: Send, then Verify. Not for reuse.
type Runner struct {
	cfg     Config
	clk     clock.Clock
	log     *slog.Logger
	prog    io.Writer
	series  []Second // written by the progress goroutine until Send returns
	streams []*stream
	query   adclickv1.QueryServiceClient
	exp     *Expected
	hist    Hist
	pace    *pacer
	runID   string
	seed    uint64
	mainEnd atomic.Int64 // unix nanos (wall clock) when fresh clicks stop
	settle  time.Duration

	sent, acked, retries, errors, dupSent, lateSent, ackMismatch atomic.Int64
	logged                                                       atomic.Int64

	events  int64
	seconds float64
	p50     float64
	p99     float64
}

// New returns a run of cfg against the router behind conns: stream i uses
// conns[i%len(conns)], queries use conns[0].
func New(cfg Config, conns []grpc.ClientConnInterface, deps Deps) (*Runner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(conns) == 0 {
		return nil, fmt.Errorf("loadgen: no connection")
	}
	r := &Runner{cfg: cfg, clk: deps.Clock, log: deps.Log, prog: deps.Progress, exp: NewExpected(cfg.Ads),
		query: adclickv1.NewQueryServiceClient(conns[0]), runID: cfg.RunID, seed: cfg.Seed, settle: settleTime}
	if r.clk == nil {
		r.clk = clock.Real{}
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	if r.runID == "" {
		r.runID = "L" + hex.EncodeToString(b[:])
	}
	if r.seed == 0 {
		r.seed = uint64(b[0])<<40 | uint64(b[1])<<32 | uint64(b[2])<<24 | uint64(b[3])<<16 | uint64(b[4])<<8 | uint64(b[5]) | 1
	}
	if cfg.Rate > 0 {
		r.pace = &pacer{rate: float64(cfg.Rate)}
	}
	for i := range cfg.Concurrency {
		r.streams = append(r.streams, newStream(r, adclickv1.NewIngestServiceClient(conns[i%len(conns)]), i))
	}
	return r, nil
}

// Expected returns the run's ground truth.
func (r *Runner) Expected() *Expected { return r.exp }

// RunID returns the prefix of the run's click ids.
func (r *Runner) RunID() string { return r.runID }

func (r *Runner) mainOver() bool { return time.Now().UnixNano() >= r.mainEnd.Load() }

// logf logs a problem; after the first 20 only counts are kept.
func (r *Runner) logf(format string, args ...any) {
	if r.logged.Add(1) <= 20 {
		r.log.Warn(fmt.Sprintf(format, args...))
	}
}

// Send generates clicks for cfg.Duration, then sends what is left (late
// clicks once their minute closed, duplicates) and waits for every
// acknowledgement, or until ctx ends.
func (r *Runner) Send(ctx context.Context) {
	start := time.Now()
	r.mainEnd.Store(start.Add(r.cfg.Duration).UnixNano())
	// Late clicks of the last minute are sent when it closes: up to a
	// minute plus the lateness after the timed phase.
	drain := time.Minute + r.cfg.AllowedLateness + r.cfg.VerifyTimeout
	sctx, cancel := context.WithTimeout(ctx, r.cfg.Duration+drain)
	defer cancel()

	stopProgress := r.startProgress(start)
	var wg sync.WaitGroup
	for _, s := range r.streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.run(sctx)
		}()
	}
	timer := time.NewTimer(r.cfg.Duration)
	select {
	case <-timer.C:
		r.events, r.seconds = r.acked.Load(), time.Since(start).Seconds()
		h := r.hist.Snapshot()
		r.p50, r.p99 = h.QuantileMs(0.50), h.QuantileMs(0.99)
	case <-sctx.Done():
	}
	timer.Stop()
	wg.Wait()
	stopProgress()
	if r.seconds == 0 { // ended early
		r.events, r.seconds = r.acked.Load(), time.Since(start).Seconds()
		h := r.hist.Snapshot()
		r.p50, r.p99 = h.QuantileMs(0.50), h.QuantileMs(0.99)
	}
}

// startProgress samples the run every second: a progress line (when
// Deps.Progress is set) and, during the timed phase, the series.
func (r *Runner) startProgress(start time.Time) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		prevSent, prevAcked, prevHist := int64(0), int64(0), r.hist.Snapshot()
		prevAt := start
		for {
			select {
			case <-done:
				return
			case now := <-tick.C:
				sent, acked, h := r.sent.Load(), r.acked.Load(), r.hist.Snapshot()
				d := h.Sub(prevHist)
				phase := ""
				if r.mainOver() {
					phase = " (draining: late clicks, duplicates)"
				} else {
					el := now.Sub(prevAt).Seconds()
					r.series = append(r.series, Second{At: round3(now.Sub(start).Seconds()), AckedPerS: round3(float64(acked-prevAcked) / el),
						SentPerS: round3(float64(sent-prevSent) / el), AckP50Ms: round3(d.QuantileMs(0.5)), AckP99Ms: round3(d.QuantileMs(0.99))})
				}
				if r.prog != nil {
					fmt.Fprintf(r.prog, "load: %5.0fs  sent/s %9.0f  acked/s %9.0f  acked %11d  ack p50 %6.2fms p99 %7.2fms  retries %d  errors %d%s\n",
						now.Sub(start).Seconds(), float64(sent-prevSent)/now.Sub(prevAt).Seconds(), float64(acked-prevAcked)/now.Sub(prevAt).Seconds(), acked,
						d.QuantileMs(0.5), d.QuantileMs(0.99), r.retries.Load(), r.errors.Load(), phase)
				}
				prevSent, prevAcked, prevHist, prevAt = sent, acked, h, now
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// handle accounts for one response of stream s to req. Called by the
// receiving goroutine of s.
func (r *Runner) handle(s *stream, req *request, resp *adclickv1.IngestResponse) {
	r.hist.Record(time.Since(req.sentAt))
	var rejected map[int32]bool
	if len(resp.Rejected) > 0 {
		rejected = make(map[int32]bool, len(resp.Rejected))
		for _, rj := range resp.Rejected {
			rejected[rj.Index] = true
			if int(rj.Index) < len(req.clicks) {
				c := &req.clicks[rj.Index]
				r.logf("click %s (ad-%d) rejected: %s", c.ClickID(r.runID), c.Ad, rj.Reason)
			}
		}
		r.errors.Add(int64(len(resp.Rejected)))
	}
	// Events listed in retry were not processed: they are sent again as
	// they are, and neither expected nor counted now.
	var retried map[int32]bool
	if len(resp.Retry) > 0 {
		retried = make(map[int32]bool, len(resp.Retry))
		s.mu.Lock()
		for _, i := range resp.Retry {
			if int(i) < len(req.clicks) && !retried[i] {
				retried[i] = true
				s.again = append(s.again, againClick{c: req.clicks[i], fresh: req.fresh[i]})
			}
		}
		s.mu.Unlock()
		r.retries.Add(int64(len(retried)))
	}
	var rejFresh, rejResend int64
	for _, set := range []map[int32]bool{rejected, retried} {
		for i := range set {
			if int(i) >= len(req.fresh) {
				continue
			}
			if req.fresh[i] {
				rejFresh++
			} else {
				rejResend++
			}
		}
	}
	wantAcc, wantDup := int64(req.nFresh)-rejFresh, int64(req.nResend)-rejResend
	ok := resp.Accepted == wantAcc && resp.Duplicates == wantDup
	if req.attempt > 0 { // an earlier attempt may have been counted: those come back as duplicates
		ok = resp.Accepted+resp.Duplicates == wantAcc+wantDup && resp.Duplicates >= wantDup
	}
	if !ok {
		r.ackMismatch.Add(1)
		r.logf("response mismatch (attempt %d): accepted %d duplicates %d, want %d and %d", req.attempt, resp.Accepted, resp.Duplicates, wantAcc, wantDup)
	}
	take := func(i int) bool { return req.fresh[i] && !rejected[int32(i)] && !retried[int32(i)] }
	r.exp.AddClicks(req.clicks, take)
	var again int
	for i := range req.clicks {
		if req.clicks[i].dup && take(i) {
			again++
		}
	}
	if again > 0 {
		s.mu.Lock()
		for i := range req.clicks {
			if req.clicks[i].dup && take(i) {
				s.resend = append(s.resend, req.clicks[i])
			}
		}
		s.mu.Unlock()
	}
	r.acked.Add(int64(len(req.clicks) - len(rejected) - len(retried)))
	r.dupSent.Add(wantDup)
	r.lateSent.Add(int64(req.nLate))
}

// Result returns the run's figures; v is the verification's outcome (nil
// when not verified).
func (r *Runner) Result(v *Verification) Result {
	res := Result{
		Events: r.events, Seconds: round3(r.seconds), AckP50Ms: round3(r.p50), AckP99Ms: round3(r.p99),
		DuplicatesSent: r.dupSent.Load(), LateSent: r.lateSent.Load(), Retries: r.retries.Load(), Errors: r.errors.Load(),
		AckMismatches: r.ackMismatch.Load(), TotalEvents: r.acked.Load(), DistinctClicks: r.exp.Total(), RunID: r.runID,
	}
	if r.seconds > 0 {
		res.EventsPerSec = round3(float64(r.events) / r.seconds)
	}
	res.Series = r.series
	res.PerSecMin, res.PerSecMedian, res.SecondsBelowHalfMedian = perSecond(r.series)
	res.Mismatches = res.AckMismatches
	if v != nil {
		res.Mismatches += v.Mismatches
		res.Minutes, res.AdsChecked, res.SamplesChecked = v.Minutes, v.AdsChecked, v.SamplesChecked
		res.Complete, res.VerifySeconds = v.Complete, round3(v.Seconds)
		res.Verified = v.Complete && res.Mismatches == 0 && res.Errors == 0 && res.DistinctClicks > 0
	}
	return res
}

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

// perSecond summarizes the seconds after WarmUp: the minimum, the median,
// and the count below half the median.
func perSecond(series []Second) (minimum, median float64, below int) {
	var v []float64
	for _, s := range series {
		if s.At > WarmUp.Seconds() {
			v = append(v, s.AckedPerS)
		}
	}
	if len(v) == 0 {
		return 0, 0, 0
	}
	slices.Sort(v)
	minimum, median = v[0], v[len(v)/2]
	for _, x := range v {
		if x < median/2 {
			below++
		}
	}
	return minimum, median, below
}

// Run sends, verifies when cfg.Verify, and returns the result.
func Run(ctx context.Context, cfg Config, conns []grpc.ClientConnInterface, deps Deps) (Result, error) {
	r, err := New(cfg, conns, deps)
	if err != nil {
		return Result{}, err
	}
	r.Send(ctx)
	if !cfg.Verify {
		return r.Result(nil), nil
	}
	v := r.Verify(ctx)
	return r.Result(v), nil
}

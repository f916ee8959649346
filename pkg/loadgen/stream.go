package loadgen

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
)

// pacer spreads clicks over time for --rate: a token bucket shared by every
// stream, with a burst of 100 ms. Safe for concurrent use.
type pacer struct {
	mu   sync.Mutex
	rate float64 // clicks per second
	next time.Time
}

// wait blocks until n more clicks may be sent.
func (p *pacer) wait(ctx context.Context, n int) error {
	p.mu.Lock()
	now := time.Now()
	if floor := now.Add(-100 * time.Millisecond); p.next.Before(floor) {
		p.next = floor
	}
	at := p.next
	p.next = p.next.Add(time.Duration(float64(n) * float64(time.Second) / p.rate))
	p.mu.Unlock()
	d := time.Until(at)
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stream drives one IngestStream: it builds requests, keeps up to
// cfg.Pipeline of them in flight, matches responses in order, and resends a
// failed session's unacknowledged requests on a new stream. The fields
// below mu are shared between the sending and the receiving goroutine;
// everything else belongs to the sending goroutine.
type stream struct {
	r           *Runner
	client      adclickv1.IngestServiceClient
	idx         int
	gen         *Generator
	free        chan *request // recycled requests
	held        []Click       // late clicks waiting for their minute to close, oldest first
	retry       []*request    // unacknowledged requests of failed sessions, in order
	outstanding atomic.Int64  // requests sent and not yet answered
	answered    atomic.Int64  // responses received

	mu     sync.Mutex
	resend []Click // acknowledged clicks to send again
	// again are clicks a response listed in retry (their owner could not
	// take them): sent again as they were, fresh ones still fresh.
	again []againClick
}

type againClick struct {
	c     Click
	fresh bool
}

func newStream(r *Runner, client adclickv1.IngestServiceClient, idx int) *stream {
	s := &stream{r: r, client: client, idx: idx, free: make(chan *request, r.cfg.Pipeline+2),
		gen: NewGenerator(r.seed, idx, r.cfg.Ads, r.cfg.Zipf, r.cfg.Dup, r.cfg.Late)}
	for range cap(s.free) {
		s.free <- &request{}
	}
	return s
}

// run sends until the main phase is over and everything generated was
// acknowledged, or ctx ends (what is left then counts as errors).
func (s *stream) run(ctx context.Context) {
	backoff := 50 * time.Millisecond
	for {
		before := s.answered.Load()
		done, err := s.session(ctx)
		if done {
			return
		}
		if s.answered.Load() > before { // the session made progress: back off from the start
			backoff = 50 * time.Millisecond
		}
		if ctx.Err() != nil {
			s.abandon()
			return
		}
		s.r.logf("stream %d: %v; resending %d requests in %s", s.idx, err, len(s.retry), backoff)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		backoff = min(2*backoff, 2*time.Second)
	}
}

// abandon counts what could not be delivered as errors.
func (s *stream) abandon() {
	var n int
	for _, req := range s.retry {
		n += len(req.clicks)
	}
	n += len(s.held)
	s.mu.Lock()
	n += len(s.resend)
	s.mu.Unlock()
	if n > 0 {
		s.r.errors.Add(int64(n))
		s.r.logf("stream %d: run ended with %d clicks not acknowledged", s.idx, n)
	}
}

// session runs one IngestStream. It returns done when there is nothing
// left to send; otherwise the session's unacknowledged requests are in
// s.retry.
func (s *stream) session(ctx context.Context) (done bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := s.client.IngestStream(sctx)
	if err != nil {
		return false, err
	}
	inflight := make(chan *request, s.r.cfg.Pipeline-1)
	var failed []*request
	recvDone := make(chan error, 1)
	go func() {
		var rerr error
		for req := range inflight {
			if rerr == nil {
				resp, err := st.Recv()
				if err == nil {
					s.r.handle(s, req, resp)
					s.answered.Add(1)
					s.outstanding.Add(-1)
					s.free <- req
					continue
				}
				rerr = err
				cancel()
			}
			s.outstanding.Add(-1)
			failed = append(failed, req)
		}
		recvDone <- rerr
	}()
	var sendErr error
	var unsent *request // taken from next but never handed to the receiver
	for {
		req := s.next(sctx)
		if req == nil {
			done = ctx.Err() == nil && sctx.Err() == nil
			break
		}
		s.outstanding.Add(1)
		select {
		case inflight <- req:
		case <-sctx.Done():
			s.outstanding.Add(-1)
			unsent, sendErr = req, sctx.Err()
		}
		if sendErr != nil {
			break
		}
		req.sentAt = time.Now()
		s.r.sent.Add(int64(len(req.clicks)))
		if err := st.Send(&req.msg); err != nil {
			sendErr = err
			cancel()
			break
		}
	}
	close(inflight)
	if sendErr == nil {
		_ = st.CloseSend()
	}
	rerr := <-recvDone
	if unsent != nil {
		failed = append(failed, unsent)
	}
	if len(failed) > 0 {
		for _, req := range failed {
			req.attempt++
			s.r.retries.Add(int64(len(req.clicks)))
		}
		s.retry = append(failed, s.retry...)
		done = false
	}
	if rerr != nil {
		return done, rerr
	}
	return done, sendErr
}

// next returns the next request to send, or nil when there is nothing left
// (main phase over, nothing held, nothing to resend, nothing in flight) or
// ctx ended.
func (s *stream) next(ctx context.Context) *request {
	cfg := &s.r.cfg
	for ctx.Err() == nil {
		if len(s.retry) > 0 {
			req := s.retry[0]
			s.retry = s.retry[1:]
			return req
		}
		var req *request
		select {
		case req = <-s.free:
		case <-ctx.Done():
			return nil
		}
		req.reset()
		now := s.r.clk.Now()
		for len(s.held) > 0 && len(req.clicks) < cfg.Batch && !now.Before(closesAt(s.held[0].Minute(), cfg.AllowedLateness)) {
			req.add(s.held[0], true, true)
			s.held = s.held[1:]
		}
		s.mu.Lock()
		if len(s.again) > 0 {
			// Whether they were counted is unknown (a timed-out forward may
			// have been): the request's answers are checked as a retry's.
			req.attempt = 1
		}
		a := min(len(s.again), cfg.Batch-len(req.clicks))
		for _, c := range s.again[:a] {
			req.add(c.c, c.fresh, false)
		}
		s.again = s.again[:copy(s.again, s.again[a:])]
		k := min(len(s.resend), cfg.Batch-len(req.clicks))
		for _, c := range s.resend[:k] {
			req.add(c, false, false)
		}
		s.resend = s.resend[:copy(s.resend, s.resend[k:])]
		s.mu.Unlock()
		if n := cfg.Batch - len(req.clicks); n > 0 && !s.r.mainOver() {
			if s.r.pace != nil {
				if s.r.pace.wait(ctx, n) != nil {
					s.free <- req
					return nil
				}
			}
			nanos := s.r.clk.Now().UnixNano()
			for range n {
				c, late := s.gen.Next(nanos)
				if late {
					s.held = append(s.held, c)
					continue
				}
				req.add(c, true, false)
			}
		}
		if len(req.clicks) > 0 {
			req.build(s.r.runID)
			return req
		}
		s.free <- req
		if s.r.mainOver() && len(s.held) == 0 && s.outstanding.Load() == 0 {
			s.mu.Lock()
			empty := len(s.resend) == 0 && len(s.again) == 0
			s.mu.Unlock()
			if empty {
				return nil
			}
		}
		t := time.NewTimer(20 * time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
	return nil
}

// closesAt returns when minute m closes: its end plus the allowed lateness.
func closesAt(m int64, lateness time.Duration) time.Time {
	return time.Unix(m+60, 0).Add(lateness)
}

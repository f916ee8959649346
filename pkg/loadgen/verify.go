package loadgen

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// verifyInFlight is how many queries verification keeps in flight.
const verifyInFlight = 16

// settleTime is how long a differing count is asked again before it counts
// as a mismatch: a late click reaches the reducer as a correction shortly
// after its minute was reported complete.
const settleTime = 5 * time.Second

// Verification is the outcome of comparing the cluster's answers with the
// generator's ground truth.
type Verification struct {
	Complete       bool // every minute of the run was reported complete
	Mismatches     int64
	Minutes        int
	AdsChecked     int
	SamplesChecked int
	Seconds        float64
}

// check is one AggregatedCount question with the answer it must get.
type check struct {
	ad       uint32
	from, to int64 // minutes, [from, to)
	want     int64
	got      int64 // the last answer, when it differed
	complete bool
}

// Verify waits until the run's minutes are complete, then compares the
// count of every ad sent over the run, cfg.VerifySample random (ad, minute)
// pairs per minute (ads never sent included) and the top N of the run's
// window with the ground truth.
func (r *Runner) Verify(ctx context.Context) *Verification {
	start := time.Now()
	v := &Verification{}
	defer func() { v.Seconds = time.Since(start).Seconds() }()
	minutes := r.exp.Minutes()
	if len(minutes) == 0 {
		r.logf("verify: no click was acknowledged, nothing to verify")
		return v
	}
	first, to := minutes[0], minutes[len(minutes)-1]+60
	v.Minutes = int((to - first) / 60)
	ctx, cancel := context.WithTimeout(ctx, r.cfg.VerifyTimeout)
	defer cancel()

	totals := r.exp.Totals(first, to)
	top := TopN(totals, r.cfg.TopN)
	v.Complete = r.waitComplete(ctx, top[0].Ad, first, to)

	var checks []check
	for ad, c := range totals {
		if c > 0 {
			checks = append(checks, check{ad: uint32(ad), from: first, to: to, want: c})
		}
	}
	v.AdsChecked = len(checks)
	sampler := NewGenerator(r.seed^0xfeed, 1<<15, r.cfg.Ads, r.cfg.Zipf, 0, 0)
	for m := first; m < to; m += 60 {
		seen := make(map[uint32]bool, r.cfg.VerifySample)
		for k := 0; len(seen) < min(r.cfg.VerifySample, r.cfg.Ads) && k < 4*r.cfg.VerifySample; k++ {
			ad := sampler.Uniform(r.cfg.Ads) // mostly ads never sent in this minute
			if k%2 == 1 {
				ad = sampler.ZipfAd() // mostly ads sent
			}
			if !seen[ad] {
				seen[ad] = true
				checks = append(checks, check{ad: ad, from: m, to: m + 60, want: r.exp.Count(ad, m)})
			}
		}
	}
	v.SamplesChecked = len(checks) - v.AdsChecked

	failed := r.runChecks(ctx, checks)
	topDiffs := r.checkTop(ctx, top, first, to)
	settle := time.Now().Add(r.settle)
	for (len(failed) > 0 || len(topDiffs) > 0) && time.Now().Before(settle) && ctx.Err() == nil {
		time.Sleep(200 * time.Millisecond)
		failed = r.runChecks(ctx, failed)
		if len(topDiffs) > 0 {
			topDiffs = r.checkTop(ctx, top, first, to)
		}
	}
	for i, c := range failed {
		if i < 10 {
			r.log.Warn("verify: AggregatedCount differs", "ad", AdID(c.ad), "from", time.Unix(c.from, 0).UTC(), "to", time.Unix(c.to, 0).UTC(),
				"got", c.got, "complete", c.complete, "want", c.want)
		}
	}
	for i, d := range topDiffs {
		if i < 10 {
			r.log.Warn("verify: PopularAds differs: " + d)
		}
	}
	v.Mismatches = int64(len(failed) + len(topDiffs))
	return v
}

func ts(unix int64) *timestamppb.Timestamp { return &timestamppb.Timestamp{Seconds: unix} }

// waitComplete polls until minutes [from, to) are complete or ctx ends.
func (r *Runner) waitComplete(ctx context.Context, ad uint32, from, to int64) bool {
	for {
		resp, err := r.query.AggregatedCount(ctx, &adclickv1.AggregatedCountRequest{AdId: AdID(ad), From: ts(from), To: ts(to)})
		if err == nil && resp.Complete {
			return true
		}
		select {
		case <-ctx.Done():
			r.logf("verify: minutes %s..%s not complete in time (last error: %v)", time.Unix(from, 0).UTC(), time.Unix(to, 0).UTC(), err)
			return false
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// runChecks asks every check, verifyInFlight at a time, and returns those
// whose answer differs, is incomplete or failed.
func (r *Runner) runChecks(ctx context.Context, checks []check) []check {
	var (
		mu     sync.Mutex
		failed []check
		next   atomic.Int64
		wg     sync.WaitGroup
	)
	for range verifyInFlight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(checks) {
					return
				}
				c := checks[i]
				got, complete, err := r.count(ctx, c)
				if err != nil || got != c.want || !complete {
					if err != nil {
						r.logf("verify: AggregatedCount(%s): %v", AdID(c.ad), err)
					}
					c.got, c.complete = got, complete
					mu.Lock()
					failed = append(failed, c)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return failed
}

// count asks one AggregatedCount, retrying transient errors a few times.
func (r *Runner) count(ctx context.Context, c check) (int64, bool, error) {
	var err error
	for attempt := range 4 {
		var resp *adclickv1.AggregatedCountResponse
		resp, err = r.query.AggregatedCount(ctx, &adclickv1.AggregatedCountRequest{AdId: AdID(c.ad), From: ts(c.from), To: ts(c.to)})
		if err == nil {
			return resp.Count, resp.Complete, nil
		}
		if code := status.Code(err); code != codes.Unavailable && code != codes.ResourceExhausted {
			break
		}
		time.Sleep(time.Duration(50<<attempt) * time.Millisecond)
	}
	return 0, false, err
}

// checkTop compares PopularAds over [from, to) with want and returns the
// differences, one per differing position (an incomplete answer or a failed
// call is one more).
func (r *Runner) checkTop(ctx context.Context, want []AdCount, from, to int64) []string {
	resp, err := r.query.PopularAds(ctx, &adclickv1.PopularAdsRequest{Count: int32(r.cfg.TopN), Window: int32((to - from) / 60), To: ts(to)})
	if err != nil {
		return []string{fmt.Sprintf("call failed: %v", err)}
	}
	var diffs []string
	if !resp.Complete {
		diffs = append(diffs, "answer not complete")
	}
	for i := range max(len(want), len(resp.Ads)) {
		var g, w string
		if i < len(resp.Ads) {
			g = fmt.Sprintf("%s=%d", resp.Ads[i].AdId, resp.Ads[i].Count)
		}
		if i < len(want) {
			w = fmt.Sprintf("%s=%d", AdID(want[i].Ad), want[i].Count)
		}
		if g != w {
			diffs = append(diffs, fmt.Sprintf("position %d: got %q, want %q", i+1, g, w))
		}
	}
	return diffs
}

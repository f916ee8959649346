package reducer

import (
	"context"
	"fmt"
	"time"

	"github.com/adclick/adclick/pkg/clock"
)

// retentionInterval is how often Run deletes the minutes that left the
// retention: a pass deletes about an hour of minutes, reading nothing else.
const retentionInterval = time.Hour

// retentionFloor is the first minute within the retention now; counts of
// earlier minutes are dropped on arrival and deleted from the store.
func (r *Reducer) retentionFloor() int64 {
	return clock.Minute(r.clk.Now().Add(-r.cfg.Retention))
}

// Run deletes the stored minutes older than the retention, at once and
// then every retentionInterval, until ctx is done.
func (r *Reducer) Run(ctx context.Context) {
	t := time.NewTicker(retentionInterval)
	defer t.Stop()
	for {
		if _, err := r.DropExpired(ctx); err != nil && ctx.Err() == nil {
			r.m.retentionErrors.Inc()
			r.log.Error("retention: deleting expired minutes failed; retrying at the next pass", "err", err)
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// DropExpired deletes from the store every count of a minute older than the
// retention (--retention) and returns how many it deleted. Queries over
// those minutes answer 0 from then on; the memory holds far fewer minutes
// (--retain-minutes <= --retention), so it needs nothing.
func (r *Reducer) DropExpired(ctx context.Context) (int, error) {
	r.dbMu.RLock()
	defer r.dbMu.RUnlock()
	if r.closed {
		return 0, nil
	}
	floor := r.retentionFloor()
	start := time.Now()
	n, err := r.db.DeleteBefore(ctx, floor)
	r.m.expiredDeleted.Add(float64(n))
	if err != nil {
		return n, fmt.Errorf("delete counts before %s: %w", clock.MinuteTime(floor).Format(time.RFC3339), err)
	}
	if n > 0 {
		r.log.Info("retention: deleted expired minutes", "before", clock.MinuteTime(floor), "counts", n, "took", time.Since(start))
	}
	return n, nil
}

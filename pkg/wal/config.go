package wal

import (
	"errors"
	"flag"
	"fmt"
	"time"
)

// Defaults, one reason each.
const (
	// No wait before every group: at low load an append's latency is one
	// fsync; under load the group period below gathers.
	defaultSyncInterval = 0
	// Under load, a group begins at most every 10 ms. Both aggregators of
	// a machine share its disk, and each fsync is a device flush (~1 ms on
	// a 2-vCPU VM); syncing as soon as the previous fsync finished made
	// ~320 flushes a second per log at full speed, the disk busy flushing
	// most of the time. Fresh `adclick dev` clusters, full speed, 50 s,
	// alternating: 518k and 521k clicks/s as before, 643-719k with a 5 ms
	// period, 706-712k with 10 ms, each with a lower ack p50. At low load
	// nothing waits (see Config.GroupPeriod).
	defaultGroupPeriod = 10 * time.Millisecond
	// With an interval or a period to wait, a group this large syncs at once.
	defaultSyncBytes = 1 << 20
	// Segments of 64 MiB are deleted as a whole soon after their minutes close.
	defaultSegmentBytes = 64 << 20
	// 64 MiB not yet synced is ~1M clicks: far beyond a healthy disk's lag,
	// small enough to bound memory when the disk stalls.
	defaultMaxBufferBytes = 64 << 20
)

// Config configures the log.
type Config struct {
	SyncInterval time.Duration // wait this long to gather every group before an fsync; 0: no fixed wait (GroupPeriod gathers under load)
	SyncBytes    int           // with SyncInterval or GroupPeriod, sync at once when this many bytes wait
	// GroupPeriod: when the last group held more than one append (appends
	// come faster than a write and fsync), the next group is taken no
	// sooner than this after the last one began; a lone append after a
	// quiet spell syncs at once. Zero means the default, negative turns it
	// off (sync as soon as the previous fsync finished). SyncInterval, when
	// set, wins.
	GroupPeriod    time.Duration
	SegmentBytes   int64 // start a new segment file beyond this size
	MaxBufferBytes int   // appended but not yet synced bytes beyond which Full reports true
	// NoSync skips fsync. Only for benchmarks measuring the cost of syncing;
	// it has no flag, as acknowledged records could be lost.
	NoSync bool
}

// RegisterFlags registers the log's flags with their defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.DurationVar(&c.SyncInterval, "wal-sync-interval", defaultSyncInterval, "time to gather appends before every fsync of the write-ahead log, even a lone append's; 0: no fixed wait (--wal-group-period gathers under load; group commit either way)")
	fs.IntVar(&c.SyncBytes, "wal-sync-bytes", defaultSyncBytes, "with --wal-sync-interval or --wal-group-period, sync at once when this many bytes wait")
	fs.DurationVar(&c.GroupPeriod, "wal-group-period", defaultGroupPeriod, "under load (the last fsync covered more than one append), at least this long between the starts of two commit groups of the write-ahead log, so one fsync covers more; a lone append syncs at once; negative: sync as soon as the previous fsync finished (0 means the default)")
	fs.Int64Var(&c.SegmentBytes, "wal-segment-bytes", defaultSegmentBytes, "size at which the write-ahead log starts a new segment file")
	fs.IntVar(&c.MaxBufferBytes, "wal-max-buffer-bytes", defaultMaxBufferBytes, "bytes appended to the write-ahead log but not yet synced beyond which Forward answers RESOURCE_EXHAUSTED")
}

// WithDefaults fills zero fields.
func (c Config) WithDefaults() Config {
	if c.SyncBytes == 0 {
		c.SyncBytes = defaultSyncBytes
	}
	if c.GroupPeriod == 0 {
		c.GroupPeriod = defaultGroupPeriod
	}
	if c.SegmentBytes == 0 {
		c.SegmentBytes = defaultSegmentBytes
	}
	if c.MaxBufferBytes == 0 {
		c.MaxBufferBytes = defaultMaxBufferBytes
	}
	return c
}

// Validate checks the configuration. Zero values stand for the defaults.
func (c Config) Validate() error {
	c = c.WithDefaults()
	var errs []error
	if c.SyncInterval < 0 {
		errs = append(errs, fmt.Errorf("--wal-sync-interval must not be negative, got %s", c.SyncInterval))
	}
	if c.SyncBytes < 0 {
		errs = append(errs, fmt.Errorf("--wal-sync-bytes must be positive, got %d", c.SyncBytes))
	}
	if c.SegmentBytes < 0 {
		errs = append(errs, fmt.Errorf("--wal-segment-bytes must be positive, got %d", c.SegmentBytes))
	}
	if c.MaxBufferBytes < 0 {
		errs = append(errs, fmt.Errorf("--wal-max-buffer-bytes must be positive, got %d", c.MaxBufferBytes))
	}
	return errors.Join(errs...)
}

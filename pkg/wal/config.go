package wal

import (
	"errors"
	"flag"
	"fmt"
	"time"
)

// Defaults, one reason each.
const (
	// Sync as soon as the previous fsync finished: the running fsync is the
	// batching window, so latency is one fsync at low load and groups grow
	// with load, with no timer to tune.
	defaultSyncInterval = 0
	// With an interval set, a group this large syncs at once rather than waiting.
	defaultSyncBytes = 1 << 20
	// Segments of 64 MiB are deleted as a whole soon after their minutes close.
	defaultSegmentBytes = 64 << 20
	// 64 MiB not yet synced is ~1M clicks: far beyond a healthy disk's lag,
	// small enough to bound memory when the disk stalls.
	defaultMaxBufferBytes = 64 << 20
)

// Config configures the log.
type Config struct {
	SyncInterval   time.Duration // wait this long to gather a group before an fsync; 0: sync as soon as the previous one finished
	SyncBytes      int           // with SyncInterval, sync at once when this many bytes wait
	SegmentBytes   int64         // start a new segment file beyond this size
	MaxBufferBytes int           // appended but not yet synced bytes beyond which Full reports true
	// NoSync skips fsync. Only for benchmarks measuring the cost of syncing;
	// it has no flag, as acknowledged records could be lost.
	NoSync bool
}

// RegisterFlags registers the log's flags with their defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.DurationVar(&c.SyncInterval, "wal-sync-interval", defaultSyncInterval, "time to gather appends before one fsync of the write-ahead log; 0 syncs as soon as the previous fsync finished (group commit either way)")
	fs.IntVar(&c.SyncBytes, "wal-sync-bytes", defaultSyncBytes, "with --wal-sync-interval, sync at once when this many bytes wait")
	fs.Int64Var(&c.SegmentBytes, "wal-segment-bytes", defaultSegmentBytes, "size at which the write-ahead log starts a new segment file")
	fs.IntVar(&c.MaxBufferBytes, "wal-max-buffer-bytes", defaultMaxBufferBytes, "bytes appended to the write-ahead log but not yet synced beyond which Forward answers RESOURCE_EXHAUSTED")
}

// WithDefaults fills zero fields.
func (c Config) WithDefaults() Config {
	if c.SyncBytes == 0 {
		c.SyncBytes = defaultSyncBytes
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

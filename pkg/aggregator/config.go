package aggregator

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/adclick/adclick/pkg/wal"
)

// Defaults, one reason each.
const (
	// A click may arrive this long after its minute ended and still be in
	// the minute's closing partial: covers client retries and router batching.
	defaultAllowedLateness = 15 * time.Second
	// Late clicks are still counted for a day, as the design promises.
	defaultLateHorizon = 24 * time.Hour
	// Minutes close and corrections leave within a tenth of a second.
	defaultTickInterval = 100 * time.Millisecond
	// Enough partials per Apply to amortize a round trip while catching up.
	defaultDeliverBatch = 64
	// Generous: hours of closed minutes for a slow reducer, still bounded.
	defaultMaxOutbox = 100000
	// What bounds the outbox's memory: a reducer away for hours fills it
	// with partials of up to --partial-max-counts counts (~40 bytes each),
	// so the partial count alone allows many GB; 256 MiB is a few hours of
	// a busy node's closed minutes.
	defaultMaxOutboxBytes = 256 << 20
	// 40M ids of open minutes is ~3 GB of memory at ~75 bytes per id, and
	// 500k clicks/s for the 75 s a minute stays open (lateness 15 s).
	defaultMaxOpenIDs = 40_000_000
	// 16384 counts of up to ~150 bytes stay under gRPC's 4 MiB message limit.
	defaultPartialMaxCounts = 16384
	// A reducer that does not answer within this is retried, not waited for.
	defaultDeliverTimeout = 10 * time.Second
	// Retry a failing reducer at least this often once it is back.
	defaultDeliverBackoffMax = 2 * time.Second
)

// Config configures an aggregator.
type Config struct {
	NodeID          string        // set by the caller from --node-id
	DataDir         string        // set by the caller: the log goes to DataDir/wal, the state database to DataDir/state
	AllowedLateness time.Duration // a minute closes at its end plus this
	LateHorizon     time.Duration // clicks older than this are rejected
	TickInterval    time.Duration // how often minutes are checked for closing and corrections flushed
	DeliverBatch    int           // partials per Apply call at most
	MaxOutbox       int           // partials retained at most before Forward answers RESOURCE_EXHAUSTED
	MaxOutboxBytes  int64         // encoded bytes of partials retained at most, likewise
	MaxOpenIDs      int           // click ids of open minutes kept in memory at most, before Forward answers RESOURCE_EXHAUSTED
	// PartialMaxCounts bounds the counts of one partial and of one Apply
	// call; a minute with more counts is sent as several partials.
	PartialMaxCounts  int
	DeliverTimeout    time.Duration // deadline of one Apply call
	DeliverBackoffMax time.Duration // cap of the retry backoff towards a failing reducer
	WAL               wal.Config    // the write-ahead log (--wal-* flags)

	walSync func(*os.File) error // tests inject fsync failures
}

// RegisterFlags registers the aggregator's own flags with their defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.DurationVar(&c.AllowedLateness, "allowed-lateness", defaultAllowedLateness, "how long after its end a minute still takes clicks before it closes")
	fs.DurationVar(&c.LateHorizon, "late-horizon", defaultLateHorizon, "clicks older than this are rejected; younger late clicks are counted as corrections")
	fs.DurationVar(&c.TickInterval, "tick-interval", defaultTickInterval, "how often minutes are checked for closing and corrections flushed")
	fs.IntVar(&c.DeliverBatch, "deliver-batch", defaultDeliverBatch, "partials per Apply call to a reducer, at most")
	fs.IntVar(&c.MaxOutbox, "max-outbox", defaultMaxOutbox, "partials kept for reducers at most; beyond it Forward answers RESOURCE_EXHAUSTED")
	fs.Int64Var(&c.MaxOutboxBytes, "max-outbox-bytes", defaultMaxOutboxBytes, "bytes of partials kept for reducers (in memory, and on disk) at most; beyond it Forward answers RESOURCE_EXHAUSTED")
	fs.IntVar(&c.MaxOpenIDs, "max-open-ids", defaultMaxOpenIDs, "click ids of open minutes held in memory at most (~75 bytes each); beyond it Forward answers RESOURCE_EXHAUSTED")
	fs.IntVar(&c.PartialMaxCounts, "partial-max-counts", defaultPartialMaxCounts, "counts per partial and per Apply call, at most (keeps messages under gRPC's 4 MiB limit)")
	fs.DurationVar(&c.DeliverTimeout, "deliver-timeout", defaultDeliverTimeout, "deadline of one Apply call to a reducer")
	fs.DurationVar(&c.DeliverBackoffMax, "deliver-backoff-max", defaultDeliverBackoffMax, "cap of the retry backoff towards a failing reducer")
	c.WAL.RegisterFlags(fs)
}

// withDefaults fills zero fields, so a Config built in code needs only what it changes.
func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	defInt := func(d *int, v int) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.LateHorizon, defaultLateHorizon)
	def(&c.TickInterval, defaultTickInterval)
	def(&c.DeliverTimeout, defaultDeliverTimeout)
	def(&c.DeliverBackoffMax, defaultDeliverBackoffMax)
	defInt(&c.DeliverBatch, defaultDeliverBatch)
	defInt(&c.MaxOutbox, defaultMaxOutbox)
	if c.MaxOutboxBytes == 0 {
		c.MaxOutboxBytes = defaultMaxOutboxBytes
	}
	defInt(&c.MaxOpenIDs, defaultMaxOpenIDs)
	defInt(&c.PartialMaxCounts, defaultPartialMaxCounts)
	c.WAL = c.WAL.WithDefaults()
	return c
}

// Validate checks the configuration. Zero values stand for the defaults.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if c.AllowedLateness < 0 {
		errs = append(errs, fmt.Errorf("--allowed-lateness must not be negative, got %s", c.AllowedLateness))
	}
	if c.LateHorizon < c.AllowedLateness+2*time.Minute {
		errs = append(errs, fmt.Errorf("--late-horizon (%s) must be at least --allowed-lateness plus 2m (%s), so a minute closes before it leaves the horizon", c.LateHorizon, c.AllowedLateness+2*time.Minute))
	}
	for name, d := range map[string]time.Duration{"--tick-interval": c.TickInterval, "--deliver-timeout": c.DeliverTimeout, "--deliver-backoff-max": c.DeliverBackoffMax} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %s", name, d))
		}
	}
	for name, n := range map[string]int{"--deliver-batch": c.DeliverBatch, "--max-outbox": c.MaxOutbox, "--max-open-ids": c.MaxOpenIDs, "--partial-max-counts": c.PartialMaxCounts} {
		if n < 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %d", name, n))
		}
	}
	if c.MaxOutboxBytes < 0 {
		errs = append(errs, fmt.Errorf("--max-outbox-bytes must be positive, got %d", c.MaxOutboxBytes))
	}
	if err := c.WAL.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

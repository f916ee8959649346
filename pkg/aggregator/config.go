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
	// 40M ids of open minutes is 500k clicks/s for the 75 s a minute stays
	// open (lateness 15 s); their ids are on disk, their index ~20 bytes each.
	defaultMaxOpenIDs = 40_000_000
	// What bounds the dedup memory: index slots (8 bytes, a shard at most
	// 1/2 to 3/4 full, by shard) and the arena chunks not yet spilled. 768 MiB holds the
	// default 40M open ids at the index's mean load.
	defaultMaxOpenIDBytes = 768 << 20
	// 16384 counts of up to ~150 bytes stay under gRPC's 4 MiB message limit.
	defaultPartialMaxCounts = 16384
	// A reducer that does not answer within this is retried, not waited for.
	defaultDeliverTimeout = 10 * time.Second
	// A closing minute's partials reach a reducer within seconds without
	// a limit; spread over 30 s, a busy node's minute (~750k counts at
	// 600k clicks/s) reaches it at 25k counts/s, so the reducer's work
	// (about 1.6 us a count, plus its storage's flushes and compactions)
	// does not take the CPU ingest needs all at once: at 100k counts/s,
	// ~10 s, ingest still halved for a few seconds after each close. Half
	// a minute keeps every minute delivered before the next one closes.
	defaultDeliverSpread = 30 * time.Second
	// A backlog (a reducer that was away) still drains at 6M counts a minute.
	defaultDeliverMaxCounts = 100000
	// Retry a failing reducer at least this often once it is back.
	defaultDeliverBackoffMax = 2 * time.Second
	// An ad with a third of a node's clicks leaves the node most of its
	// capacity for the rest only if split: below that, splitting buys little.
	defaultHotShare = 0.3
	// Below 5,000 clicks/s one aggregator counts an ad with room to spare.
	defaultHotMinRate = 5000
	// Three pieces take a 60% ad below the mean load of three nodes; more
	// pieces mean more partials per minute for little gain.
	defaultHotFanoutMax = 3
	// A holder that dies ends its grant within 30 s (then Lead ahead).
	defaultHotGrantTTL = 30 * time.Second
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
	MaxOpenIDs      int           // click ids of open minutes remembered at most, before Forward answers RESOURCE_EXHAUSTED
	MaxOpenIDBytes  int64         // memory for them at most (index and unspilled arena), likewise
	// PartialMaxCounts bounds the counts of one partial and of one Apply
	// call; a minute with more counts is sent as several partials.
	PartialMaxCounts  int
	DeliverTimeout    time.Duration // deadline of one Apply call
	DeliverBackoffMax time.Duration // cap of the retry backoff towards a failing reducer
	DeliverMaxCounts  int           // counts per second sent to one reducer at most; negative: no limit
	DeliverSpread     time.Duration // partials reach each reducer spread evenly over this long after they are made; negative: at once
	WAL               wal.Config    // the write-ahead log (--wal-* flags)
	// Hot ads (pkg/hotad): an ad above HotShare of this node's intake and
	// HotMinRate clicks/s is split over up to HotFanoutMax aggregators by a
	// grant whose lease lives HotGrantTTL after its holder stops renewing it.
	HotShare     float64
	HotMinRate   float64
	HotFanoutMax int
	HotGrantTTL  time.Duration

	walSync func(*os.File) error // tests inject fsync failures
	// outboxFileMin: a commit's partials of this many bytes and more go
	// to an outbox file (0: aggstate.OutboxFileMin; tests set 1).
	outboxFileMin int
}

// RegisterFlags registers the aggregator's own flags with their defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.DurationVar(&c.AllowedLateness, "allowed-lateness", defaultAllowedLateness, "how long after its end a minute still takes clicks before it closes")
	fs.DurationVar(&c.LateHorizon, "late-horizon", defaultLateHorizon, "clicks older than this are rejected; younger late clicks are counted as corrections")
	fs.DurationVar(&c.TickInterval, "tick-interval", defaultTickInterval, "how often minutes are checked for closing and corrections flushed")
	fs.IntVar(&c.DeliverBatch, "deliver-batch", defaultDeliverBatch, "partials per Apply call to a reducer, at most")
	fs.IntVar(&c.MaxOutbox, "max-outbox", defaultMaxOutbox, "partials kept for reducers at most; beyond it Forward answers RESOURCE_EXHAUSTED")
	fs.Int64Var(&c.MaxOutboxBytes, "max-outbox-bytes", defaultMaxOutboxBytes, "bytes of partials kept for reducers (in memory, and on disk) at most; beyond it Forward answers RESOURCE_EXHAUSTED")
	fs.IntVar(&c.MaxOpenIDs, "max-open-ids", defaultMaxOpenIDs, "click ids of open minutes remembered at most; beyond it Forward answers RESOURCE_EXHAUSTED")
	fs.Int64Var(&c.MaxOpenIDBytes, "max-open-id-bytes", defaultMaxOpenIDBytes, "memory for the click ids of open minutes at most (their index, ~20 bytes an id; the ids themselves go to disk as the minute fills); beyond it Forward answers RESOURCE_EXHAUSTED")
	fs.IntVar(&c.PartialMaxCounts, "partial-max-counts", defaultPartialMaxCounts, "counts per partial and per Apply call, at most (keeps messages under gRPC's 4 MiB limit)")
	fs.DurationVar(&c.DeliverTimeout, "deliver-timeout", defaultDeliverTimeout, "deadline of one Apply call to a reducer")
	fs.DurationVar(&c.DeliverBackoffMax, "deliver-backoff-max", defaultDeliverBackoffMax, "cap of the retry backoff towards a failing reducer")
	fs.IntVar(&c.DeliverMaxCounts, "deliver-max-counts", defaultDeliverMaxCounts, "counts per second sent to one reducer at most, also when catching up (-1: no limit); a shutdown flush is not limited")
	fs.DurationVar(&c.DeliverSpread, "deliver-spread", defaultDeliverSpread, "a closing minute's partials reach each reducer spread evenly over this long (at no fewer than 20000 counts/s), so the reducer's work does not take the CPU ingest needs all at once; negative: as fast as --deliver-max-counts allows; a shutdown flush is not spread")
	fs.Float64Var(&c.HotShare, "hot-share", defaultHotShare, "an ad above this share of this aggregator's intake (and --hot-min-rate) is hot and gets split over several aggregators")
	fs.Float64Var(&c.HotMinRate, "hot-min-rate", defaultHotMinRate, "clicks/s below which no ad is hot (set very high to turn splitting off)")
	fs.IntVar(&c.HotFanoutMax, "hot-fanout-max", defaultHotFanoutMax, "aggregators a hot ad is split over, at most (at least 2)")
	fs.DurationVar(&c.HotGrantTTL, "hot-grant-ttl", defaultHotGrantTTL, "lease of a hot-ad grant in etcd: the grant ends (from a future minute) this long after its holder stops renewing it")
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
	def(&c.DeliverSpread, defaultDeliverSpread)
	defInt(&c.DeliverBatch, defaultDeliverBatch)
	defInt(&c.DeliverMaxCounts, defaultDeliverMaxCounts)
	defInt(&c.MaxOutbox, defaultMaxOutbox)
	if c.MaxOutboxBytes == 0 {
		c.MaxOutboxBytes = defaultMaxOutboxBytes
	}
	if c.MaxOpenIDBytes == 0 {
		c.MaxOpenIDBytes = defaultMaxOpenIDBytes
	}
	defInt(&c.MaxOpenIDs, defaultMaxOpenIDs)
	defInt(&c.PartialMaxCounts, defaultPartialMaxCounts)
	if c.HotShare == 0 {
		c.HotShare = defaultHotShare
	}
	if c.HotMinRate == 0 {
		c.HotMinRate = defaultHotMinRate
	}
	defInt(&c.HotFanoutMax, defaultHotFanoutMax)
	def(&c.HotGrantTTL, defaultHotGrantTTL)
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
	if c.MaxOpenIDBytes < 0 {
		errs = append(errs, fmt.Errorf("--max-open-id-bytes must be positive, got %d", c.MaxOpenIDBytes))
	}
	if c.MaxOutboxBytes < 0 {
		errs = append(errs, fmt.Errorf("--max-outbox-bytes must be positive, got %d", c.MaxOutboxBytes))
	}
	if c.HotShare <= 0 || c.HotShare > 1 {
		errs = append(errs, fmt.Errorf("--hot-share must be in (0, 1], got %g", c.HotShare))
	}
	if c.HotMinRate < 0 {
		errs = append(errs, fmt.Errorf("--hot-min-rate must not be negative, got %g", c.HotMinRate))
	}
	if c.HotFanoutMax < 2 {
		errs = append(errs, fmt.Errorf("--hot-fanout-max must be at least 2, got %d", c.HotFanoutMax))
	}
	if c.HotGrantTTL < 2*time.Second {
		errs = append(errs, fmt.Errorf("--hot-grant-ttl must be at least 2s (it is renewed every third of it), got %s", c.HotGrantTTL))
	}
	if err := c.WAL.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config { return c.withDefaults() }

package router

import (
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/adclick/adclick/pkg/filter"
)

// Defaults, one place, one reason each.
const (
	// 10k events (~1-2 MB) keeps one request well under gRPC's default
	// 4 MB message limit while amortizing per-request costs.
	defaultMaxBatch = 10000
	// An aggregator acks after an fsync'd group commit (milliseconds); 5 s
	// only trips on a node that is really stuck.
	defaultForwardTimeout = 5 * time.Second
	// Reducer queries are memory or pebble reads: milliseconds. 5 s lets us
	// fail over from a hung reducer and still answer a human in time.
	defaultQueryTimeout = 5 * time.Second
	// An etcd read or transaction takes milliseconds; 5 s is etcd down (the
	// client would retry until the caller's deadline) and still a prompt
	// answer to a person.
	defaultFilterTimeout = 5 * time.Second
	// One day of minutes: the late horizon, the longest window the
	// reducers keep running sums for.
	defaultMaxWindow = 1440
	// 500k events in flight is ~250 MB of decoded requests at worst and
	// several times what the aggregators absorb per group commit.
	defaultMaxInflight = 500000

	// maxMaxBatch bounds --max-batch: above this a request exceeds the
	// message size limits anyway.
	maxMaxBatch = 1000000
	// streamInFlight is how many requests of one IngestStream are forwarded
	// at once; enough to hide the aggregators' group-commit latency.
	streamInFlight = 8
	// maxPopularCount bounds PopularAds count: a top list longer than this
	// is an export, not a query.
	maxPopularCount = 10000
	// defaultPopularCount and defaultWindow fill PopularAds defaults (DESIGN.md).
	defaultPopularCount = 100
	defaultWindow       = 1
)

// Config of the router. Flags are the router-specific ones only.
type Config struct {
	MaxBatch       int           // events per Ingest request
	ForwardTimeout time.Duration // per forward to one aggregator
	QueryTimeout   time.Duration // per attempt at one reducer
	MaxWindow      int           // longest PopularAds window, minutes
	MaxInflight    int           // events being forwarded at once, over all requests
	MaxFilters     int           // filters that may exist at once (CreateFilter refuses more)
	FilterTimeout  time.Duration // per filter store (etcd) call of the filter API
}

// RegisterFlags registers the router flags on fs with their defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.IntVar(&c.MaxBatch, "max-batch", defaultMaxBatch, "most events accepted in one ingest request")
	fs.DurationVar(&c.ForwardTimeout, "forward-timeout", defaultForwardTimeout, "how long to wait for an aggregator to make a batch durable")
	fs.DurationVar(&c.QueryTimeout, "query-timeout", defaultQueryTimeout, "how long to wait for one reducer before failing over to the next")
	fs.IntVar(&c.MaxWindow, "max-window", defaultMaxWindow, "longest PopularAds window, in minutes")
	fs.IntVar(&c.MaxInflight, "max-inflight-events", defaultMaxInflight, "events being forwarded at once; beyond it ingest answers RESOURCE_EXHAUSTED")
	fs.DurationVar(&c.FilterTimeout, "filter-timeout", defaultFilterTimeout, "how long a CreateFilter, ListFilters or DeleteFilter waits for etcd before answering UNAVAILABLE")
	fs.IntVar(&c.MaxFilters, "max-filters", filter.DefaultMaxFilters, "filters that may exist at once; every click is matched against each (CreateFilter beyond it answers FAILED_PRECONDITION)")
}

// DefaultConfig returns the configuration RegisterFlags defaults to.
func DefaultConfig() Config {
	var c Config
	c.RegisterFlags(flag.NewFlagSet("", flag.ContinueOnError))
	return c
}

// Validate reports every invalid setting.
func (c Config) Validate() error {
	var errs []error
	if c.MaxBatch < 1 || c.MaxBatch > maxMaxBatch {
		errs = append(errs, fmt.Errorf("--max-batch is %d; want 1..%d", c.MaxBatch, maxMaxBatch))
	}
	if c.ForwardTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--forward-timeout is %v; want > 0", c.ForwardTimeout))
	}
	if c.QueryTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--query-timeout is %v; want > 0", c.QueryTimeout))
	}
	if c.MaxInflight < c.MaxBatch {
		errs = append(errs, fmt.Errorf("--max-inflight-events is %d; want at least --max-batch (%d)", c.MaxInflight, c.MaxBatch))
	}
	if c.FilterTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--filter-timeout is %v; want > 0", c.FilterTimeout))
	}
	if c.MaxFilters < 1 {
		errs = append(errs, fmt.Errorf("--max-filters is %d; want >= 1", c.MaxFilters))
	}
	if c.MaxWindow < 1 {
		errs = append(errs, fmt.Errorf("--max-window is %d; want >= 1 minute", c.MaxWindow))
	}
	return errors.Join(errs...)
}

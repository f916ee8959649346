package loadgen

import (
	"errors"
	"flag"
	"fmt"
	"time"
)

// Config is the configuration of one load run.
type Config struct {
	Target          string        // router gRPC address
	Duration        time.Duration // how long fresh clicks are generated
	Rate            int           // clicks per second over all streams; 0: as fast as possible
	Concurrency     int           // IngestStream streams
	Batch           int           // clicks per request
	Pipeline        int           // requests in flight per stream
	Ads             int           // ad ids are ad-0 .. ad-(Ads-1)
	Zipf            float64       // skew s of ad popularity (> 1)
	Dup             float64       // fraction of clicks sent a second time
	Late            float64       // fraction of clicks held back until their minute closed
	AllowedLateness time.Duration // the cluster's allowed lateness: when a minute closes
	Verify          bool          // compare every count with the query API afterwards
	Seed            uint64        // 0: random
	VerifySample    int           // random (ad, minute) pairs checked per minute
	VerifyTimeout   time.Duration // how long to wait for completeness and for settling counts
	TopN            int           // PopularAds N compared with the generator's own top N
	RunID           string        // prefix of click ids; "" picks a fresh random one (must differ between runs)
}

// Defaults, one place, one reason each.
const (
	defaultDuration        = 30 * time.Second // long enough for steady state, short enough for `make bench`
	defaultConcurrency     = 4                // enough streams to keep both router cores busy
	defaultBatch           = 1000             // amortizes the per-request cost, well under the router's --max-batch
	defaultPipeline        = 4                // hides the round trip without deep queues (the router allows 8)
	defaultAds             = 2_000_000        // the requirement's ad population
	defaultZipf            = 1.1              // web-like popularity: a few hot ads, a long tail
	defaultDup             = 0.01             // clients retry: about 1% of clicks arrive twice
	defaultLate            = 0.001            // a few stragglers per thousand
	defaultAllowedLateness = 15 * time.Second // the cluster's default
	defaultVerifySample    = 2000             // per-minute spot checks, including ads never sent
	defaultVerifyTimeout   = 3 * time.Minute  // a minute closes up to 60 s + lateness after its clicks
	defaultTopN            = 100              // the API's default PopularAds N
)

// DefaultConfig returns the defaults (Target empty).
func DefaultConfig() Config {
	return Config{
		Duration: defaultDuration, Concurrency: defaultConcurrency, Batch: defaultBatch, Pipeline: defaultPipeline,
		Ads: defaultAds, Zipf: defaultZipf, Dup: defaultDup, Late: defaultLate, AllowedLateness: defaultAllowedLateness,
		Verify: true, VerifySample: defaultVerifySample, VerifyTimeout: defaultVerifyTimeout, TopN: defaultTopN,
	}
}

// RegisterFlags registers the load flags on fs with their defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	d := DefaultConfig()
	fs.StringVar(&c.Target, "target", "127.0.0.1:7070", "router gRPC address (HOST:PORT)")
	fs.DurationVar(&c.Duration, "duration", d.Duration, "how long to generate fresh clicks")
	fs.IntVar(&c.Rate, "rate", 0, "clicks per second over all streams (0: as fast as possible)")
	fs.IntVar(&c.Concurrency, "concurrency", d.Concurrency, "number of IngestStream streams")
	fs.IntVar(&c.Batch, "batch", d.Batch, "clicks per request")
	fs.IntVar(&c.Pipeline, "pipeline", d.Pipeline, "requests in flight per stream")
	fs.IntVar(&c.Ads, "ads", d.Ads, "number of distinct ads (ad-0 .. ad-N-1)")
	fs.Float64Var(&c.Zipf, "zipf", d.Zipf, "skew s of ad popularity (Zipf, s > 1)")
	fs.Float64Var(&c.Dup, "dup", d.Dup, "fraction of clicks sent twice")
	fs.Float64Var(&c.Late, "late", d.Late, "fraction of clicks sent after their minute closed")
	fs.DurationVar(&c.AllowedLateness, "allowed-lateness", d.AllowedLateness, "the cluster's allowed lateness (when a minute closes)")
	fs.BoolVar(&c.Verify, "verify", d.Verify, "afterwards compare every count with the query API")
	fs.Uint64Var(&c.Seed, "seed", 0, "random seed (0: random)")
	fs.IntVar(&c.VerifySample, "verify-sample", d.VerifySample, "random (ad, minute) pairs checked per minute")
	fs.DurationVar(&c.VerifyTimeout, "verify-timeout", d.VerifyTimeout, "how long to wait for complete minutes and settled counts")
	fs.IntVar(&c.TopN, "top-n", d.TopN, "N of the PopularAds comparison")
}

// Validate reports a configuration that cannot run.
func (c *Config) Validate() error {
	var errs []error
	if c.Target == "" {
		errs = append(errs, errors.New("--target is required"))
	}
	if c.Duration <= 0 {
		errs = append(errs, fmt.Errorf("--duration must be > 0 (got %s)", c.Duration))
	}
	if c.Rate < 0 {
		errs = append(errs, fmt.Errorf("--rate must be >= 0 (got %d)", c.Rate))
	}
	if c.Concurrency < 1 || c.Batch < 1 || c.Pipeline < 1 {
		errs = append(errs, fmt.Errorf("--concurrency, --batch and --pipeline must be >= 1 (got %d, %d, %d)", c.Concurrency, c.Batch, c.Pipeline))
	}
	if c.Ads < 1 || c.Ads > 1<<31-1 {
		errs = append(errs, fmt.Errorf("--ads must be in 1..2^31-1 (got %d)", c.Ads))
	}
	if !(c.Zipf > 1) {
		errs = append(errs, fmt.Errorf("--zipf must be > 1 (got %v)", c.Zipf))
	}
	if c.Dup < 0 || c.Dup > 1 || c.Late < 0 || c.Late > 1 {
		errs = append(errs, fmt.Errorf("--dup and --late must be fractions in [0, 1] (got %v, %v)", c.Dup, c.Late))
	}
	if c.AllowedLateness < 0 {
		errs = append(errs, fmt.Errorf("--allowed-lateness must be >= 0 (got %s)", c.AllowedLateness))
	}
	if c.VerifySample < 0 || c.TopN < 1 || c.VerifyTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--verify-sample >= 0, --top-n >= 1 and --verify-timeout > 0 required (got %d, %d, %s)", c.VerifySample, c.TopN, c.VerifyTimeout))
	}
	return errors.Join(errs...)
}

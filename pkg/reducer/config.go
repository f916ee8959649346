package reducer

import (
	"errors"
	"flag"
	"fmt"
	"time"
)

// Defaults, one place, one reason each.
const (
	// One day: the late horizon, so every window a router allows (up to
	// 1440 minutes) is answered from memory. Smaller values trade memory
	// for Pebble scans on long windows; answers stay exact either way.
	defaultRetainMinutes = 1440
	// 1 GiB of counts (~38M (filter, minute, ad) counts at ~28 bytes): a
	// day of minutes at ~25k distinct ads a minute, the last ~30 minutes
	// at adclick dev's full speed (~1.3M a minute). With the GC's headroom
	// (GOGC=100: the heap may reach twice what is live) and the ads
	// themselves it fits the chart's 4 GiB limit. adclick dev, whose nodes
	// share one 512 MiB heap limit, sets DevRetainBytes instead.
	defaultRetainBytes = 1 << 30
	// DevRetainBytes is --retain-bytes in adclick dev: about five minutes
	// of counts at its full speed.
	DevRetainBytes = 256 << 20
	// 400 days: a year of billing history plus a month to settle disputes;
	// older minutes are deleted so the store does not grow without end.
	defaultRetention = 400 * 24 * time.Hour
	// minRetention keeps every minute an aggregator may still correct (its
	// late horizon, 24 h by default) with room to spare.
	minRetention = 48 * time.Hour
)

// Config configures a reducer.
type Config struct {
	NodeID  string // set by the caller from --node-id
	DataDir string // set by the caller from --data-dir; Pebble lives in DataDir/pebble
	// RetainMinutes is how many minutes before the current one are kept in
	// memory for queries. Older minutes are answered from Pebble.
	RetainMinutes int
	// RetainBytes bounds the memory of those minutes' counts (an estimate,
	// topn.Index.CountBytes): beyond it the oldest minutes leave memory
	// early and are answered from Pebble too.
	RetainBytes int64
	// Retention is how long stored minutes are kept: older ones are
	// deleted (about hourly), and partials for them are dropped on arrival.
	Retention time.Duration
}

// RegisterFlags registers the reducer's own flags with their defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.IntVar(&c.RetainMinutes, "retain-minutes", defaultRetainMinutes,
		"minutes kept in memory for queries; longer windows are read from disk (exact, slower)")
	fs.Int64Var(&c.RetainBytes, "retain-bytes", defaultRetainBytes,
		"memory for the counts of the minutes kept in memory, at most (~28 bytes a count); beyond it the oldest minutes are read from disk instead (exact, slower)")
	fs.DurationVar(&c.Retention, "retention", defaultRetention,
		"how long stored minutes are kept; older ones are deleted and count 0 (at least 48h, and at least --retain-minutes)")
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
	if c.NodeID == "" {
		errs = append(errs, errors.New("--node-id is empty; want the reducer's cluster-unique id"))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("--data-dir is empty; want a directory for the reducer's Pebble store"))
	}
	if c.RetainMinutes < 1 {
		errs = append(errs, fmt.Errorf("--retain-minutes is %d; want >= 1", c.RetainMinutes))
	}
	if c.RetainBytes < 1 {
		errs = append(errs, fmt.Errorf("--retain-bytes is %d; want >= 1 (memory for the counts of recent minutes)", c.RetainBytes))
	}
	if c.Retention < minRetention || c.Retention < time.Duration(c.RetainMinutes)*time.Minute {
		errs = append(errs, fmt.Errorf("--retention is %s; want at least %s and at least --retain-minutes (%d minutes)", c.Retention, minRetention, c.RetainMinutes))
	}
	return errors.Join(errs...)
}

package router

import (
	"flag"
	"strings"
	"testing"
	"time"
)

func TestConfig(t *testing.T) {
	var c Config
	fs := flag.NewFlagSet("router", flag.ContinueOnError)
	c.RegisterFlags(fs)
	if err := fs.Parse([]string{"--max-batch=500", "--forward-timeout=2s", "--query-timeout=1s", "--max-window=60", "--max-inflight-events=9000", "--max-filters=7", "--filter-timeout=3s"}); err != nil {
		t.Fatal(err)
	}
	if c != (Config{MaxBatch: 500, ForwardTimeout: 2 * time.Second, QueryTimeout: time.Second, MaxWindow: 60, MaxInflight: 9000, MaxFilters: 7, FilterTimeout: 3 * time.Second}) {
		t.Fatalf("parsed %+v", c)
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"max batch zero", func(c *Config) { c.MaxBatch = 0 }, "--max-batch is 0"},
		{"max batch huge", func(c *Config) { c.MaxBatch = 2000000 }, "--max-batch is 2000000"},
		{"forward timeout", func(c *Config) { c.ForwardTimeout = 0 }, "--forward-timeout is 0s"},
		{"query timeout", func(c *Config) { c.QueryTimeout = -time.Second }, "--query-timeout is -1s"},
		{"max window", func(c *Config) { c.MaxWindow = 0 }, "--max-window is 0"},
		{"filter timeout", func(c *Config) { c.FilterTimeout = 0 }, "--filter-timeout is 0s"},
		{"max filters", func(c *Config) { c.MaxFilters = 0 }, "--max-filters is 0"},
		{"in-flight below a batch", func(c *Config) { c.MaxInflight = c.MaxBatch - 1 }, "--max-inflight-events is 9999"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.mutate(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate = %v, want %q", err, tt.want)
			}
		})
	}
}

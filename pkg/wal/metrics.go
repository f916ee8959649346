package wal

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

type metrics struct {
	appends     prometheus.Counter
	bytes       prometheus.Counter
	fsyncs      prometheus.Counter
	fsyncTime   prometheus.Histogram
	tornTails   prometheus.Counter
	segments    prometheus.Gauge
	failed      prometheus.Gauge
	bufferBytes prometheus.Gauge
	gathers     prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	return &metrics{
		appends: f.NewCounter(prometheus.CounterOpts{
			Name: "adclick_wal_appends_total",
			Help: "Records appended to the write-ahead log.",
		}),
		bytes: f.NewCounter(prometheus.CounterOpts{
			Name: "adclick_wal_written_bytes_total",
			Help: "Bytes written to write-ahead log segments.",
		}),
		fsyncs: f.NewCounter(prometheus.CounterOpts{
			Name: "adclick_wal_fsyncs_total",
			Help: "fsyncs of write-ahead log segments (one per commit group).",
		}),
		fsyncTime: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "adclick_wal_fsync_duration_seconds",
			Help:    "Duration of one write-ahead log fsync.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		tornTails: f.NewCounter(prometheus.CounterOpts{
			Name: "adclick_wal_torn_tails_total",
			Help: "Torn or corrupt records cut off the end of the log at open (unacknowledged writes of a crash).",
		}),
		segments: f.NewGauge(prometheus.GaugeOpts{
			Name: "adclick_wal_segments",
			Help: "Write-ahead log segment files on disk.",
		}),
		failed: f.NewGauge(prometheus.GaugeOpts{
			Name: "adclick_wal_failed",
			Help: "1 once a write or fsync of the write-ahead log failed: the node stops acknowledging and must be restarted.",
		}),
		bufferBytes: f.NewGauge(prometheus.GaugeOpts{
			Name: "adclick_wal_buffer_bytes",
			Help: "Bytes appended to the write-ahead log and not yet written (sampled at each group commit).",
		}),
		gathers: f.NewCounter(prometheus.CounterOpts{
			Name: "adclick_wal_group_gathers_total",
			Help: "Commit groups the writer waited to gather (--wal-sync-interval, or --wal-group-period under load) before writing and syncing.",
		}),
	}
}

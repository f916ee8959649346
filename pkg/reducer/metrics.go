package reducer

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

type metrics struct {
	partialsApplied  prometheus.Counter
	partialsSkipped  prometheus.Counter
	countsApplied    prometheus.Counter
	lateCounts       prometheus.Counter
	applyRejected    *prometheus.CounterVec
	applyDuration    prometheus.Histogram
	batchBytes       prometheus.Histogram
	memoryMinutes    prometheus.Gauge
	memoryEntries    prometheus.Gauge
	memoryBytes      *prometheus.GaugeVec
	minutesEvicted   prometheus.Counter
	queryDuration    *prometheus.HistogramVec
	queriesFromDisk  *prometheus.CounterVec
	aggregatorsKnown prometheus.Gauge
	expiredCounts    prometheus.Counter
	expiredDeleted   prometheus.Counter
	retentionErrors  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	return &metrics{
		partialsApplied: f.NewCounter(prometheus.CounterOpts{
			Name: "adclick_reducer_partials_applied_total",
			Help: "Partials durably applied.",
		}),
		partialsSkipped: f.NewCounter(prometheus.CounterOpts{
			Name: "adclick_reducer_partials_duplicate_total",
			Help: "Partials skipped because their sequence was already applied (resends).",
		}),
		countsApplied: f.NewCounter(prometheus.CounterOpts{
			Name: "adclick_reducer_counts_applied_total",
			Help: "(filter, ad, minute) count increments applied.",
		}),
		lateCounts: f.NewCounter(prometheus.CounterOpts{
			Name: "adclick_reducer_correction_counts_applied_total",
			Help: "Count increments applied from correction partials (late clicks of closed minutes).",
		}),
		applyRejected: f.NewCounterVec(prometheus.CounterOpts{
			Name: "adclick_reducer_apply_rejected_total",
			Help: "Apply calls refused, by reason: invalid, gap, stale_incarnation, storage, closed.",
		}, []string{"reason"}),
		applyDuration: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "adclick_reducer_apply_duration_seconds",
			Help:    "Time to apply one Apply request, synced write included.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 15), // 0.2 ms .. 3 s
		}),
		batchBytes: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "adclick_reducer_pebble_batch_bytes",
			Help:    "Size of the Pebble batch committed per Apply request.",
			Buckets: prometheus.ExponentialBuckets(256, 4, 10), // 256 B .. 64 MiB
		}),
		memoryMinutes: f.NewGauge(prometheus.GaugeOpts{
			Name: "adclick_reducer_memory_minutes",
			Help: "(filter, minute) buckets held in memory.",
		}),
		memoryEntries: f.NewGauge(prometheus.GaugeOpts{
			Name: "adclick_reducer_memory_entries",
			Help: "(filter, minute, ad) counts held in memory.",
		}),
		memoryBytes: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "adclick_reducer_memory_bytes",
			Help: "Estimated heap of the in-memory minutes: part=counts (bounded by --retain-bytes), part=ads (every ad seen since start, ~60 bytes each).",
		}, []string{"part"}),
		minutesEvicted: f.NewCounter(prometheus.CounterOpts{
			Name: "adclick_reducer_memory_minutes_evicted_total",
			Help: "Minutes that left memory early because the counts held reached --retain-bytes; windows reaching them are read from disk.",
		}),
		queryDuration: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "adclick_reducer_query_duration_seconds",
			Help:    "Time to answer one query, by query.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 18), // 50 us .. 6.5 s
		}, []string{"query"}),
		queriesFromDisk: f.NewCounterVec(prometheus.CounterOpts{
			Name: "adclick_reducer_queries_from_disk_total",
			Help: "Queries whose window reached before the in-memory minutes and were read from Pebble, by query.",
		}, []string{"query"}),
		aggregatorsKnown: f.NewGauge(prometheus.GaugeOpts{
			Name: "adclick_reducer_aggregators_known",
			Help: "Aggregators with a stored high-water mark.",
		}),
		expiredCounts: f.NewCounter(prometheus.CounterOpts{
			Name: "adclick_reducer_expired_counts_dropped_total",
			Help: "Count increments of partials for minutes older than --retention, dropped on arrival.",
		}),
		expiredDeleted: f.NewCounter(prometheus.CounterOpts{
			Name: "adclick_reducer_expired_counts_deleted_total",
			Help: "Stored (filter, minute, ad) counts deleted because their minute is older than --retention.",
		}),
		retentionErrors: f.NewCounter(prometheus.CounterOpts{
			Name: "adclick_reducer_retention_errors_total",
			Help: "Retention passes that failed (retried at the next pass).",
		}),
	}
}

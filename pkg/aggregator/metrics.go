package aggregator

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

type metrics struct {
	accepted, duplicate, rejected prometheus.Counter
	notOwned                      prometheus.Counter
	refused                       *prometheus.CounterVec
	handOverIDs                   *prometheus.CounterVec
	late                          prometheus.Counter
	lateLookups                   prometheus.Counter
	lateLookupsLocked             prometheus.Counter
	minutesClosed                 prometheus.Counter
	openMinutes                   prometheus.Gauge
	dedupIDs                      prometheus.Gauge
	dedupBytes                    prometheus.Gauge
	outbox                        prometheus.Gauge
	outboxBytes                   prometheus.Gauge
	delivered                     *prometheus.CounterVec
	deliverErrors                 *prometheus.CounterVec
	partialsRejected              *prometheus.CounterVec
	reducersWedged                prometheus.Gauge
	overload                      *prometheus.CounterVec
	recoverySeconds               prometheus.Gauge
	replayed                      prometheus.Counter
	commits                       prometheus.Counter
	durableIDs                    prometheus.Counter
	failed                        prometheus.Gauge
	// Forward's time by stage: read (parse, ring and filter checks, late
	// id lookups), lock (waiting for the counting lock), count (under it),
	// durable (waiting for the log's fsync).
	stageRead, stagePace, stageLock, stageCount, stageDurable prometheus.Observer
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	stages := f.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "adclick_aggregator_forward_stage_seconds",
		Help:    "Time of one forwarded batch in each stage: read (parse, ring and filter checks, late click id lookups), pace (waiting its turn while the open minutes' click ids run ahead of what --max-open-ids and --max-open-id-bytes hold until the next close), lock (waiting for the counting lock), count (dedup and count under it), durable (waiting for the write-ahead log's fsync).",
		Buckets: prometheus.ExponentialBuckets(0.0000625, 2, 16), // 62.5 µs .. 2 s
	}, []string{"stage"})
	events := f.NewCounterVec(prometheus.CounterOpts{
		Name: "adclick_aggregator_events_total",
		Help: "Forwarded clicks by outcome: accepted (counted), duplicate (click_id already counted), rejected (too old or in the future), not_owner (another aggregator owns the ad in that minute: the router resends).",
	}, []string{"status"})
	return &metrics{
		accepted:  events.WithLabelValues("accepted"),
		duplicate: events.WithLabelValues("duplicate"),
		rejected:  events.WithLabelValues("rejected"),
		notOwned:  events.WithLabelValues("not_owner"),
		refused: f.NewCounterVec(prometheus.CounterOpts{
			Name: "adclick_aggregator_refused_batches_total",
			Help: "Forward batches refused whole with UNAVAILABLE: ring_view_stale or filter_view_stale (etcd not confirmed within the view TTL), handing_over (a drain hands click ids to the heir).",
		}, []string{"reason"}),
		handOverIDs: f.NewCounterVec(prometheus.CounterOpts{
			Name: "adclick_aggregator_handover_ids_total",
			Help: "Click ids handed over after a drain: sent (by the draining node) or received (by its heir).",
		}, []string{"direction"}),
		late: f.NewCounter(prometheus.CounterOpts{
			Name: "adclick_aggregator_late_clicks_total",
			Help: "Accepted clicks whose minute was already closed, counted as corrections.",
		}),
		lateLookups: f.NewCounter(prometheus.CounterOpts{
			Name: "adclick_aggregator_late_id_lookups_total",
			Help: "Click ids of closed minutes looked up on disk (id files, state database) before Forward takes the counting lock.",
		}),
		lateLookupsLocked: f.NewCounter(prometheus.CounterOpts{
			Name: "adclick_aggregator_late_id_lookups_locked_total",
			Help: "Click ids of closed minutes looked up on disk while Forward holds the counting lock (other batches wait): the click's minute closed, or a commit finished, after the early lookup. A few per minute close; many means late clicks stall ingest.",
		}),
		minutesClosed: f.NewCounter(prometheus.CounterOpts{
			Name: "adclick_aggregator_minutes_closed_total",
			Help: "Minutes closed (each emits one closing partial).",
		}),
		openMinutes: f.NewGauge(prometheus.GaugeOpts{
			Name: "adclick_aggregator_open_minutes",
			Help: "Minutes not yet closed that hold counts.",
		}),
		dedupIDs: f.NewGauge(prometheus.GaugeOpts{
			Name: "adclick_aggregator_dedup_ids",
			Help: "Click ids of open minutes (and late clicks not yet committed) remembered in memory for dedup; closed minutes' ids are in id files.",
		}),
		dedupBytes: f.NewGauge(prometheus.GaugeOpts{
			Name: "adclick_aggregator_dedup_bytes",
			Help: "Memory held for the click ids of open minutes: index slots and arena chunks not yet spilled to disk (bounded by --max-open-id-bytes).",
		}),
		outbox: f.NewGauge(prometheus.GaugeOpts{
			Name: "adclick_aggregator_outbox_partials",
			Help: "Partials kept until every registered reducer acknowledges them.",
		}),
		outboxBytes: f.NewGauge(prometheus.GaugeOpts{
			Name: "adclick_aggregator_outbox_bytes",
			Help: "Encoded bytes of the partials kept until every registered reducer acknowledges them (bounded by --max-outbox-bytes).",
		}),
		delivered: f.NewCounterVec(prometheus.CounterOpts{
			Name: "adclick_aggregator_partials_delivered_total",
			Help: "Partials acknowledged by a reducer.",
		}, []string{"reducer"}),
		deliverErrors: f.NewCounterVec(prometheus.CounterOpts{
			Name: "adclick_aggregator_deliver_errors_total",
			Help: "Failed Apply calls to a reducer (each is retried).",
		}, []string{"reducer"}),
		partialsRejected: f.NewCounterVec(prometheus.CounterOpts{
			Name: "adclick_aggregator_partials_rejected_total",
			Help: "Apply calls in which a reducer refused a partial for good (INVALID_ARGUMENT, FAILED_PRECONDITION other than a gap); each retry counts. Delivery to that reducer is stuck on the partial until it accepts it: it is never skipped.",
		}, []string{"reducer"}),
		reducersWedged: f.NewGauge(prometheus.GaugeOpts{
			Name: "adclick_aggregator_reducers_wedged",
			Help: "Reducers whose delivery is stuck on a partial they refuse (see adclick_aggregator_partials_rejected_total and the error log).",
		}),
		overload: f.NewCounterVec(prometheus.CounterOpts{
			Name: "adclick_aggregator_overload_total",
			Help: "Forward batches refused with RESOURCE_EXHAUSTED, by what was full: outbox (reducers behind), wal (disk behind), open_ids or open_id_bytes (click ids of open minutes at their bound), open_ids_pace or open_id_bytes_pace (a batch's paced turn more than a second away: clicks come faster than the bounds hold until the next close).",
		}, []string{"reason"}),
		recoverySeconds: f.NewGauge(prometheus.GaugeOpts{
			Name: "adclick_aggregator_recovery_seconds",
			Help: "Time the last start took to load the state database and replay the write-ahead log.",
		}),
		replayed: f.NewCounter(prometheus.CounterOpts{
			Name: "adclick_aggregator_replayed_clicks_total",
			Help: "Clicks re-added from the write-ahead log at start (not yet durable in the state database).",
		}),
		commits: f.NewCounter(prometheus.CounterOpts{
			Name: "adclick_aggregator_state_commits_total",
			Help: "Synced state commits (closed minutes and corrections with their click ids).",
		}),
		durableIDs: f.NewCounter(prometheus.CounterOpts{
			Name: "adclick_aggregator_durable_ids_total",
			Help: "Click ids moved from memory to the state database as their minutes closed or corrections left.",
		}),
		failed: f.NewGauge(prometheus.GaugeOpts{
			Name: "adclick_aggregator_failed",
			Help: "1 once storage failed: the aggregator acknowledges nothing more and must be restarted.",
		}),
		stageRead:    stages.WithLabelValues("read"),
		stagePace:    stages.WithLabelValues("pace"),
		stageLock:    stages.WithLabelValues("lock"),
		stageCount:   stages.WithLabelValues("count"),
		stageDurable: stages.WithLabelValues("durable"),
	}
}

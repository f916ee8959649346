package router

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

type metrics struct {
	received        prometheus.Counter
	accepted        prometheus.Counter
	duplicate       prometheus.Counter
	rejectedRouter  prometheus.Counter
	rejectedAgg     prometheus.Counter
	retried         prometheus.Counter
	rerouted        prometheus.Counter
	ingestRequests  *prometheus.CounterVec
	ingestDuration  prometheus.Histogram
	forwardDuration prometheus.Histogram
	forwardErrors   *prometheus.CounterVec
	ringMembers     prometheus.Gauge
	queries         *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	rejected := f.NewCounterVec(prometheus.CounterOpts{
		Name: "adclick_router_events_rejected_total",
		Help: "Events rejected, by where: router (validation) or aggregator (e.g. older than the late horizon).",
	}, []string{"by"})
	return &metrics{
		received: f.NewCounter(prometheus.CounterOpts{
			Name: "adclick_router_events_received_total",
			Help: "Events received in ingest requests within the batch limit.",
		}),
		accepted: f.NewCounter(prometheus.CounterOpts{
			Name: "adclick_router_events_accepted_total",
			Help: "Events acknowledged as counted now.",
		}),
		duplicate: f.NewCounter(prometheus.CounterOpts{
			Name: "adclick_router_events_duplicate_total",
			Help: "Events acknowledged as already counted (same click_id).",
		}),
		rejectedRouter: rejected.WithLabelValues("router"),
		rejectedAgg:    rejected.WithLabelValues("aggregator"),
		retried: f.NewCounter(prometheus.CounterOpts{
			Name: "adclick_router_events_retry_total",
			Help: "Events answered \"retry\" (their owning aggregator could not take them now), including those of calls that failed whole.",
		}),
		rerouted: f.NewCounter(prometheus.CounterOpts{
			Name: "adclick_router_events_rerouted_total",
			Help: "Events an aggregator answered NOT_OWNER for, re-routed after re-reading the ring history.",
		}),
		ingestRequests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "adclick_router_ingest_requests_total",
			Help: "Ingest requests by gRPC status code.",
		}, []string{"code"}),
		ingestDuration: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "adclick_router_ingest_duration_seconds",
			Help:    "Time from when the router has read an ingest request to its answer (every request of an IngestStream counts): the acknowledgement latency a client sees, less the network and gRPC framing.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14), // 0.5 ms .. 4 s
		}),
		forwardDuration: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "adclick_router_forward_duration_seconds",
			Help:    "Time for one aggregator to answer one forwarded batch.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14), // 0.5 ms .. 4 s
		}),
		forwardErrors: f.NewCounterVec(prometheus.CounterOpts{
			Name: "adclick_router_forward_errors_total",
			Help: "Forwarded batches that failed, by gRPC status code.",
		}, []string{"code"}),
		ringMembers: f.NewGauge(prometheus.GaugeOpts{
			Name: "adclick_router_ring_members",
			Help: "Aggregators on the ring.",
		}),
		queries: f.NewCounterVec(prometheus.CounterOpts{
			Name: "adclick_router_queries_total",
			Help: "Queries by method and gRPC status code.",
		}, []string{"method", "code"}),
	}
}

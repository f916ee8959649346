package aggregator

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

type metrics struct {
	accepted, duplicate, rejected prometheus.Counter
	late                          prometheus.Counter
	minutesClosed                 prometheus.Counter
	openMinutes                   prometheus.Gauge
	dedupIDs                      prometheus.Gauge
	outbox                        prometheus.Gauge
	delivered                     *prometheus.CounterVec
	deliverErrors                 *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	events := f.NewCounterVec(prometheus.CounterOpts{
		Name: "adclick_aggregator_events_total",
		Help: "Forwarded clicks by outcome: accepted (counted), duplicate (click_id already counted), rejected (too old or in the future).",
	}, []string{"status"})
	return &metrics{
		accepted:  events.WithLabelValues("accepted"),
		duplicate: events.WithLabelValues("duplicate"),
		rejected:  events.WithLabelValues("rejected"),
		late: f.NewCounter(prometheus.CounterOpts{
			Name: "adclick_aggregator_late_clicks_total",
			Help: "Accepted clicks whose minute was already closed, counted as corrections.",
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
			Help: "Click ids remembered for dedup (within the late horizon).",
		}),
		outbox: f.NewGauge(prometheus.GaugeOpts{
			Name: "adclick_aggregator_outbox_partials",
			Help: "Partials kept until every registered reducer acknowledges them.",
		}),
		delivered: f.NewCounterVec(prometheus.CounterOpts{
			Name: "adclick_aggregator_partials_delivered_total",
			Help: "Partials acknowledged by a reducer.",
		}, []string{"reducer"}),
		deliverErrors: f.NewCounterVec(prometheus.CounterOpts{
			Name: "adclick_aggregator_deliver_errors_total",
			Help: "Failed Apply calls to a reducer (each is retried).",
		}, []string{"reducer"}),
	}
}

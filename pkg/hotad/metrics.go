package hotad

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics of hot-ad splitting on one aggregator. No ad id is a label.
type Metrics struct {
	Taken, Ended prometheus.Counter
	Active       prometheus.Gauge
	PieceClicks  prometheus.Counter
}

// NewMetrics registers the metrics on reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	grants := f.NewCounterVec(prometheus.CounterOpts{
		Name: "adclick_hot_grants_total",
		Help: "Hot-ad grants this aggregator appended to the ring history (taken) or ended (ended: the ad cooled, or a grant's lease lapsed).",
	}, []string{"event"})
	return &Metrics{
		Taken: grants.WithLabelValues("taken"),
		Ended: grants.WithLabelValues("ended"),
		Active: f.NewGauge(prometheus.GaugeOpts{
			Name: "adclick_hot_grants_active",
			Help: "Hot-ad grants in the ring history that are open or end at a future minute, as this node sees it.",
		}),
		PieceClicks: f.NewCounter(prometheus.CounterOpts{
			Name: "adclick_hot_piece_clicks_total",
			Help: "Clicks this aggregator accepted as one piece of a split (hot) ad.",
		}),
	}
}

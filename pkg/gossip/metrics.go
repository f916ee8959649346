package gossip

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

type metrics struct {
	alive, dead, left prometheus.Gauge
	deaths            prometheus.Counter
	loadBroadcasts    prometheus.Counter
	health            prometheus.Gauge
}

// newMetrics registers the gossip metrics on reg; a nil reg registers nothing.
func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	members := f.NewGaugeVec(prometheus.GaugeOpts{
		Name: "adclick_gossip_members",
		Help: "Gossip members known to this node (itself included), by state: alive (incl. suspect), dead (failed), left (gracefully).",
	}, []string{"state"})
	return &metrics{
		alive: members.WithLabelValues("alive"),
		dead:  members.WithLabelValues("dead"),
		left:  members.WithLabelValues("left"),
		deaths: f.NewCounter(prometheus.CounterOpts{
			Name: "adclick_gossip_member_deaths_total",
			Help: "Peers this node saw declared dead by failure detection (graceful leaves not included).",
		}),
		loadBroadcasts: f.NewCounter(prometheus.CounterOpts{
			Name: "adclick_gossip_load_broadcasts_total",
			Help: "Times this node gossiped a changed clicks/s figure.",
		}),
		health: f.NewGauge(prometheus.GaugeOpts{
			Name: "adclick_gossip_health_score",
			Help: "memberlist's awareness score: 0 is healthy; higher means this node misses probes and slows its own failure detection.",
		}),
	}
}

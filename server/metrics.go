package server

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the server's Prometheus collectors. They implement
// transaction.Metrics.
type Metrics struct {
	reg             *prometheus.Registry
	sessionsActive  prometheus.Gauge
	sessions        *prometheus.CounterVec
	topups          *prometheus.CounterVec
	exchanges       prometheus.Histogram
	exchangeLatency prometheus.Histogram
	serverGap       prometheus.Histogram
	lockWait        prometheus.Histogram
	ledgerErrors    prometheus.Counter
	bridgeRefused   *prometheus.CounterVec
	integrity       *prometheus.CounterVec
	rateLimited     *prometheus.CounterVec
}

// NewMetrics registers the collectors on a new registry (with the Go and
// process collectors).
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		sessionsActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "relay_sessions_active", Help: "Bridge sessions currently open.",
		}),
		sessions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_sessions_total", Help: "Finished bridge sessions by kind and outcome (ok or the error code).",
		}, []string{"kind", "outcome"}),
		topups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_topups_total", Help: "Top-up sessions by the top-up status they left.",
		}, []string{"status"}),
		exchanges: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "relay_session_exchanges", Help: "Bridge round trips per session.",
			Buckets: []float64{1, 2, 3, 4, 5, 6, 8, 10, 15, 20},
		}),
		exchangeLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "relay_exchange_seconds", Help: "Time from sending a transceive to its responses.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		serverGap: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "relay_server_gap_seconds", Help: "Server time between a bridge's responses and the next transceive (crypto, ledger, lock): what the server adds per exchange.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 1.5, 20),
		}),
		lockWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "relay_lock_wait_seconds", Help: "Time spent acquiring card locks.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}),
		ledgerErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_ledger_errors_total", Help: "Ledger operations that failed.",
		}),
		bridgeRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_bridge_refused_total", Help: "Bridge connections refused before the upgrade, by reason.",
		}, []string{"reason"}),
		integrity: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_integrity_failures_total", Help: "Card proofs the ledger refused or that contradict it, by reason (tmc_replay, resolution_conflict).",
		}, []string{"reason"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_rate_limited_total", Help: "Requests answered 429, by limit (address, key, auth_failures, bridges).",
		}, []string{"limit"}),
	}
	m.reg.MustRegister(m.sessionsActive, m.sessions, m.topups, m.exchanges, m.exchangeLatency, m.serverGap, m.lockWait, m.ledgerErrors, m.bridgeRefused, m.integrity, m.rateLimited,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Gatherer exposes the collectors, for tools that read figures in-process
// (the load generator) rather than by scraping /metrics.
func (m *Metrics) Gatherer() prometheus.Gatherer { return m.reg }

// Registerer takes the collectors of other parts of the process (the
// webhook dispatcher) into the same registry.
func (m *Metrics) Registerer() prometheus.Registerer { return m.reg }

// LockWait implements transaction.Metrics.
func (m *Metrics) LockWait(d time.Duration) { m.lockWait.Observe(d.Seconds()) }

// SessionOutcome implements transaction.Metrics.
func (m *Metrics) SessionOutcome(kind, code string) {
	if code == "" {
		code = "ok"
	}
	m.sessions.WithLabelValues(kind, code).Inc()
}

// TopUpOutcome implements transaction.Metrics.
func (m *Metrics) TopUpOutcome(status string) { m.topups.WithLabelValues(status).Inc() }

// LedgerError implements transaction.Metrics.
func (m *Metrics) LedgerError() { m.ledgerErrors.Inc() }

// IntegrityFailure implements transaction.Metrics.
func (m *Metrics) IntegrityFailure(reason string) { m.integrity.WithLabelValues(reason).Inc() }

// OldestUnresolved registers a gauge of the age of the oldest in_progress
// or in_doubt top-up, read from the ledger at each scrape by age (which
// returns ok=false when there is none, and an error when it cannot tell).
func (m *Metrics) OldestUnresolved(age func() (time.Duration, bool, error)) {
	_ = m.reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "relay_oldest_unresolved_topup_seconds",
		Help: "Age of the oldest in_progress or in_doubt top-up since its last change (0 when none; -1 when the ledger did not answer).",
	}, func() float64 {
		d, ok, err := age()
		switch {
		case err != nil:
			return -1
		case !ok:
			return 0
		}
		return d.Seconds()
	})) // a second server on the same metrics keeps the first gauge
}

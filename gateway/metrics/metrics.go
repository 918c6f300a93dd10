// Package metrics holds the router's Prometheus metrics (on a private
// registry), the /stats registry in expvar's JSON shape, and the HTTP server
// that serves them with /livez and /readyz.
//
// Nothing here is package-level state: main builds one Metrics and passes it
// down, so tests can run several routers in one process.
package metrics

import (
	"maps"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics is every Prometheus metric the router exports. Names, types and
// labels are the contract of CONFIG.md; no label takes its values from event
// content (per-subject counts live in /stats).
type Metrics struct {
	Registry *prometheus.Registry
	Stats    *Stats

	StreamEvents         *prometheus.CounterVec // stream
	StreamConnected      *prometheus.GaugeVec   // stream
	StreamLastEventTime  *prometheus.GaugeVec   // stream
	StreamUndecodable    *prometheus.CounterVec // stream, result (handed_on, dead_letter)
	StreamLate           *prometheus.CounterVec // stream
	StreamMissed         *prometheus.CounterVec // stream
	FilterVerdicts       *prometheus.CounterVec // filter, verdict
	FilterErrors         *prometheus.CounterVec // filter, kind
	FilterDuration       *prometheus.HistogramVec
	FilterReloads        *prometheus.CounterVec // result
	FilterBreakerOpen    *prometheus.GaugeVec   // filter
	Deliveries           *prometheus.CounterVec // processor, destination, result
	DeliveryDuration     *prometheus.HistogramVec
	DeliveryLag          *prometheus.HistogramVec
	QueueDepth           *prometheus.GaugeVec   // processor, destination
	DestinationHeld      *prometheus.GaugeVec   // processor, destination
	ProcessorDetached    *prometheus.GaugeVec   // processor, stream
	DeadLetters          *prometheus.CounterVec // processor, reason
	DeadLetterSinkFull   prometheus.Gauge
	EBBatchEntries       *prometheus.HistogramVec // processor
	EBFailedEntries      *prometheus.CounterVec   // processor, code
	EBRuleSyncs          *prometheus.CounterVec   // processor, result
	EBRuleLastSync       *prometheus.GaugeVec     // processor
	OpenFaaSRefreshes    *prometheus.CounterVec   // processor, result
	OpenFaaSLastRefresh  *prometheus.GaugeVec     // processor
	CheckpointWrites     *prometheus.CounterVec   // stream, result
	CheckpointLastWrite  *prometheus.GaugeVec     // stream
	WatermarkLag         *prometheus.GaugeVec     // stream
	WatermarkPending     *prometheus.GaugeVec     // stream
	ReplayWindowExceeded *prometheus.CounterVec   // stream

	families map[string]Family
}

// Family is a registered metric family's type ("counter", "gauge" or
// "histogram") and label names.
type Family struct {
	Type   string
	Labels []string
}

// New builds the metrics on a new private registry, with the Go runtime and
// process collectors.
func New() *Metrics {
	r := prometheus.NewRegistry()
	f := factory{r, map[string]Family{}}
	m := &Metrics{
		Registry: r,
		Stats:    NewStats(),

		StreamEvents:        f.counter("eventrouter_stream_events_total", "Events read from the stream.", "stream"),
		StreamConnected:     f.gauge("eventrouter_stream_connected", "1 while the stream is connected to its source.", "stream"),
		StreamLastEventTime: f.gauge("eventrouter_stream_last_event_timestamp_seconds", "CreatedTime of the last event read, in Unix seconds.", "stream"),
		StreamUndecodable: f.counter("eventrouter_stream_undecodable_events_total",
			"Events the SDK could not decode: handed_on (unknown type, passed on by its type name) or dead_letter (XML that does not decode).", "stream", "result"),
		StreamLate: f.counter("eventrouter_stream_late_events_total",
			"Events that became visible after events created later had been read (CreatedTime before the cursor).", "stream"),
		StreamMissed:   f.counter("eventrouter_stream_missed_events_total", "Events vCenter pruned from its history before they were read.", "stream"),
		FilterVerdicts: f.counter("eventrouter_filter_verdicts_total", "Filter verdicts.", "filter", "verdict"),
		FilterErrors:   f.counter("eventrouter_filter_errors_total", "Filter errors by kind.", "filter", "kind"),
		FilterDuration: f.histogram("eventrouter_filter_duration_seconds", "Time a filter took per event.",
			[]float64{1e-6, 5e-6, 2e-5, 1e-4, 5e-4, 2e-3, 1e-2, 5e-2, 0.25, 1}, "filter"),
		FilterReloads: f.counter("eventrouter_filter_reloads_total", "Filter chain reloads.", "result"),
		FilterBreakerOpen: f.gauge("eventrouter_filter_breaker_open",
			"1 while a filter's breaker is open: after consecutive failures its on_error applies without calling it.", "filter"),
		Deliveries: f.counter("eventrouter_processor_deliveries_total", "Delivery attempts by result.", "processor", "destination", "result"),
		DeliveryDuration: f.histogram("eventrouter_processor_delivery_duration_seconds", "Time one delivery call took.",
			prometheus.ExponentialBuckets(0.001, 2.5, 12), "processor"),
		DeliveryLag: f.histogram("eventrouter_delivery_lag_seconds", "Time from the event's CreatedTime to its delivery.",
			prometheus.ExponentialBuckets(0.005, 2.5, 14), "processor"),
		QueueDepth: f.gauge("eventrouter_queue_depth", "Events waiting for a destination.", "processor", "destination"),
		DestinationHeld: f.gauge("eventrouter_destination_held",
			"1 while a destination is held as a whole (unreachable, throttled, credentials refused): no attempt is counted against its events.", "processor", "destination"),
		ProcessorDetached: f.gauge("eventrouter_processor_detached",
			"1 while a processor is detached from a stream (its queue stayed full) and catches up from the source's history.", "processor", "stream"),
		DeadLetters: f.counter("eventrouter_dead_letters_total", "Events given up on.", "processor", "reason"),
		EBBatchEntries: f.histogram("eventrouter_eventbridge_batch_entries", "Entries per PutEvents call.",
			[]float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, "processor"),
		EBFailedEntries: f.counter("eventrouter_eventbridge_failed_entries_total", "PutEvents entries EventBridge rejected, by error code.", "processor", "code"),
		EBRuleSyncs:     f.counter("eventrouter_eventbridge_rule_syncs_total", "EventBridge rule syncs.", "processor", "result"),
		EBRuleLastSync: f.gauge("eventrouter_eventbridge_rule_last_sync_timestamp_seconds",
			"Last successful rule sync, in Unix seconds.", "processor"),
		OpenFaaSRefreshes: f.counter("eventrouter_openfaas_refreshes_total", "OpenFaaS function listings (topic discovery).", "processor", "result"),
		OpenFaaSLastRefresh: f.gauge("eventrouter_openfaas_last_refresh_timestamp_seconds",
			"Last successful function listing, in Unix seconds.", "processor"),
		CheckpointWrites: f.counter("eventrouter_checkpoint_writes_total", "Checkpoint writes.", "stream", "result"),
		CheckpointLastWrite: f.gauge("eventrouter_checkpoint_last_write_timestamp_seconds",
			"Last successful checkpoint write, in Unix seconds: the age of what a restart would resume from.", "stream"),
		WatermarkLag: f.gauge("eventrouter_watermark_lag_seconds", "Newest event read minus the acknowledged watermark.", "stream"),
		WatermarkPending: f.gauge("eventrouter_watermark_pending_events",
			"Events read but not yet acknowledged (the watermark ledger); at its cap the stream is held.", "stream"),
		ReplayWindowExceeded: f.counter("eventrouter_replay_window_exceeded_total", "Starts whose checkpoint was older than replay_window.", "stream"),
	}
	m.DeadLetterSinkFull = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "eventrouter_dead_letter_sink_full", Help: "1 while the dead-letter sink is full and holds deliveries (nothing is deleted).",
	})
	r.MustRegister(m.DeadLetterSinkFull,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.families = f.families
	m.families["eventrouter_dead_letter_sink_full"] = Family{Type: "gauge"}
	return m
}

// Families returns the type and labels of every eventrouter_ family
// registered, by name. Gather and /metrics leave out a
// labelled family until it has a series; this lists them all, so deploy/'s
// tests can check that the dashboard and the alert rules query only names
// the router exports.
func (m *Metrics) Families() map[string]Family {
	return maps.Clone(m.families)
}

type factory struct {
	r        *prometheus.Registry
	families map[string]Family
}

func (f factory) counter(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	f.r.MustRegister(c)
	f.families[name] = Family{"counter", labels}
	return c
}

func (f factory) gauge(name, help string, labels ...string) *prometheus.GaugeVec {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
	f.r.MustRegister(g)
	f.families[name] = Family{"gauge", labels}
	return g
}

func (f factory) histogram(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
	f.r.MustRegister(h)
	f.families[name] = Family{"histogram", labels}
	return h
}

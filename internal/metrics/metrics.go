// Package metrics holds the service's Prometheus metrics in a registry
// of its own (no global state): task counts and durations, bytes backed
// up and restored, HTTP requests.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is the service's set of metrics.
type Metrics struct {
	reg          *prometheus.Registry
	tasks        *prometheus.CounterVec
	taskDuration *prometheus.HistogramVec
	backedUp     prometheus.Counter
	restored     prometheus.Counter
	requests     *prometheus.CounterVec
	reqDuration  *prometheus.HistogramVec
	dataPlane    prometheus.Counter
}

// New registers the metrics in a new registry, with the Go runtime's and
// the process's.
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.tasks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cairn_tasks_total", Help: "Tasks ended, by kind and result (ok, error).",
	}, []string{"kind", "result"})
	m.taskDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "cairn_task_duration_seconds", Help: "How long tasks ran, by kind.",
		Buckets: prometheus.ExponentialBuckets(0.01, 4, 10),
	}, []string{"kind"})
	m.backedUp = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cairn_backup_bytes_total", Help: "Bytes of volumes backed up (source bytes accounted for).",
	})
	m.restored = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cairn_restore_bytes_total", Help: "Bytes of volumes restored.",
	})
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cairn_http_requests_total", Help: "API requests, by route and status code.",
	}, []string{"route", "code"})
	m.reqDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "cairn_http_request_duration_seconds", Help: "API request durations, by route.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 4, 9),
	}, []string{"route"})
	m.dataPlane = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cairn_data_plane_restarts_total", Help: "Data planes started again after the one serving exited.",
	})
	m.reg.MustRegister(m.tasks, m.taskDuration, m.backedUp, m.restored, m.requests, m.reqDuration, m.dataPlane,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// TaskEnded counts a task.
func (m *Metrics) TaskEnded(kind string, ok bool, d time.Duration) {
	result := "ok"
	if !ok {
		result = "error"
	}
	m.tasks.WithLabelValues(kind, result).Inc()
	m.taskDuration.WithLabelValues(kind).Observe(d.Seconds())
}

// BytesBackedUp counts source bytes a backup accounted for.
func (m *Metrics) BytesBackedUp(n int64) { m.backedUp.Add(float64(n)) }

// BytesRestored counts bytes a restore wrote or verified.
func (m *Metrics) BytesRestored(n int64) { m.restored.Add(float64(n)) }

// DataPlaneRestarted counts a data plane started after the last exited.
func (m *Metrics) DataPlaneRestarted() { m.dataPlane.Inc() }

// Request counts an API request.
func (m *Metrics) Request(route string, code int, d time.Duration) {
	m.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
	m.reqDuration.WithLabelValues(route).Observe(d.Seconds())
}

// StoreRequests exports the requests in flight to the backup store and
// those waiting for a slot, read from the function at every scrape; fn
// must be safe to call from any goroutine.
func (m *Metrics) StoreRequests(fn func() (limit, inFlight, waiting int)) {
	gauge := func(name, help string, pick func(l, f, w int) int) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 {
			return float64(pick(fn()))
		})
	}
	m.reg.MustRegister(
		gauge("cairn_store_requests_limit", "Requests the backup store may have in flight across all tasks.",
			func(l, _, _ int) int { return l }),
		gauge("cairn_store_requests_in_flight", "Requests in flight to the backup store.",
			func(_, f, _ int) int { return f }),
		gauge("cairn_store_requests_waiting", "Requests waiting for a slot to the backup store.",
			func(_, _, w int) int { return w }))
}

// Handler serves the metrics in Prometheus' text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

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
	checks       *prometheus.CounterVec
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
	m.checks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cairn_backup_checks_total", Help: "Verifications and restore drills of backups ended, by kind (verify, drill) and result (passed, failed).",
	}, []string{"kind", "result"})
	m.reg.MustRegister(m.tasks, m.taskDuration, m.backedUp, m.restored, m.requests, m.reqDuration, m.dataPlane, m.checks,
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

// BackupChecked counts a verification or a drill of a backup ("verify",
// "drill") and its result ("passed", "failed"): a failed one means
// damage, and deserves an alert.
func (m *Metrics) BackupChecked(kind, result string) { m.checks.WithLabelValues(kind, result).Inc() }

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

// ArchiveSample is one instance's WAL archive at the moment of a scrape.
type ArchiveSample struct {
	Instance string
	// Streaming is whether the archiver is streaming (not failing or
	// starting).
	Streaming bool
	// LagSeconds is how long the oldest WAL not yet stored has waited.
	LagSeconds float64
	// Gaps counts the stretches of WAL the archive lost.
	Gaps int
	// SecondsSinceComplete is how old the archive's complete-at time is,
	// -1 when unknown.
	SecondsSinceComplete float64
	// SlotSafeBytes is how much more WAL the server may write before the
	// archive's slot loses some, -1 when unbounded or unknown.
	SlotSafeBytes float64
	// RestorePoints is how many restore points the instance has,
	// SecondsSinceRestorePoint the age of the newest (-1: none), and
	// RestorePointFailures how many in a row could not be taken.
	RestorePoints            int
	SecondsSinceRestorePoint float64
	RestorePointFailures     int
}

// Archives registers the WAL archive gauges, read from fn at each
// scrape, one series per instance.
func (m *Metrics) Archives(fn func() []ArchiveSample) {
	m.reg.MustRegister(&archiveCollector{fn: fn,
		streaming: prometheus.NewDesc("cairn_archive_streaming", "1 while an instance's WAL archiver streams, 0 while it starts or fails.", []string{"instance"}, nil),
		lag:       prometheus.NewDesc("cairn_archive_lag_seconds", "How long the oldest WAL received but not yet stored in the archive has waited.", []string{"instance"}, nil),
		gaps:      prometheus.NewDesc("cairn_archive_gaps", "Stretches of WAL an instance's archive lost.", []string{"instance"}, nil),
		age:       prometheus.NewDesc("cairn_archive_complete_age_seconds", "Seconds since the latest time the archive holds everything written by.", []string{"instance"}, nil),
		slot:      prometheus.NewDesc("cairn_archive_slot_safe_bytes", "WAL the server may still write before the archive's slot loses some (-1: unbounded or unknown).", []string{"instance"}, nil),
		points:    prometheus.NewDesc("cairn_restore_points", "Restore points an instance has for a recover in place.", []string{"instance"}, nil),
		pointAge:  prometheus.NewDesc("cairn_restore_point_age_seconds", "Seconds since the data time of an instance's newest restore point (-1: none).", []string{"instance"}, nil),
		pointFail: prometheus.NewDesc("cairn_restore_point_failures", "Restore points in a row that could not be taken (0 once one is).", []string{"instance"}, nil),
	})
}

type archiveCollector struct {
	fn                              func() []ArchiveSample
	streaming, lag, gaps, age, slot *prometheus.Desc
	points, pointAge, pointFail     *prometheus.Desc
}

func (c *archiveCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.streaming, c.lag, c.gaps, c.age, c.slot, c.points, c.pointAge, c.pointFail} {
		ch <- d
	}
}

func (c *archiveCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.fn() {
		streaming := 0.0
		if s.Streaming {
			streaming = 1
		}
		ch <- prometheus.MustNewConstMetric(c.streaming, prometheus.GaugeValue, streaming, s.Instance)
		ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, s.LagSeconds, s.Instance)
		ch <- prometheus.MustNewConstMetric(c.gaps, prometheus.GaugeValue, float64(s.Gaps), s.Instance)
		ch <- prometheus.MustNewConstMetric(c.age, prometheus.GaugeValue, s.SecondsSinceComplete, s.Instance)
		ch <- prometheus.MustNewConstMetric(c.slot, prometheus.GaugeValue, s.SlotSafeBytes, s.Instance)
		ch <- prometheus.MustNewConstMetric(c.points, prometheus.GaugeValue, float64(s.RestorePoints), s.Instance)
		ch <- prometheus.MustNewConstMetric(c.pointAge, prometheus.GaugeValue, s.SecondsSinceRestorePoint, s.Instance)
		ch <- prometheus.MustNewConstMetric(c.pointFail, prometheus.GaugeValue, float64(s.RestorePointFailures), s.Instance)
	}
}

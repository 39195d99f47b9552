package master

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/templateworker/templateworker/proto"
)

// Metrics are the master's Prometheus metrics. Worker figures are read
// from the pool at scrape time, so they are never stale.
type Metrics struct {
	Registry *prometheus.Registry
	topology string

	dispatchTotal    *prometheus.CounterVec
	dispatchDuration *prometheus.HistogramVec
	limitExceeded    *prometheus.CounterVec
	okTotal          prometheus.Counter  // dispatchTotal of result "ok"
	duration         prometheus.Observer // dispatchDuration of topology
}

// NewMetrics registers the metrics of a master running topology
// ("thread" or "process") over pool and quarantine.
func NewMetrics(topology string, pool *Pool, q *Quarantine) *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		topology: topology,
		dispatchTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "templateworker_dispatch_total",
			Help: "Waited and nowait calls (dispatch and run script) by topology and result (ok or the error code).",
		}, []string{"topology", "result"}),
		dispatchDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "templateworker_dispatch_duration_seconds",
			Help:    "Time to answer a waited call, from the API's point of view.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"topology"}),
		limitExceeded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "templateworker_lua_limit_exceeded_total",
			Help: "Calls ended by a sandbox limit, by limit.",
		}, []string{"limit"}),
	}
	m.okTotal = m.dispatchTotal.WithLabelValues(topology, "ok")
	m.duration = m.dispatchDuration.WithLabelValues(topology)
	m.Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.dispatchTotal, m.dispatchDuration, m.limitExceeded,
		&poolCollector{pool: pool, q: q},
	)
	return m
}

// observe records one call's outcome.
func (m *Metrics) observe(start time.Time, waited bool, err error) {
	if m == nil {
		return
	}
	if err == nil {
		m.okTotal.Inc()
	} else {
		result := proto.CodeOf(err)
		if fatalCode(result) {
			m.limitExceeded.WithLabelValues(result).Inc()
		}
		m.dispatchTotal.WithLabelValues(m.topology, result).Inc()
	}
	if waited {
		m.duration.Observe(time.Since(start).Seconds())
	}
}

// poolCollector turns the pool's status into per-worker metrics.
type poolCollector struct {
	pool *Pool
	q    *Quarantine
}

var (
	descUp       = prometheus.NewDesc("templateworker_worker_up", "1 when the worker is ready to serve.", []string{"worker"}, nil)
	descRestarts = prometheus.NewDesc("templateworker_worker_restarts_total", "Worker restarts, by reason.", []string{"worker", "reason"}, nil)
	descFailures = prometheus.NewDesc("templateworker_worker_consecutive_failures", "Consecutive failed runs of the worker.", []string{"worker"}, nil)
	descQueue    = prometheus.NewDesc("templateworker_worker_queue_depth", "Messages or unacknowledged nowait events (the durable queue's window events among them) waiting for the worker.", []string{"worker"}, nil)
	descInflight = prometheus.NewDesc("templateworker_inflight", "Waited calls in flight on the worker.", []string{"worker"}, nil)
	descLoaded   = prometheus.NewDesc("templateworker_tenants_loaded", "Tenant VMs loaded in the worker.", []string{"worker"}, nil)
	descVMs      = prometheus.NewDesc("templateworker_vms", "Tenant VMs built in the worker now.", []string{"worker"}, nil)
	descEvict    = prometheus.NewDesc("templateworker_vm_evictions_total", "Tenants evicted from the worker's VM cache, by reason (lru: the cache was full; idle: unused for --vm-idle-ttl; memory: the heap passed --worker-memory-max's high watermark). Resets when a worker process restarts.", []string{"worker", "reason"}, nil)
	descCold     = prometheus.NewDesc("templateworker_vm_cold_starts_total", "Tenant VMs built (first events, and events after an eviction, a drop or an aborted call). Resets when a worker process restarts.", []string{"worker"}, nil)
	descRSS      = prometheus.NewDesc("templateworker_worker_rss_bytes", "Resident set size of the worker process (thread topology: the master's).", []string{"worker"}, nil)
	descHeap     = prometheus.NewDesc("templateworker_worker_heap_bytes", "Go heap in objects of the worker process (thread topology: the master's).", []string{"worker"}, nil)
	descQuar     = prometheus.NewDesc("templateworker_tenants_quarantined", "Tenants currently quarantined.", nil, nil)
)

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descUp, descRestarts, descFailures, descQueue, descInflight, descLoaded, descVMs, descEvict, descCold, descRSS, descHeap, descQuar} {
		ch <- d
	}
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.pool.Status() {
		w := strconv.Itoa(s.ID)
		up := 0.0
		if s.State == StateReady || s.State == "running" {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, up, w)
		reasons := s.restartReasons
		if len(reasons) == 0 {
			reasons = map[string]int{"exit": 0}
		}
		for reason, n := range reasons {
			ch <- prometheus.MustNewConstMetric(descRestarts, prometheus.CounterValue, float64(n), w, reason)
		}
		ch <- prometheus.MustNewConstMetric(descFailures, prometheus.GaugeValue, float64(s.ConsecutiveFailures), w)
		ch <- prometheus.MustNewConstMetric(descQueue, prometheus.GaugeValue, float64(s.Queued), w)
		ch <- prometheus.MustNewConstMetric(descInflight, prometheus.GaugeValue, float64(s.InFlight), w)
		ch <- prometheus.MustNewConstMetric(descLoaded, prometheus.GaugeValue, float64(s.Tenants), w)
		if cs := s.Cache; cs != nil {
			ch <- prometheus.MustNewConstMetric(descVMs, prometheus.GaugeValue, float64(cs.VMs), w)
			ch <- prometheus.MustNewConstMetric(descEvict, prometheus.CounterValue, float64(cs.EvictionsLRU), w, "lru")
			ch <- prometheus.MustNewConstMetric(descEvict, prometheus.CounterValue, float64(cs.EvictionsIdle), w, "idle")
			ch <- prometheus.MustNewConstMetric(descEvict, prometheus.CounterValue, float64(cs.EvictionsMemory), w, "memory")
			ch <- prometheus.MustNewConstMetric(descCold, prometheus.CounterValue, float64(cs.ColdStarts), w)
		}
		if s.RSSBytes > 0 {
			ch <- prometheus.MustNewConstMetric(descRSS, prometheus.GaugeValue, float64(s.RSSBytes), w)
		}
		if s.HeapBytes > 0 {
			ch <- prometheus.MustNewConstMetric(descHeap, prometheus.GaugeValue, float64(s.HeapBytes), w)
		}
	}
	ch <- prometheus.MustNewConstMetric(descQuar, prometheus.GaugeValue, float64(c.q.Count()))
}

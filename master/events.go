package master

import (
	"context"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/queue"
	"github.com/templateworker/templateworker/store"
)

// EventsConfig configures the durable event queue (package queue) that
// every nowait event goes through.
type EventsConfig struct {
	// MaxAttempts failed deliveries dead-letter an event
	// (--event-max-attempts, default 5).
	MaxAttempts int
	// RetryBackoff is the wait after the first failed delivery, doubled
	// after each further one up to RetryBackoffMax (--event-retry-backoff,
	// --event-retry-backoff-max).
	RetryBackoff, RetryBackoffMax time.Duration
	// BacklogTenant and BacklogMax bound the pending events of one tenant
	// and of the master (--event-backlog-tenant, --event-backlog-max).
	BacklogTenant, BacklogMax int
	// DeadLettersTenant bounds the dead letters one tenant keeps; its
	// oldest are deleted past it (--event-dead-letters-tenant, default
	// 1,000).
	DeadLettersTenant int
	// Concurrency bounds the deliveries in flight (--event-concurrency;
	// default 32 per worker).
	Concurrency int
}

// startQueue opens the durable event queue over st, delivering through
// pool behind the quarantine, and makes it the pool's nowait path. owns
// selects this master's tenants (nil: all).
func startQueue(ctx context.Context, cfg Config, st store.Store, pool *Pool, q *Quarantine, owns func(proto.Id) bool, log zerolog.Logger) (*queue.Queue, error) {
	ec := cfg.Events
	conc := ec.Concurrency
	if conc <= 0 {
		conc = 32 * pool.Len()
	}
	g := guarded{WorkerLike: pool.direct(), q: q}
	n := pool.Len()
	eq, err := queue.Open(ctx, queue.Config{
		Store:           st,
		Dispatch:        g.DispatchEvent,
		DispatchWindow:  g.DispatchWindow,
		Quarantined:     q.Check,
		Route:           func(id proto.Id) int { return id.WorkerID(n) },
		Owns:            owns,
		MaxAttempts:     ec.MaxAttempts,
		RetryBackoff:    ec.RetryBackoff,
		RetryBackoffMax: ec.RetryBackoffMax,
		BacklogTenant:   ec.BacklogTenant,
		BacklogMax:      ec.BacklogMax,
		DeadLetterKeep:  ec.DeadLettersTenant,
		// A tenant's share of the disk, as of a worker's memory before
		// the queue: a quarter of --worker-queue-bytes.
		BacklogTenantBytes: cfg.WorkerQueueBytes / 4,
		BacklogBytesFlag:   "a quarter of --worker-queue-bytes",
		Concurrency:        conc,
		CallTimeout:        cfg.Limits.Timeout + cfg.DispatchTimeout,
		Classify:           classifyDelivery,
		Log:                log,
	})
	if err != nil {
		return nil, err
	}
	pool.queue = eq
	return eq, nil
}

// classifyDelivery is queue.Classify, except that a worker that was
// restarting when the event was handed to it (the event never reached it)
// is no failed attempt of the event.
func classifyDelivery(err error) queue.Outcome {
	if pe := proto.AsError(err); pe != nil && pe.Code == proto.CodeWorkerUnavailable &&
		(strings.Contains(pe.Message, "is restarting") || strings.Contains(pe.Message, "is stopping")) {
		return queue.Wait
	}
	return queue.Classify(err)
}

// queueCollector exports the queue's figures at scrape time.
type queueCollector struct {
	q       *queue.Queue
	workers int
}

var (
	descEvPending   = prometheus.NewDesc("templateworker_events_pending", "Events in the durable queue (due or not), by the worker their tenant routes to.", []string{"worker"}, nil)
	descEvOldest    = prometheus.NewDesc("templateworker_events_oldest_pending_age_seconds", "How long the longest-waiting due event has been due.", nil, nil)
	descEvDelivered = prometheus.NewDesc("templateworker_events_delivered_total", "Queued events a worker ran (their template may have raised an error).", nil, nil)
	descEvRetried   = prometheus.NewDesc("templateworker_events_retried_total", "Failed deliveries (fatal limit, worker death) that will be retried after a backoff.", nil, nil)
	descEvDead      = prometheus.NewDesc("templateworker_events_dead_lettered_total", "Events moved to the dead-letter table after --event-max-attempts failed deliveries.", nil, nil)
	descEvSched     = prometheus.NewDesc("templateworker_events_scheduled_total", "Events scheduled by ctx.events.schedule.", nil, nil)
)

func (c queueCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descEvPending, descEvOldest, descEvDelivered, descEvRetried, descEvDead, descEvSched} {
		ch <- d
	}
}

func (c queueCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.q.Stats()
	for w := 0; w < c.workers; w++ {
		ch <- prometheus.MustNewConstMetric(descEvPending, prometheus.GaugeValue, float64(s.PendingByWorker[w]), itoa(w))
	}
	ch <- prometheus.MustNewConstMetric(descEvOldest, prometheus.GaugeValue, s.OldestPendingAge.Seconds())
	ch <- prometheus.MustNewConstMetric(descEvDelivered, prometheus.CounterValue, float64(s.Delivered))
	ch <- prometheus.MustNewConstMetric(descEvRetried, prometheus.CounterValue, float64(s.Retried))
	ch <- prometheus.MustNewConstMetric(descEvDead, prometheus.CounterValue, float64(s.DeadLettered))
	ch <- prometheus.MustNewConstMetric(descEvSched, prometheus.CounterValue, float64(s.Scheduled))
}

// WatchQueue adds the queue's figures to the metrics.
func (m *Metrics) WatchQueue(q *queue.Queue, workers int) {
	if m != nil && q != nil {
		m.Registry.MustRegister(queueCollector{q: q, workers: workers})
	}
}

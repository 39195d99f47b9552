// Package master is the supervising process: it owns the store, routes
// tenants to workers (threads or re-executed processes), supervises them
// and serves the HTTP API.
package master

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/queue"
	"github.com/templateworker/templateworker/worker"
)

// WorkerLike is one worker or a pool of them: anything that can run a
// tenant's events. The thread worker, the process worker handle and Pool
// all implement it.
type WorkerLike interface {
	// ID is the worker's index in its pool (0 for a pool).
	ID() int
	// Len is the number of workers behind this value.
	Len() int
	// DispatchEvent runs ev for tenant id and returns the results.
	DispatchEvent(ctx context.Context, id proto.Id, ev proto.Event) (proto.Value, error)
	// DispatchEventNoWait queues ev for tenant id without waiting.
	DispatchEventNoWait(id proto.Id, ev proto.Event) error
	// RunScript runs ad-hoc code in tenant id's VM.
	RunScript(ctx context.Context, id proto.Id, name, code string, ev proto.Event) (proto.Value, error)
	// DropTenant discards tenant id's VM; the next call rebuilds it.
	DropTenant(ctx context.Context, id proto.Id) error
	// Kill stops the worker(s).
	Kill(ctx context.Context) error
}

// WorkerStatus is what /v1/workers shows for one worker.
type WorkerStatus struct {
	ID                  int     `json:"id"`
	PID                 int     `json:"pid,omitempty"`
	State               string  `json:"state"`
	Tenants             int     `json:"tenants"`
	UptimeSeconds       float64 `json:"uptime_seconds"`
	Restarts            int     `json:"restarts"`
	ConsecutiveFailures int     `json:"consecutive_failures"`
	LastExit            string  `json:"last_exit,omitempty"`
	InFlight            int     `json:"inflight"`
	Queued              int     `json:"queued"`
	// QueuedBytes are the bytes of the nowait events held for the worker
	// (bounded by --worker-queue-bytes).
	QueuedBytes int64 `json:"queued_bytes"`
	// Pending is the number of events in the durable queue (nowait,
	// delayed, scheduled, due or not) of the tenants routed to the worker.
	Pending int `json:"pending"`
	// Cache is what the worker's tenant-VM cache holds and did (live VMs,
	// cold starts, evictions); nil until a process worker's first
	// heartbeat.
	Cache *proto.CacheStats `json:"cache,omitempty"`
	// HeapBytes and RSSBytes are the worker process's Go heap and resident
	// set size (in the thread topology: the master's, shared by all its
	// workers).
	HeapBytes int64 `json:"heap_bytes,omitempty"`
	RSSBytes  int64 `json:"rss_bytes,omitempty"`
	// Running is the call the worker runs now that started first, from
	// its progress record.
	Running *RunningCall `json:"running,omitempty"`
	// RunningCalls are all the calls the worker runs now (up to
	// --worker-concurrency, one per tenant), from its progress record.
	RunningCalls []RunningCall `json:"running_calls,omitempty"`
	// Concurrency is how many calls the worker may run at once
	// (--worker-concurrency); 0 when not known.
	Concurrency int `json:"concurrency,omitempty"`
	// LastRestartReason is why the worker process was last replaced
	// (crash, hung, watchdog, rolling, memory, recycle, ...).
	LastRestartReason string `json:"last_restart_reason,omitempty"`

	restartReasons map[string]int // for metrics: restarts by reason
}

// RunningCall is the call a worker runs, as /v1/workers shows it.
type RunningCall struct {
	Tenant proto.Id `json:"tenant"`
	// Seconds is how long it has run on its own account (store waits
	// excluded): what the watchdog compares with its limit.
	Seconds float64 `json:"seconds"`
}

// runningCalls describes the calls of list for the status.
func runningCalls(list []worker.ProgressSnapshot) []RunningCall {
	if len(list) == 0 {
		return nil
	}
	now := time.Now()
	out := make([]RunningCall, len(list))
	for i, s := range list {
		out[i] = RunningCall{Tenant: s.Tenant, Seconds: s.Own(now).Seconds()}
	}
	return out
}

// runningCall describes s for the status, nil when no call runs.
func runningCall(s worker.ProgressSnapshot) *RunningCall {
	if !s.Running {
		return nil
	}
	return &RunningCall{Tenant: s.Tenant, Seconds: s.Own(time.Now()).Seconds()}
}

// statusReporter is implemented by workers that can describe themselves.
type statusReporter interface {
	Status() WorkerStatus
}

// Pool routes each tenant to worker (id >> 22) % N.
type Pool struct {
	workers []WorkerLike
	// queue, when set, is the nowait path: DispatchEventNoWait commits
	// the event to it, and it delivers through the workers.
	queue *queue.Queue
}

// direct is the pool without its queue: nowait events go to the workers'
// own (memory-only) queues. The queue delivers through it.
func (p *Pool) direct() *Pool { return &Pool{workers: p.workers} }

// Queue returns the durable event queue, nil when there is none.
func (p *Pool) Queue() *queue.Queue { return p.queue }

// NewPool builds n workers with newWorker(id, n) — the Poolable-style
// constructor of a topology. On error the workers already built are
// killed.
func NewPool[T WorkerLike](ctx context.Context, n int, newWorker func(id, total int) (T, error)) (*Pool, error) {
	if n <= 0 {
		return nil, fmt.Errorf("pool needs at least one worker, got %d", n)
	}
	p := &Pool{workers: make([]WorkerLike, 0, n)}
	for i := 0; i < n; i++ {
		w, err := newWorker(i, n)
		if err != nil {
			_ = p.Kill(ctx)
			return nil, fmt.Errorf("start worker %d: %w", i, err)
		}
		p.workers = append(p.workers, w)
	}
	return p, nil
}

// For returns the worker that owns tenant id.
func (p *Pool) For(id proto.Id) WorkerLike {
	return p.workers[id.WorkerID(len(p.workers))]
}

// Workers returns the pool's workers in id order.
func (p *Pool) Workers() []WorkerLike { return p.workers }

// ID returns 0: a pool is the root of its topology.
func (p *Pool) ID() int { return 0 }

// Len returns the number of workers.
func (p *Pool) Len() int { return len(p.workers) }

// DispatchEvent routes to the tenant's worker.
func (p *Pool) DispatchEvent(ctx context.Context, id proto.Id, ev proto.Event) (proto.Value, error) {
	return p.For(id).DispatchEvent(ctx, id, ev)
}

// DispatchEventNoWait commits ev to the durable queue, which delivers it
// to the tenant's worker; without a queue it goes to the worker's own.
func (p *Pool) DispatchEventNoWait(id proto.Id, ev proto.Event) error {
	if p.queue != nil {
		_, err := p.queue.Accept(context.Background(), id, ev, time.Time{})
		return err
	}
	return p.For(id).DispatchEventNoWait(id, ev)
}

// RunScript routes to the tenant's worker.
func (p *Pool) RunScript(ctx context.Context, id proto.Id, name, code string, ev proto.Event) (proto.Value, error) {
	return p.For(id).RunScript(ctx, id, name, code, ev)
}

// DropTenant routes to the tenant's worker.
func (p *Pool) DropTenant(ctx context.Context, id proto.Id) error {
	return p.For(id).DropTenant(ctx, id)
}

// DropAll discards every tenant VM of every worker (workers that cannot,
// have none).
func (p *Pool) DropAll(ctx context.Context) error {
	var errs []error
	for _, w := range p.workers {
		if d, ok := w.(interface{ DropAll(context.Context) error }); ok {
			if err := d.DropAll(ctx); err != nil {
				errs = append(errs, fmt.Errorf("drop all on worker %d: %w", w.ID(), err))
			}
		}
	}
	return errors.Join(errs...)
}

// Kill stops every worker and returns their errors joined.
func (p *Pool) Kill(ctx context.Context) error {
	var errs []error
	for _, w := range p.workers {
		if err := w.Kill(ctx); err != nil {
			errs = append(errs, fmt.Errorf("kill worker %d: %w", w.ID(), err))
		}
	}
	return errors.Join(errs...)
}

// Status describes every worker.
func (p *Pool) Status() []WorkerStatus {
	out := make([]WorkerStatus, len(p.workers))
	for i, w := range p.workers {
		if s, ok := w.(statusReporter); ok {
			out[i] = s.Status()
		} else {
			out[i] = WorkerStatus{ID: w.ID(), State: "running"}
		}
	}
	return out
}

// Ready reports whether every worker is ready to serve.
func (p *Pool) Ready() bool {
	for _, s := range p.Status() {
		if s.State != "running" && s.State != "ready" {
			return false
		}
	}
	return true
}

func itoa(i int) string { return strconv.Itoa(i) }

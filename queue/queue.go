// Package queue is the master's durable event queue: events accepted for
// later delivery (nowait, delayed, scheduled), committed to the store before
// they are acknowledged, delivered at least once in acceptance order per
// tenant, retried, and dead-lettered.
//
// Accept hands the event to one writer goroutine, which commits everything
// that arrived while its previous commit ran in one transaction (group
// commit), and returns once that transaction is committed. Delivery runs
// each tenant's due events one at a time in Seq order through
// Config.Dispatch (a waited dispatch: its return means the worker ran the
// event), or, when several are due, a window of up to 16 of them through
// Config.DispatchWindow (pipelined: sent back to back, each acknowledged,
// none run after one that must be delivered again), many tenants at once;
// a delivered event is deleted in a later group commit, so a crash in
// between redelivers it (at least once). Only
// per-tenant counts live in memory: payloads are paged from the store.
package queue

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/internal/tenantlog"
	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/store"
)

// Event is one event in the queue or in the dead-letter table.
type Event = proto.QueuedEvent

// Stats are the queue's totals for metrics and /v1/workers.
type Stats struct {
	// Pending is the number of events in the queue (due or not).
	Pending int
	// PendingByWorker is Pending split by the worker each tenant routes
	// to.
	PendingByWorker map[int]int
	// OldestPendingAge is how long the longest-waiting due event has been
	// due (0 when none is due).
	OldestPendingAge time.Duration
	// Delivered, Retried, DeadLettered and Scheduled count, since start,
	// events delivered, failed deliveries that will be retried, events
	// moved to the dead-letter table and events scheduled.
	Delivered, Retried, DeadLettered, Scheduled uint64
	// Deliveries counts the dispatches to workers: one per event, or one
	// per pipelined window of several (Config.DispatchWindow).
	Deliveries uint64
	// Commits counts the group commits (events and deletions of
	// delivered ones together).
	Commits uint64
}

// Store is what the queue needs of the store.
type Store = store.EventStore

// Defaults of Config.
const (
	DefaultMaxAttempts     = 5
	DefaultRetryBackoff    = time.Second
	DefaultRetryBackoffMax = time.Minute
	DefaultBacklogTenant   = 10000
	DefaultBacklogMax      = 1000000
	DefaultDeadLetterKeep  = 1000
	DefaultConcurrency     = 64
	// MaxDelay is how far ahead an event may be due.
	MaxDelay = 366 * 24 * time.Hour
)

// Config configures a Queue.
type Config struct {
	// Store keeps the events.
	Store Store
	// Dispatch runs ev for tenant and returns once the worker ran it (a
	// waited dispatch). Required.
	Dispatch func(ctx context.Context, tenant proto.Id, ev proto.Event) (proto.Value, error)
	// DispatchWindow, if set, runs several of tenant's due events in
	// order without waiting for each (a pipelined delivery) and returns
	// how each ended, as Dispatch would; it must run none after one that
	// ended with an error that proto.StopsWindow, answering those
	// proto.CodeNotRun (Wait, no attempt counted). nil: one Dispatch at a
	// time.
	DispatchWindow func(ctx context.Context, tenant proto.Id, evs []proto.Event) []error
	// Quarantined returns a tenant_quarantined error (with RetryAfter)
	// while tenant's events must wait; nil: never.
	Quarantined func(tenant proto.Id) error
	// Route maps a tenant to its worker (for Stats.PendingByWorker).
	Route func(proto.Id) int
	// Owns reports whether this master delivers tenant's events (the
	// cluster's shard ownership); nil: every tenant.
	Owns func(proto.Id) bool
	// MaxAttempts is the number of failed deliveries after which an event
	// is dead-lettered (--event-max-attempts).
	MaxAttempts int
	// RetryBackoff is the wait after the first failed delivery, doubled
	// after each further one up to RetryBackoffMax.
	RetryBackoff, RetryBackoffMax time.Duration
	// DeadLetterKeep bounds the dead letters of one tenant
	// (--event-dead-letters-tenant): when one more moves in, the tenant's
	// oldest beyond its newest DeadLetterKeep are deleted, so a tenant that
	// keeps poisoning its events cannot fill the disk. BacklogTenantBytes
	// bounds them too: the tenant's oldest beyond its newest ones whose
	// events take that many bytes are deleted (the newest always stays).
	DeadLetterKeep int
	// BacklogTenant and BacklogMax bound the pending events of one tenant
	// and of all (--event-backlog-tenant, --event-backlog-max).
	BacklogTenant, BacklogMax int
	// BacklogTenantBytes bounds the bytes of one tenant's pending events
	// (name, author and data; 0: no bound). BacklogBytesFlag names it in
	// errors.
	BacklogTenantBytes int64
	BacklogBytesFlag   string
	// Concurrency bounds the deliveries in flight at once.
	Concurrency int
	// CallTimeout bounds one delivery.
	CallTimeout time.Duration
	// Classify maps a delivery's error to its outcome; nil: Classify.
	Classify func(err error) Outcome
	// Log receives the queue's events.
	Log zerolog.Logger
}

// Queue is the durable event queue. Its methods are safe for concurrent
// use. Errors are *proto.Error with codes backlog_full (HTTP 503 with
// Retry-After), store_unavailable (503), not_found (404) and bad_request
// (400).
type Queue struct {
	cfg   Config
	log   zerolog.Logger
	lines *tenantlog.Limiter // the lines about a tenant's failed deliveries

	writes       chan *write // to the group-commit writer
	submitMu     sync.RWMutex
	writerClosed bool // under submitMu
	writerStop   chan struct{}
	writerDone   chan struct{}
	commits      atomic.Uint64
	wb           store.EventBatch // the writer's, reused by each commit

	stop   chan struct{}
	wg     sync.WaitGroup // deliverers and timer
	closed atomic.Bool

	mu      sync.Mutex
	tenants map[proto.Id]*tenantState
	total   int
	reserve int   // Accepts in flight, counted against BacklogMax
	cached  int64 // bytes of the events in the tenants' caches (≤ cacheBytes)
	ready   []proto.Id
	cond    *sync.Cond // on mu: wakes the deliverers
	wakes   wakeHeap
	wakeCh  chan struct{}

	delivered, retried, deadLettered, scheduled atomic.Uint64
	deliveries                                  atomic.Uint64
}

// Open loads the backlog of the tenants this master owns from the store and
// starts the writer and the deliverers. Close stops them.
func Open(ctx context.Context, cfg Config) (*Queue, error) {
	if cfg.Store == nil || cfg.Dispatch == nil {
		return nil, fmt.Errorf("queue: Store and Dispatch are required")
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.RetryBackoff <= 0 {
		cfg.RetryBackoff = DefaultRetryBackoff
	}
	if cfg.RetryBackoffMax < cfg.RetryBackoff {
		cfg.RetryBackoffMax = max(DefaultRetryBackoffMax, cfg.RetryBackoff)
	}
	if cfg.BacklogTenant <= 0 {
		cfg.BacklogTenant = DefaultBacklogTenant
	}
	if cfg.BacklogMax <= 0 {
		cfg.BacklogMax = DefaultBacklogMax
	}
	if cfg.DeadLetterKeep <= 0 {
		cfg.DeadLetterKeep = DefaultDeadLetterKeep
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = time.Minute
	}
	if cfg.Route == nil {
		cfg.Route = func(proto.Id) int { return 0 }
	}
	q := &Queue{
		cfg: cfg, log: cfg.Log, lines: tenantlog.New(tenantlog.DefaultPerSecond, tenantlog.DefaultBurst),
		writes:     make(chan *write, 4096),
		writerStop: make(chan struct{}),
		writerDone: make(chan struct{}),
		stop:       make(chan struct{}),
		tenants:    make(map[proto.Id]*tenantState),
		wakeCh:     make(chan struct{}, 1),
	}
	q.cond = sync.NewCond(&q.mu)
	if err := q.load(ctx); err != nil {
		return nil, err
	}
	q.wg.Add(1 + cfg.Concurrency)
	go q.writer()
	go q.timer()
	for i := 0; i < cfg.Concurrency; i++ {
		go q.deliverer()
	}
	return q, nil
}

// load reads the backlog of the owned tenants.
func (q *Queue) load(ctx context.Context) error {
	list, err := q.cfg.Store.EventBacklog(ctx)
	if err != nil {
		return fmt.Errorf("load the event backlog: %w", err)
	}
	now := time.Now()
	n := 0
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, b := range list {
		if q.cfg.Owns != nil && !q.cfg.Owns(b.Tenant) {
			continue
		}
		t := q.tenantLocked(b.Tenant)
		t.complete = false
		t.count = b.Count
		t.bytes = b.Bytes
		t.delayed = true
		t.oldest = b.FirstDue
		q.total += b.Count
		n += b.Count
		q.wakeAtLocked(b.Tenant, t, b.FirstDue, now)
	}
	if n > 0 {
		q.log.Info().Int("events", n).Int("tenants", len(q.tenants)).Msg("event backlog loaded from the store")
	}
	return nil
}

// Close stops delivering, waits for the deliveries in flight (at most until
// ctx ends; the events of cut deliveries stay in the store), commits what
// the writer still holds and stops it. Accept fails with shutting_down
// afterwards.
func (q *Queue) Close(ctx context.Context) error {
	if q.closed.Swap(true) {
		return nil
	}
	close(q.stop)
	q.mu.Lock()
	q.cond.Broadcast()
	q.mu.Unlock()
	done := make(chan struct{})
	go func() {
		q.wg.Wait()
		q.submitMu.Lock()
		q.writerClosed = true
		q.submitMu.Unlock()
		close(q.writerStop)
		<-q.writerDone
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("queue: close: %w", ctx.Err())
	}
}

// Accept commits ev for tenant, due at deliverAt (zero: now), and returns
// its id once the commit is done (group commit).
func (q *Queue) Accept(ctx context.Context, tenant proto.Id, ev proto.Event, deliverAt time.Time) (string, error) {
	return q.add(ctx, tenant, ev, deliverAt, false)
}

// Schedule commits ev for tenant due at at, marked Scheduled (made by
// ctx.events.schedule); it is bounded per tenant like Accept.
func (q *Queue) Schedule(ctx context.Context, tenant proto.Id, at time.Time, ev proto.Event) (string, error) {
	if at.IsZero() {
		at = time.Now()
	}
	id, err := q.add(ctx, tenant, ev, at, true)
	if err == nil {
		q.scheduled.Add(1)
	}
	return id, err
}

func (q *Queue) add(ctx context.Context, tenant proto.Id, ev proto.Event, deliverAt time.Time, scheduled bool) (string, error) {
	if err := ev.Validate(); err != nil {
		return "", proto.Errorf(proto.CodeBadRequest, "bad event: %v", err)
	}
	now := time.Now()
	if deliverAt.IsZero() || deliverAt.Before(now) {
		deliverAt = now
	}
	if deliverAt.Sub(now) > MaxDelay {
		return "", proto.Errorf(proto.CodeBadRequest, "deliver_at is more than %s ahead", MaxDelay)
	}
	ev.ID = ""
	size := eventBytes(ev)
	if err := q.reserveSlot(tenant, size); err != nil {
		return "", err
	}
	w := &write{add: &store.EventRecord{Tenant: tenant, Event: ev, AcceptedAt: now, DeliverAt: deliverAt, Scheduled: scheduled}, size: size}
	// The writer counts the event, under the commit's lock section
	// (accepted), so that the tenant's state matches the store in seq
	// order; here only the reservation is given back.
	seq, err := q.submit(ctx, w)
	q.mu.Lock()
	q.reserve--
	t := q.tenantLocked(tenant)
	t.reserved--
	t.reservedBytes -= size
	if err != nil {
		q.dropIfIdleLocked(tenant, t)
		q.mu.Unlock()
		return "", err
	}
	q.mu.Unlock()
	return strconv.FormatInt(seq, 10), nil
}

// acceptedLocked counts the committed event r (of eventBytes size) in its
// tenant's state, keeps it in the tenant's cache when the cache holds all
// its pending events, and makes the tenant ready (or arms its wake). The
// writer calls it for the events of a commit in seq order.
func (q *Queue) acceptedLocked(r store.EventRecord, size int64) {
	t := q.tenantLocked(r.Tenant)
	now := time.Now()
	if t.count <= 0 || r.DeliverAt.Before(t.oldest) {
		t.oldest = r.DeliverAt
	}
	t.count++
	t.bytes += size
	q.total++
	if r.DeliverAt.After(r.AcceptedAt) {
		t.delayed = true
		t.delayedGen++
		q.uncacheLocked(t) // the cache holds due events only
	} else if t.complete {
		if len(t.buf) < cacheEvents && q.cached+size <= cacheBytes {
			t.buf = append(t.buf, r)
			q.cached += size
		} else {
			q.uncacheLocked(t)
		}
	}
	q.wakeAtLocked(r.Tenant, t, r.DeliverAt, now)
}

// uncacheLocked stops serving t from memory: its events are read from
// the store from now on, until its backlog is empty again.
func (q *Queue) uncacheLocked(t *tenantState) {
	for _, r := range t.buf {
		q.cached -= eventBytes(r.Event)
	}
	t.buf, t.complete = nil, false
}

// reserveSlot counts an Accept in flight against the bounds.
func (q *Queue) reserveSlot(tenant proto.Id, size int64) error {
	if q.closed.Load() {
		return proto.Errorf(proto.CodeShuttingDown, "the master is shutting down")
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	t := q.tenantLocked(tenant)
	if n := q.cfg.BacklogTenantBytes; n > 0 && t.bytes+t.reservedBytes+size > n {
		q.dropIfIdleLocked(tenant, t)
		return &proto.Error{Code: proto.CodeBacklogFull, RetryAfter: 1,
			Message: "tenant " + tenant.String() + " has " + strconv.FormatInt(t.bytes+t.reservedBytes, 10) + " bytes of pending events, the most one tenant may have is " +
				strconv.FormatInt(n, 10) + " (" + q.cfg.BacklogBytesFlag + ")"}
	}
	if t.count+t.reserved >= q.cfg.BacklogTenant {
		q.dropIfIdleLocked(tenant, t)
		return &proto.Error{Code: proto.CodeBacklogFull, RetryAfter: 1,
			Message: "tenant " + tenant.String() + " has " + strconv.Itoa(t.count+t.reserved) + " pending events, the most --event-backlog-tenant allows"}
	}
	if q.total+q.reserve >= q.cfg.BacklogMax {
		q.dropIfIdleLocked(tenant, t)
		return &proto.Error{Code: proto.CodeBacklogFull, RetryAfter: 1,
			Message: "the master has " + strconv.Itoa(q.total+q.reserve) + " pending events, the most --event-backlog-max allows"}
	}
	t.reserved++
	t.reservedBytes += size
	q.reserve++
	return nil
}

// eventBytes is what an event counts against BacklogTenantBytes.
func eventBytes(ev proto.Event) int64 {
	n := int64(len(ev.Name) + len(ev.Data) + 32)
	if ev.Author != nil {
		n += int64(len(*ev.Author))
	}
	return n
}

// Cancel deletes the tenant's pending event id, reporting whether there was
// one (another tenant's id is none).
func (q *Queue) Cancel(ctx context.Context, tenant proto.Id, id string) (bool, error) {
	seq, err := parseID(id)
	if err != nil {
		return false, nil
	}
	q.mu.Lock()
	t := q.tenantLocked(tenant)
	q.uncacheLocked(t)
	if t.delivering[seq] {
		// Handed to its worker already: too late to cancel.
		q.mu.Unlock()
		return false, nil
	}
	// A page of the tenant's events loaded before the deletion commits
	// may hold it: the mark makes the deliverer skip it.
	if t.cancelled == nil {
		t.cancelled = make(map[int64]bool)
	}
	t.cancelled[seq] = true
	t.cancelling++
	q.mu.Unlock()
	gone, ok, err := q.cfg.Store.DeleteEvent(ctx, tenant, seq)
	q.mu.Lock()
	defer q.mu.Unlock()
	t.cancelling--
	if err != nil || !ok {
		delete(t.cancelled, seq)
	} else {
		q.goneLocked(t, eventBytes(gone)) // its bytes too, not only its count
	}
	if !t.running && t.cancelling == 0 {
		clear(t.cancelled) // no page is held, and every deletion is committed
	}
	q.dropIfIdleLocked(tenant, t)
	return ok && err == nil, err
}

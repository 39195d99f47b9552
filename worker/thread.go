package worker

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
)

// Options configure a worker.
type Options struct {
	// Store is where templates and KV live.
	Store Store
	// Limits bound every call; DefaultLimits when zero.
	Limits Limits
	// QueueSize bounds the messages waiting for the worker
	// (--worker-queue); 10000 when zero.
	QueueSize int
	// Concurrency is how many calls of different tenants the worker runs
	// at once (--worker-concurrency); DefaultConcurrency when zero, at most
	// MaxConcurrency. A tenant's calls run one at a time, in order.
	Concurrency int
	// QueueBytes bounds the bytes of the nowait events waiting for the
	// worker (--worker-queue-bytes); past it they fail with backlog_full.
	// 0: no bound.
	QueueBytes int64
	// Logger receives the worker's logs.
	Logger zerolog.Logger
	// NoStartup disables the OnStartup dispatch when the worker starts.
	NoStartup bool
	// OnNowaitError, if set, is told when a nowait event fails (the
	// master counts limit errors against the tenant's quarantine).
	OnNowaitError func(id proto.Id, err error)
	// Watchdog, when positive, is how long one call may run on its own
	// account (the Lua time limit plus a grace period) before the worker
	// abandons its goroutine and its VMs and carries on with fresh ones
	// (the thread topology's watchdog: see Thread). A process worker
	// leaves it zero: its master watches the Progress record and kills
	// the process instead.
	Watchdog time.Duration
	// OnWatchdog, if set, is told which tenant's call the watchdog cut
	// (or panicked, with AbandonOnPanic), and why.
	OnWatchdog func(id proto.Id, why string)
	// AbandonOnPanic makes a panic while a call runs abandon the worker's
	// goroutine and VMs like the watchdog does (the call fails with
	// internal), instead of aborting the process. The thread topology
	// sets it: its process is the master. A process worker aborts, and
	// its master restarts it.
	AbandonOnPanic bool
	// Progress is where the worker records the call it runs; a fresh
	// record in memory when nil. A process worker passes the page it
	// shares with its master.
	Progress *Progress
	// TestWedgeFunction, when set, gives every VM a global function of
	// that name that blocks in Go, never reaching the count hook: a VM
	// that misbehaves, for the watchdog's tests. Set only from the
	// operator's environment (TEMPLATEWORKER_TEST_WEDGE_FUNCTION), never
	// by a tenant.
	TestWedgeFunction string
	// Cache bounds the tenants the worker keeps loaded (--vm-cache-max,
	// --vm-idle-ttl).
	Cache CacheOptions
	// MemoryMax, when positive, is the worker's memory budget
	// (--worker-memory-max): above MemoryHighWater of it in live Go heap
	// the worker evicts least recently used idle VMs down to
	// MemoryLowWater.
	MemoryMax int64
}

// The watermarks of Options.MemoryMax, in percent.
const (
	MemoryHighWater = 90
	MemoryLowWater  = 70
)

// DefaultQueueSize is the default bound of a worker's queue.
const DefaultQueueSize = 10000

// DefaultConcurrency is the default of Options.Concurrency.
const DefaultConcurrency = 4

// Thread is a worker: it owns the VMs of its tenants and runs their calls,
// those of different tenants concurrently (up to Options.Concurrency at
// once), those of one tenant one at a time in arrival order, with a
// bounded queue of the messages that wait (see core). A call runs on its
// caller's goroutine when a slot is free and its tenant has nothing queued,
// saving two goroutine hand-offs, else on a slot goroutine. A go-lua State
// needs one owner at a time, not one OS thread: a tenant's lane holds at
// most one slot, so its VM has one owner, and no goroutine is locked to
// an OS thread. A panic while a call runs aborts the process (with
// Options.AbandonOnPanic, abandons the worker's VMs like the watchdog
// below): a corrupted VM must not keep serving.
//
// With Options.Watchdog, a call that runs longer than that on its own
// account (its time waiting for the store excluded) makes the worker
// abandon its core — the VMs and the calls running and queued: a fresh
// core with a fresh Manager takes over (VMs are rebuilt on the next
// call), the calls queued and in flight on the old one fail at once with
// worker_unavailable (nowait events move to the fresh core), and the old
// core's VMs are told to stop — if one ever reaches the count hook again,
// its call ends there.
type Thread struct {
	id, total   int
	store       Store // the store as given, for OnStartup
	limits      Limits
	queueSize   int
	concurrency int
	log         zerolog.Logger
	onNowait    func(id proto.Id, err error)
	watchdog    time.Duration
	onCut       func(id proto.Id, why string)
	onPanic     bool // abandon the core on a panic instead of exiting
	wedge       string
	cache       CacheOptions
	memMax      int64
	memWarned   time.Time // last warning that nothing could be evicted (sweeper goroutine only)

	// held counts the bytes of the nowait events queued, against
	// maxHeld (0: no bound).
	held    Backlog
	maxHeld int64

	mu        sync.Mutex // held to replace cur
	cur       atomic.Pointer[core]
	abandoned atomic.Int64

	loaded   atomic.Int64
	inflight atomic.Int64
	done     chan struct{}
	doneOnce sync.Once
	killOnce sync.Once
}

type msgKind uint8

const (
	msgDispatch msgKind = iota
	msgRunScript
)

type message struct {
	kind   msgKind
	ctx    context.Context
	id     proto.Id
	event  proto.Event
	name   string
	code   string
	reply  chan result // nil for nowait and for calls run inline
	nowait bool        // a nowait event: its failure goes to OnNowaitError
	then   func(error) // called with the outcome once it ran (QueueDispatchEvent)
	size   int64       // bytes counted in Thread.held
}

type result struct {
	value proto.Value
	err   error
}

// New starts worker id of total: a goroutine serving its queue. It returns
// at once; OnStartup events are queued in the background.
func New(id, total int, opts Options) (*Thread, error) {
	if opts.Limits == (Limits{}) {
		opts.Limits = DefaultLimits
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = DefaultQueueSize
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = DefaultConcurrency
	}
	if opts.Concurrency > MaxConcurrency {
		return nil, fmt.Errorf("worker concurrency %d is over the most, %d", opts.Concurrency, MaxConcurrency)
	}
	log := opts.Logger.With().Int("worker_id", id).Logger()
	w := &Thread{
		id: id, total: total,
		store:       opts.Store,
		limits:      opts.Limits,
		queueSize:   opts.QueueSize,
		concurrency: opts.Concurrency,
		log:         log,
		onNowait:    opts.OnNowaitError,
		watchdog:    opts.Watchdog,
		onCut:       opts.OnWatchdog,
		onPanic:     opts.AbandonOnPanic,
		wedge:       opts.TestWedgeFunction,
		cache:       opts.Cache,
		memMax:      opts.MemoryMax,
		maxHeld:     opts.QueueBytes,
		done:        make(chan struct{}),
	}
	if w.wedge != "" {
		log.Warn().Str("function", w.wedge).Msg("TEST HOOK: tenant VMs get a function that wedges the worker; never set this in production")
	}
	p := opts.Progress
	if p == nil {
		p = NewProgress()
	}
	c := w.newCore(p)
	w.cur.Store(c)
	if w.watchdog > 0 {
		go w.watch()
	}
	switch ttl := c.mgr.cache.IdleTTL; {
	case w.memMax > 0:
		go w.sweeper(min(sweepEvery(ttl), memoryCheckEvery))
	case ttl > 0:
		go w.sweeper(sweepEvery(ttl))
	}
	if !opts.NoStartup {
		go w.startup()
	}
	return w, nil
}

// ID returns the worker's index in its pool.
func (w *Thread) ID() int { return w.id }

// Len returns 1: a Thread is a single worker.
func (w *Thread) Len() int { return 1 }

// Loaded returns the number of tenant VMs the worker holds.
func (w *Thread) Loaded() int { return int(w.loaded.Load()) }

// Concurrency returns how many calls the worker runs at once.
func (w *Thread) Concurrency() int { return w.concurrency }

// Queued returns the number of messages waiting.
func (w *Thread) Queued() int {
	c := w.cur.Load()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.queued
}

// QueuedBytes returns the bytes of the nowait events waiting.
func (w *Thread) QueuedBytes() int64 { return w.held.Bytes() }

// CacheStats returns the tenant-cache counters of the worker's current
// goroutine (they start again from zero when the watchdog replaces it).
func (w *Thread) CacheStats() proto.CacheStats { return w.cur.Load().mgr.Stats().Snapshot() }

// InFlight returns the number of waited calls not yet answered.
func (w *Thread) InFlight() int { return int(w.inflight.Load()) }

// Abandoned returns how many times the watchdog abandoned a goroutine.
func (w *Thread) Abandoned() int { return int(w.abandoned.Load()) }

// Progress returns the record of the worker's calls: the calls started and
// the running call that started first.
func (w *Thread) Progress() ProgressSnapshot { return w.cur.Load().progress.Snapshot() }

// Running returns the calls the worker runs now, one per busy slot.
func (w *Thread) Running() []ProgressSnapshot { return w.cur.Load().progress.Running() }

// Done is closed when the worker has stopped.
func (w *Thread) Done() <-chan struct{} { return w.done }

// recoverPanic handles r, a panic recovered where core c ran the call s
// describes: a corrupted VM must not keep serving, so the process aborts
// — or, with AbandonOnPanic, c and all its VMs are abandoned (s's tenant
// blamed) and a fresh core takes over.
func (w *Thread) recoverPanic(c *core, s ProgressSnapshot, r any) {
	w.log.Error().Interface("panic", r).Str("stack", string(debug.Stack())).Bool("abandon", w.onPanic).
		Str("tenant", s.Tenant.String()).Msg("worker panicked (a corrupted VM must not keep serving)")
	if !w.onPanic {
		os.Exit(2)
	}
	w.abandon(c, s, "a call panicked ("+fmt.Sprint(r)+")")
}

// TryDispatchEvent runs ev for tenant id on the calling goroutine if the
// worker is idle — nothing queued, nothing running — and the tenant's VM
// is loaded, and reports whether it did; a process worker calls it from
// the goroutine that read the event (mesophyll.Inliner). A tenant's first
// call after a load never runs there, and a call that runs there longer
// than a millisecond hands the reading of the connection to another
// goroutine (mesophyll.InlineHandoff, VM.spend): no tenant holds up the
// reading.
func (w *Thread) TryDispatchEvent(ctx context.Context, id proto.Id, ev proto.Event) (proto.Value, bool, error) {
	c := w.cur.Load()
	if c.pending.Load() != 0 || !c.mgr.inlineOK(id) {
		return nil, false, nil
	}
	r, ran := w.tryInline(c, message{kind: msgDispatch, ctx: ctx, id: id, event: ev}, true)
	return r.value, ran, r.err
}

// tryInline runs msg on the calling goroutine if a slot of core c is free
// and msg's tenant has nothing queued or running (with idle: if nothing
// at all is), and reports whether it did.
func (w *Thread) tryInline(c *core, msg message, idle bool) (result, bool) {
	select {
	case <-w.done:
		return result{}, false
	default:
	}
	slot, l, ok := c.tryStart(msg, idle)
	if !ok {
		return result{}, false
	}
	w.inflight.Add(1)
	defer w.inflight.Add(-1)
	r := c.runOne(slot, msg)
	if next, nmsg, more := c.finish(slot, l); more {
		go c.execute(slot, next, nmsg) // the slot goes on without this goroutine
	}
	return r, true
}

// enqueue queues msg on core c without blocking.
func (w *Thread) enqueue(c *core, msg message) error {
	select {
	case <-w.done:
		return proto.Errorf(proto.CodeWorkerUnavailable, "worker %d has stopped", w.id)
	default:
	}
	if msg.size > 0 {
		if err := w.held.Hold(w.id, msg.id, msg.size, w.maxHeld, w.queueSize); err != nil {
			return err
		}
	}
	if err := c.admit(msg); err != nil {
		if msg.size > 0 {
			w.held.Release(msg.id, msg.size)
		}
		return err
	}
	return nil
}

func unavailable(id int) error {
	return &proto.Error{Code: proto.CodeWorkerUnavailable, RetryAfter: 1,
		Message: "worker " + itoa(id) + " was restarted by its watchdog; try again"}
}

// call runs msg inline when a slot is free and its tenant has nothing
// queued, else queues it and waits for its reply or ctx.
func (w *Thread) call(ctx context.Context, msg message) (proto.Value, error) {
	msg.ctx = ctx
	c := w.cur.Load()
	if r, ok := w.tryInline(c, msg, false); ok {
		return r.value, r.err
	}
	msg.reply = make(chan result, 1)
	w.inflight.Add(1)
	defer w.inflight.Add(-1)
	if err := w.enqueue(c, msg); err != nil {
		return nil, err
	}
	select {
	case r := <-msg.reply:
		return r.value, r.err
	case <-ctx.Done():
		return nil, proto.Errorf(proto.CodeTimeout, "worker %d did not answer in time: %v", w.id, ctx.Err())
	case <-c.dead:
		return nil, unavailable(w.id)
	case <-w.done:
		return nil, proto.Errorf(proto.CodeWorkerUnavailable, "worker %d stopped", w.id)
	}
}

// DispatchEvent runs ev for tenant id and waits for the result.
func (w *Thread) DispatchEvent(ctx context.Context, id proto.Id, ev proto.Event) (proto.Value, error) {
	return w.call(ctx, message{kind: msgDispatch, id: id, event: ev})
}

// DispatchEventNoWait queues ev for tenant id and returns at once.
func (w *Thread) DispatchEventNoWait(id proto.Id, ev proto.Event) error {
	if err := ev.Validate(); err != nil {
		return proto.Errorf(proto.CodeBadRequest, "%v", err)
	}
	return w.enqueue(w.cur.Load(), message{kind: msgDispatch, ctx: context.Background(), id: id, event: ev, size: EventSize(ev), nowait: true})
}

// QueueDispatchEvent queues ev for tenant id after the events queued
// before it and returns at once; done is called with its outcome once it
// ran, unless it was refused (the error returned). A process worker's
// Mesophyll client calls it from the goroutine that reads the master's
// events (mesophyll.Queuer), so a tenant's events run in the order sent.
func (w *Thread) QueueDispatchEvent(ctx context.Context, id proto.Id, ev proto.Event, done func(error)) error {
	if err := ev.Validate(); err != nil {
		return proto.Errorf(proto.CodeBadRequest, "%v", err)
	}
	return w.enqueue(w.cur.Load(), message{kind: msgDispatch, ctx: ctx, id: id, event: ev, then: done})
}

// RunScript runs ad-hoc code in tenant id's VM.
func (w *Thread) RunScript(ctx context.Context, id proto.Id, name, code string, ev proto.Event) (proto.Value, error) {
	return w.call(ctx, message{kind: msgRunScript, id: id, name: name, code: code, event: ev})
}

// DropTenant discards tenant id's VM and cached templates (when its call
// ends, if one is running); its next event loads them again.
func (w *Thread) DropTenant(ctx context.Context, id proto.Id) error {
	if err := w.stopped(); err != nil {
		return err
	}
	w.cur.Load().mgr.Drop(id)
	return nil
}

// DropAll discards every tenant's VM and cached templates (those running
// a call when it ends).
func (w *Thread) DropAll(ctx context.Context) error {
	if err := w.stopped(); err != nil {
		return err
	}
	w.cur.Load().mgr.DropAll()
	w.loaded.Store(int64(w.cur.Load().mgr.Loaded()))
	return nil
}

// stopped returns worker_unavailable once the worker has stopped.
func (w *Thread) stopped() error {
	select {
	case <-w.done:
		return proto.Errorf(proto.CodeWorkerUnavailable, "worker %d stopped", w.id)
	default:
		return nil
	}
}

// Kill stops the worker after the messages queued before it: new ones are
// refused, the ones queued and running end, and the VMs are closed.
func (w *Thread) Kill(ctx context.Context) error {
	var err error
	w.killOnce.Do(func() {
		for {
			c := w.cur.Load()
			c.mu.Lock()
			c.killing = true
			if c.pending.Load() == 0 {
				c.closeDrainedLocked()
			}
			c.mu.Unlock()
			select {
			case <-c.drained:
				c.mgr.DropAll() // ends the VMs' suspended coroutines
				w.doneOnce.Do(func() { close(w.done) })
				return
			case <-c.dead:
				continue // abandoned meanwhile: drain its successor
			case <-ctx.Done():
				err = ctx.Err()
				return
			}
		}
	})
	return err
}

// sweeper evicts idle tenants of the worker's current core (and, with a
// memory budget, checks it) every period until the worker stops.
func (w *Thread) sweeper(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-w.done:
			return
		case <-t.C:
			mgr := w.cur.Load().mgr
			if n := mgr.Sweep(); n > 0 {
				w.log.Debug().Int("evicted", n).Msg("evicted idle tenants")
			}
			w.checkMemory(mgr)
			w.loaded.Store(int64(mgr.Loaded()))
		}
	}
}

// memoryCheckEvery is how often a worker with a memory budget compares its
// heap with the budget's watermarks.
const memoryCheckEvery = 250 * time.Millisecond

// checkMemory evicts least recently used idle VMs of mgr when the
// process's live heap is above the high watermark of the memory budget,
// until what they held would bring it down to the low watermark.
func (w *Thread) checkMemory(mgr *Manager) {
	if w.memMax <= 0 {
		return
	}
	live := gcLiveHeap()
	if live*100 <= w.memMax*MemoryHighWater {
		return
	}
	need := live - w.memMax*MemoryLowWater/100
	n, freed := mgr.EvictForMemory(need)
	if n > 0 {
		runtime.GC() // let the next check see what the eviction freed
		w.log.Info().Int64("live_heap", live).Int64("budget", w.memMax).Int("evicted", n).
			Int64("evicted_bytes", freed).Msg("heap above the memory budget's high watermark: evicted idle tenant VMs")
		return
	}
	if now := time.Now(); now.Sub(w.memWarned) > 30*time.Second {
		w.memWarned = now
		w.log.Warn().Int64("live_heap", live).Int64("budget", w.memMax).
			Msg("heap above the memory budget's high watermark and no idle tenant VM left to evict")
	}
}

// startupListTimeout bounds the listing of the OnStartup tenants. A
// process worker that is a planned successor gets its answer only once
// the process it replaces has finished (the master bounds that at 5
// minutes), so that no tenant's OnStartup runs beside its call still
// running there.
const startupListTimeout = 6 * time.Minute

// startup dispatches OnStartup to the tenants this worker owns.
func (w *Thread) startup() {
	ctx, cancel := context.WithTimeout(context.Background(), startupListTimeout)
	defer cancel()
	go func() {
		select {
		case <-w.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	ids, err := startupTenants(ctx, w.store, w.id, w.total)
	if err != nil {
		w.log.Error().Err(err).Msg("list OnStartup tenants")
		return
	}
	for _, id := range ids {
		if err := w.DispatchEventNoWait(id, StartupEvent()); err != nil {
			w.log.Warn().Str("tenant", id.String()).Err(err).Msg("queue OnStartup")
		}
	}
	if len(ids) > 0 {
		w.log.Info().Int("tenants", len(ids)).Msg("OnStartup queued")
	}
}

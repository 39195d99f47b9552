package worker

import (
	"context"
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
	// Logger receives the worker's logs.
	Logger zerolog.Logger
	// NoStartup disables the OnStartup dispatch when the worker starts.
	NoStartup bool
	// OnNowaitError, if set, is told when a nowait event fails (the
	// master counts limit errors against the tenant's quarantine).
	OnNowaitError func(id proto.Id, err error)
	// NoThreadLock leaves the worker's goroutine free to move between OS
	// threads. The thread topology locks it (its contract); a process
	// worker, alone in its process, need not pay for the lock.
	NoThreadLock bool
}

// DefaultQueueSize is the default bound of a worker's queue.
const DefaultQueueSize = 10000

// Thread is a worker of the thread topology: one goroutine, locked to its
// OS thread as the design requires, that owns the VMs of its tenants and
// serves a bounded queue of messages. A panic in it aborts the process: a
// corrupted VM must not keep serving. The lock has a price: an idle worker
// parks its thread, so each message to it pays a wake-up of that thread
// (BENCHMARKS.md measures it).
type Thread struct {
	id, total int
	queue     chan message
	mgr       *Manager
	log       zerolog.Logger
	timeout   time.Duration
	lock      bool
	onNowait  func(id proto.Id, err error)

	// exec is held while a message runs, when messages may also run
	// inline (TryDispatchEvent, only without the thread lock); pending
	// counts the messages queued or running on the worker goroutine.
	exec    sync.Mutex
	pending atomic.Int64

	loaded   atomic.Int64
	inflight atomic.Int64
	done     chan struct{}
	killOnce sync.Once
}

type msgKind uint8

const (
	msgDispatch msgKind = iota
	msgRunScript
	msgDrop
	msgDropAll
	msgKill
)

type message struct {
	kind  msgKind
	ctx   context.Context
	id    proto.Id
	event proto.Event
	name  string
	code  string
	reply chan result // nil for nowait
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
	log := opts.Logger.With().Int("worker_id", id).Logger()
	w := &Thread{
		id: id, total: total,
		queue:    make(chan message, opts.QueueSize),
		mgr:      NewManager(id, total, opts.Store, opts.Limits, log),
		log:      log,
		timeout:  opts.Limits.Timeout,
		lock:     !opts.NoThreadLock,
		onNowait: opts.OnNowaitError,
		done:     make(chan struct{}),
	}
	go w.loop()
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

// Queued returns the number of messages waiting.
func (w *Thread) Queued() int { return len(w.queue) }

// InFlight returns the number of waited calls not yet answered.
func (w *Thread) InFlight() int { return int(w.inflight.Load()) }

// Done is closed when the worker has stopped.
func (w *Thread) Done() <-chan struct{} { return w.done }

func (w *Thread) loop() {
	if w.lock {
		runtime.LockOSThread()
	}
	defer close(w.done)
	defer w.abortOnPanic()
	for msg := range w.queue {
		if !w.lock {
			w.exec.Lock()
		}
		if msg.kind == msgKill {
			w.mgr.DropAll() // ends the VMs' suspended coroutines
			w.mgr.tenants = nil
			msg.reply <- result{}
			return // exec stays locked: nothing runs inline any more
		}
		w.handle(msg)
		w.loaded.Store(int64(w.mgr.Loaded()))
		w.pending.Add(-1)
		if !w.lock {
			w.exec.Unlock()
		}
	}
}

// abortOnPanic, deferred where messages run, aborts the process on a
// panic: a corrupted VM must not keep serving.
func (w *Thread) abortOnPanic() {
	if r := recover(); r != nil {
		w.log.Error().Interface("panic", r).Str("stack", string(debug.Stack())).
			Msg("worker panicked: aborting the process (a corrupted VM must not keep serving)")
		os.Exit(2)
	}
}

// TryDispatchEvent runs ev for tenant id on the calling goroutine if the
// worker is idle — nothing queued, nothing running — and reports whether
// it did; a process worker calls it from the goroutine that read the
// event, saving two goroutine hand-offs per call (mesophyll.Inliner). A
// worker whose goroutine is locked to its OS thread never runs inline: the
// VMs belong to that thread.
func (w *Thread) TryDispatchEvent(ctx context.Context, id proto.Id, ev proto.Event) (proto.Value, bool, error) {
	if w.lock || w.pending.Load() != 0 || !w.exec.TryLock() {
		return nil, false, nil
	}
	defer w.exec.Unlock()
	if w.pending.Load() != 0 { // queued between the check and the lock
		return nil, false, nil
	}
	select {
	case <-w.done:
		return nil, false, nil
	default:
	}
	w.inflight.Add(1)
	defer w.inflight.Add(-1)
	defer w.abortOnPanic()
	v, err := w.mgr.Dispatch(ctx, id, ev)
	w.loaded.Store(int64(w.mgr.Loaded()))
	return v, true, err
}

func (w *Thread) handle(msg message) {
	ctx := msg.ctx
	if err := ctx.Err(); err != nil {
		// The caller gave up while the message was queued.
		if msg.reply != nil {
			msg.reply <- result{err: proto.Errorf(proto.CodeTimeout, "call expired in the worker queue: %v", err)}
		}
		return
	}
	var r result
	switch msg.kind {
	case msgDispatch:
		r.value, r.err = w.mgr.Dispatch(ctx, msg.id, msg.event)
		if msg.reply == nil && r.err != nil {
			w.log.Warn().Str("tenant", msg.id.String()).Str("event", msg.event.Name).Err(r.err).Msg("nowait dispatch failed")
			if w.onNowait != nil {
				w.onNowait(msg.id, r.err)
			}
		}
	case msgRunScript:
		r.value, r.err = w.mgr.RunScript(ctx, msg.id, msg.name, msg.code, msg.event)
	case msgDrop:
		w.mgr.Drop(msg.id)
	case msgDropAll:
		w.mgr.DropAll()
	}
	if msg.reply != nil {
		msg.reply <- r
	}
}

// enqueue puts msg on the queue without blocking.
func (w *Thread) enqueue(msg message) error {
	select {
	case <-w.done:
		return proto.Errorf(proto.CodeWorkerUnavailable, "worker %d has stopped", w.id)
	default:
	}
	w.pending.Add(1)
	select {
	case w.queue <- msg:
		return nil
	default:
		w.pending.Add(-1)
		return &proto.Error{Code: proto.CodeWorkerOverloaded, RetryAfter: 1,
			Message: "worker " + itoa(w.id) + " queue is full (" + itoa(cap(w.queue)) + " messages)"}
	}
}

// call enqueues msg and waits for its reply or ctx.
func (w *Thread) call(ctx context.Context, msg message) (proto.Value, error) {
	msg.ctx = ctx
	msg.reply = make(chan result, 1)
	w.inflight.Add(1)
	defer w.inflight.Add(-1)
	if err := w.enqueue(msg); err != nil {
		return nil, err
	}
	select {
	case r := <-msg.reply:
		return r.value, r.err
	case <-ctx.Done():
		return nil, proto.Errorf(proto.CodeTimeout, "worker %d did not answer in time: %v", w.id, ctx.Err())
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
	return w.enqueue(message{kind: msgDispatch, ctx: context.Background(), id: id, event: ev})
}

// RunScript runs ad-hoc code in tenant id's VM.
func (w *Thread) RunScript(ctx context.Context, id proto.Id, name, code string, ev proto.Event) (proto.Value, error) {
	return w.call(ctx, message{kind: msgRunScript, id: id, name: name, code: code, event: ev})
}

// DropTenant discards tenant id's VM and cached templates.
func (w *Thread) DropTenant(ctx context.Context, id proto.Id) error {
	_, err := w.call(ctx, message{kind: msgDrop, id: id})
	return err
}

// DropAll discards every tenant's VM and cached templates.
func (w *Thread) DropAll(ctx context.Context) error {
	_, err := w.call(ctx, message{kind: msgDropAll})
	return err
}

// Kill stops the worker after the messages queued before it.
func (w *Thread) Kill(ctx context.Context) error {
	var err error
	w.killOnce.Do(func() {
		reply := make(chan result, 1)
		select {
		case w.queue <- message{kind: msgKill, ctx: ctx, reply: reply}:
		case <-ctx.Done():
			err = ctx.Err()
			return
		}
		select {
		case <-reply:
		case <-ctx.Done():
			err = ctx.Err()
		}
	})
	return err
}

// startup dispatches OnStartup to the tenants this worker owns.
func (w *Thread) startup() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ids, err := w.mgr.StartupTenants(ctx)
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

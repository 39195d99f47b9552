package worker

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/internal/tenantlog"
	"github.com/templateworker/templateworker/mesophyll"
	"github.com/templateworker/templateworker/proto"
)

// core is one generation of a Thread's worker: its Manager (and so its
// VMs), its progress record and its scheduler. The watchdog replaces a
// wedged core with a fresh one.
//
// The scheduler runs the calls of different tenants concurrently, at most
// slots (Options.Concurrency) at once, and the calls of one tenant one at
// a time in arrival order: every tenant with messages has a lane (a FIFO);
// a lane holds at most one slot, and a slot that finishes a call takes the
// lane that has waited longest, so --worker-concurrency slow tenants are
// needed to fill a worker and the others queue behind them, bounded by
// the queue size. A call runs on the goroutine that started it: the
// caller's when a slot is free and the tenant has nothing queued (inline),
// else a slot goroutine started for it, which goes on with the next lane
// waiting and ends when none is.
type core struct {
	w        *Thread
	mgr      *Manager
	progress *Progress
	slots    int

	mu      sync.Mutex
	lanes   map[proto.Id]*lane // tenants with a message queued or running
	ready   []*lane            // lanes with messages queued and no call running, oldest first
	free    []int              // free slots (progress record indexes)
	queued  int                // messages waiting in lanes; at most the queue size
	killing bool               // Kill: no more messages; drained closes when idle
	drained chan struct{}
	spare   []*lane // lanes to reuse

	// pending counts the messages queued or running: 0 when idle.
	pending atomic.Int64

	// abort tells the VMs of an abandoned core to end their call at the
	// next count hook; dead is closed at the same time, failing the calls
	// that wait for this core.
	abort atomic.Bool
	dead  chan struct{}
}

// lane is the queue of one tenant's messages in a core.
type lane struct {
	id      proto.Id
	msgs    []message
	head    int
	running bool // a call of the tenant runs (it holds a slot)
	waiting bool // in core.ready
}

func (l *lane) empty() bool { return l.head == len(l.msgs) }

func (l *lane) pop() message {
	m := l.msgs[l.head]
	l.msgs[l.head] = message{}
	l.head++
	if l.empty() {
		l.msgs, l.head = l.msgs[:0], 0
	}
	return m
}

func (w *Thread) newCore(p *Progress) *core {
	c := &core{w: w, progress: p, slots: w.concurrency,
		lanes: make(map[proto.Id]*lane), drained: make(chan struct{}), dead: make(chan struct{})}
	p.setSlots(c.slots)
	for i := c.slots - 1; i >= 0; i-- {
		c.free = append(c.free, i)
	}
	c.mgr = NewManager(w.id, w.total, progressStore{Store: w.store, p: p}, w.limits, w.log)
	c.mgr.stop = &c.abort
	c.mgr.SetCache(w.cache)
	if w.wedge != "" {
		c.mgr.wedge, c.mgr.released = w.wedge, c.dead
	}
	return c
}

func (c *core) isDead() bool {
	select {
	case <-c.dead:
		return true
	default:
		return false
	}
}

// laneLocked returns tenant id's lane, creating it (c.mu held).
func (c *core) laneLocked(id proto.Id) *lane {
	if l := c.lanes[id]; l != nil {
		return l
	}
	var l *lane
	if n := len(c.spare); n > 0 {
		l, c.spare = c.spare[n-1], c.spare[:n-1]
	} else {
		l = &lane{}
	}
	l.id = id
	c.lanes[id] = l
	return l
}

// startLocked gives lane l, which has no call running, a free slot if
// there is one (c.mu held).
func (c *core) startLocked(l *lane) (slot int, ok bool) {
	n := len(c.free)
	if n == 0 {
		return 0, false
	}
	slot, c.free = c.free[n-1], c.free[:n-1]
	l.running = true
	return slot, true
}

// admit queues msg, or starts it on a slot goroutine when a slot is free
// and its tenant has nothing queued or running.
func (c *core) admit(msg message) error {
	w := c.w
	c.mu.Lock()
	switch {
	case c.isDead():
		c.mu.Unlock()
		return unavailable(w.id)
	case c.killing:
		c.mu.Unlock()
		return proto.Errorf(proto.CodeWorkerUnavailable, "worker %d has stopped", w.id)
	}
	l := c.laneLocked(msg.id)
	if !l.running && l.empty() {
		if slot, ok := c.startLocked(l); ok {
			c.pending.Add(1)
			c.mu.Unlock()
			go c.execute(slot, l, msg)
			return nil
		}
	}
	if c.queued >= w.queueSize {
		if !l.running && l.empty() {
			c.dropLaneLocked(l)
		}
		c.mu.Unlock()
		return &proto.Error{Code: proto.CodeWorkerOverloaded, RetryAfter: 1,
			Message: "worker " + itoa(w.id) + " queue is full (" + itoa(w.queueSize) + " messages)"}
	}
	l.msgs = append(l.msgs, msg)
	c.queued++
	c.pending.Add(1)
	if !l.running && !l.waiting {
		l.waiting = true
		c.ready = append(c.ready, l)
	}
	c.mu.Unlock()
	return nil
}

// dropLaneLocked forgets an idle, empty lane (c.mu held).
func (c *core) dropLaneLocked(l *lane) {
	delete(c.lanes, l.id)
	*l = lane{msgs: l.msgs[:0]}
	c.spare = append(c.spare, l)
}

// tryStart takes a slot for msg's tenant on the calling goroutine if one is
// free and the tenant has nothing queued or running (with idle, only if
// nothing at all is queued or running).
func (c *core) tryStart(msg message, idle bool) (slot int, l *lane, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.killing || c.isDead() || (idle && c.pending.Load() != 0) || c.lanes[msg.id] != nil {
		return 0, nil, false
	}
	l = c.laneLocked(msg.id)
	if slot, ok = c.startLocked(l); !ok {
		c.dropLaneLocked(l)
		return 0, nil, false
	}
	c.pending.Add(1)
	return slot, l, true
}

// finish ends the call lane l ran in slot and returns the lane (and its
// message) that slot serves next, if any: the oldest waiting one.
func (c *core) finish(slot int, l *lane) (*lane, message, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l.running = false
	c.pending.Add(-1)
	if c.abort.Load() {
		return nil, message{}, false // abandoned: the successor owns the work
	}
	if !l.empty() {
		l.waiting = true
		c.ready = append(c.ready, l)
	} else {
		c.dropLaneLocked(l)
	}
	if len(c.ready) > 0 {
		next := c.ready[0]
		c.ready[0] = nil
		c.ready = c.ready[1:]
		if len(c.ready) == 0 {
			c.ready = c.ready[:0:0]
		}
		next.waiting, next.running = false, true
		c.queued--
		return next, next.pop(), true
	}
	c.free = append(c.free, slot)
	if c.killing && c.pending.Load() == 0 {
		c.closeDrainedLocked()
	}
	return nil, message{}, false
}

func (c *core) closeDrainedLocked() {
	select {
	case <-c.drained:
	default:
		close(c.drained)
	}
}

// execute is a slot goroutine: it runs msg of lane l, then the lanes that
// wait, until none does.
func (c *core) execute(slot int, l *lane, msg message) {
	for ok := true; ok; {
		r := c.runOne(slot, msg)
		if msg.reply != nil {
			msg.reply <- r
		}
		if msg.then != nil {
			msg.then(r.err)
		}
		l, msg, ok = c.finish(slot, l)
	}
}

// runOne runs msg in slot and returns its result. A panic aborts the
// process (or, with AbandonOnPanic, abandons c: the call fails with
// internal).
func (c *core) runOne(slot int, msg message) result {
	w := c.w
	var r result
	ran := false
	func() {
		defer func() {
			if rec := recover(); rec != nil {
				w.recoverPanic(c, c.progress.readSlot(slot), rec)
			}
		}()
		r = c.run(slot, msg)
		ran = true
	}()
	if !ran { // the call panicked: its error is built only then
		r = result{err: &proto.Error{Code: proto.CodeInternal, Message: "the worker failed running this call; its VMs were discarded"}}
	}
	if msg.size > 0 {
		w.held.Release(msg.id, msg.size)
	}
	if !c.abort.Load() {
		w.loaded.Store(int64(c.mgr.Loaded()))
	}
	return r
}

// slotKey is the context key of the progress slot a call runs in.
type slotKey struct{}

// run executes msg in slot, recording it in the progress record.
func (c *core) run(slot int, msg message) result {
	ctx := msg.ctx
	if err := ctx.Err(); err != nil {
		// The caller gave up while the message was queued.
		r := result{err: proto.Errorf(proto.CodeTimeout, "call expired in the worker queue: %v", err)}
		mesophyll.WindowRan(ctx, r.err)
		return r
	}
	ctx = context.WithValue(ctx, slotKey{}, slot)
	var r result
	switch msg.kind {
	case msgDispatch:
		// A pipelined event runs only while its window has not failed,
		// and its own failure stops the window's later events.
		if err := mesophyll.WindowStopped(ctx); err != nil {
			return result{err: err}
		}
		defer func() { mesophyll.WindowRan(ctx, r.err) }()
		now := time.Now()
		c.progress.begin(slot, msg.id, now)
		r.value, r.err = c.mgr.dispatchAt(ctx, msg.id, msg.event, now)
		c.progress.end(slot)
		if msg.nowait && r.err != nil {
			w := c.w
			c.mgr.lines.Event(&w.log, zerolog.WarnLevel, msg.id).Str("event", msg.event.Name).
				Str("error", tenantlog.ErrorText(r.err)).Msg("nowait dispatch failed")
			if w.onNowait != nil && !c.abort.Load() {
				w.onNowait(msg.id, r.err)
			}
		}
	case msgRunScript:
		c.progress.begin(slot, msg.id, time.Now())
		r.value, r.err = c.mgr.RunScript(ctx, msg.id, msg.name, msg.code, msg.event)
		c.progress.end(slot)
	}
	if c.abort.Load() {
		r = result{err: unavailable(c.w.id)}
	}
	return r
}

// watch is the thread topology's watchdog: it abandons the current core
// when one of its calls has run longer than the watchdog allows.
func (w *Thread) watch() {
	period := max(min(w.watchdog/10, 250*time.Millisecond), 10*time.Millisecond)
	tick := time.NewTicker(period)
	defer tick.Stop()
	var pws []ProgressWatch
	var watched *core
	for {
		select {
		case <-w.done:
			return
		case <-tick.C:
			c := w.cur.Load()
			if c != watched {
				watched, pws = c, make([]ProgressWatch, c.slots)
				for i := range pws {
					pws[i].Period = period
				}
			}
			now := time.Now()
			for i, s := range c.progress.Slots() {
				if ran := pws[i].Observe(s, now); ran > w.watchdog {
					w.abandon(c, s, "watchdog: its call ran "+ran.Round(time.Millisecond).String()+
						" (limit "+w.watchdog.String()+")")
					break
				}
			}
		}
	}
}

// abandon replaces core c, whose call of s.Tenant failed as why says,
// with a fresh core: c's callers and queued calls fail with
// worker_unavailable (nowait events move to the fresh core, in order),
// and c's VMs end their call if they ever reach the count hook. Only
// s.Tenant is blamed: the other calls c was running fail without a
// strike.
func (w *Thread) abandon(c *core, s ProgressSnapshot, why string) {
	w.mu.Lock()
	if w.cur.Load() != c || c.isDead() {
		w.mu.Unlock()
		return
	}
	select {
	case <-w.done:
		w.mu.Unlock()
		return
	default:
	}
	fresh := w.newCore(NewProgress())
	c.abort.Store(true)
	w.cur.Store(fresh)
	w.abandoned.Add(1)
	w.loaded.Store(0)
	w.mu.Unlock()
	w.log.Error().Str("tenant", s.Tenant.String()).Str("why", why).
		Msg("watchdog: abandoning the worker's VMs and its calls; a fresh core takes over")
	// The strike is recorded before the calls fail, so that what a caller
	// does next already sees it.
	if w.onCut != nil && s.Running {
		w.onCut(s.Tenant, why)
	}
	c.mu.Lock()
	close(c.dead)
	var left []message
	for _, l := range c.lanes {
		for !l.empty() {
			left = append(left, l.pop())
		}
	}
	c.lanes, c.ready, c.queued = nil, nil, 0
	c.mu.Unlock()
	for _, msg := range left {
		w.moveOrFail(msg)
	}
}

// moveOrFail handles a message left on an abandoned core: a waited call
// fails (its caller has been told already), a nowait event moves to the
// current core.
func (w *Thread) moveOrFail(msg message) {
	switch {
	case msg.reply != nil:
		msg.reply <- result{err: unavailable(w.id)}
	case msg.then != nil:
		msg.then(unavailable(w.id))
	case msg.kind == msgDispatch:
		if msg.size > 0 {
			w.held.Release(msg.id, msg.size) // enqueue holds it again
		}
		if err := w.enqueue(w.cur.Load(), msg); err != nil {
			w.log.Warn().Str("tenant", msg.id.String()).Err(err).Msg("nowait event of an abandoned worker core dropped")
		}
	}
}

// progressStore marks the time a call waits for the store in its slot of
// the progress record: that time is the store's, not the tenant's.
type progressStore struct {
	Store
	p *Progress
}

// wait marks the store wait of the call of ctx from now and returns its
// slot (-1: not a call's) for done.
func (s progressStore) wait(ctx context.Context) int {
	slot, ok := ctx.Value(slotKey{}).(int)
	if !ok {
		return -1
	}
	s.p.storeWait(slot, time.Now())
	return slot
}

// done ends the store wait of slot.
func (s progressStore) done(slot int) {
	if slot >= 0 {
		s.p.storeWait(slot, time.Time{})
	}
}

func (s progressStore) Templates(ctx context.Context, id proto.Id) ([]proto.Template, error) {
	defer s.done(s.wait(ctx))
	return s.Store.Templates(ctx, id)
}

func (s progressStore) KvGet(ctx context.Context, id proto.Id, key string) (json.RawMessage, bool, error) {
	defer s.done(s.wait(ctx))
	return s.Store.KvGet(ctx, id, key)
}

func (s progressStore) KvSet(ctx context.Context, id proto.Id, key string, v json.RawMessage) error {
	defer s.done(s.wait(ctx))
	return s.Store.KvSet(ctx, id, key, v)
}

func (s progressStore) KvDelete(ctx context.Context, id proto.Id, key string) error {
	defer s.done(s.wait(ctx))
	return s.Store.KvDelete(ctx, id, key)
}

func (s progressStore) KvFind(ctx context.Context, id proto.Id, prefix string) ([]proto.KVItem, error) {
	defer s.done(s.wait(ctx))
	return s.Store.KvFind(ctx, id, prefix)
}

func (s progressStore) ScheduleEvent(ctx context.Context, id proto.Id, at time.Time, ev proto.Event) (string, error) {
	defer s.done(s.wait(ctx))
	return s.Store.ScheduleEvent(ctx, id, at, ev)
}

func (s progressStore) CancelEvent(ctx context.Context, id proto.Id, eventID string) (bool, error) {
	defer s.done(s.wait(ctx))
	return s.Store.CancelEvent(ctx, id, eventID)
}

func (s progressStore) ScheduledEvents(ctx context.Context, id proto.Id) ([]proto.ScheduledEvent, error) {
	defer s.done(s.wait(ctx))
	return s.Store.ScheduledEvents(ctx, id)
}

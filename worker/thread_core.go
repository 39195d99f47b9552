package worker

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"time"

	"github.com/templateworker/templateworker/proto"
)

// core is one generation of a Thread's worker goroutine: its queue, its
// Manager (and so its VMs) and its progress record. The watchdog replaces
// a wedged core with a fresh one.
type core struct {
	w        *Thread
	queue    chan message
	mgr      *Manager
	progress *Progress

	// exec is held (a token in it) while a message runs, on the core's
	// goroutine or inline on a caller's; pending counts the messages
	// queued or running on the core's goroutine.
	exec    chan struct{}
	pending atomic.Int64

	// abort tells the VMs of an abandoned core to end their call at the
	// next count hook; dead is closed at the same time, failing the calls
	// that wait for this core.
	abort atomic.Bool
	dead  chan struct{}
}

func (w *Thread) newCore(p *Progress) *core {
	c := &core{w: w, queue: make(chan message, w.queueSize), progress: p,
		exec: make(chan struct{}, 1), dead: make(chan struct{})}
	c.mgr = NewManager(w.id, w.total, progressStore{Store: w.store, p: p}, w.limits, w.log)
	c.mgr.stop = &c.abort
	c.mgr.SetCache(w.cache)
	if w.wedge != "" {
		c.mgr.wedge, c.mgr.released = w.wedge, c.dead
	}
	return c
}

// tryLock takes exec if it is free.
func (c *core) tryLock() bool {
	select {
	case c.exec <- struct{}{}:
		return true
	default:
		return false
	}
}

func (c *core) unlock() { <-c.exec }

func (c *core) isDead() bool {
	select {
	case <-c.dead:
		return true
	default:
		return false
	}
}

// loop serves core c's queue until Kill, or until c is abandoned.
func (w *Thread) loop(c *core) {
	var msg message
	defer func() {
		if r := recover(); r != nil {
			if msg.size > 0 {
				w.held.Release(msg.id, msg.size)
			}
			w.recoverPanic(c, r)
			if msg.reply != nil {
				msg.reply <- result{err: &proto.Error{Code: proto.CodeInternal, Message: "the worker failed running this call; its VMs were discarded"}}
			}
		}
	}()
	for {
		msg = message{}
		select {
		case msg = <-c.queue:
		case <-c.dead:
			return
		}
		select {
		case c.exec <- struct{}{}:
		case <-c.dead:
			// Abandoned while a call ran inline on a caller's goroutine.
			w.moveOrFail(msg)
			return
		}
		if msg.kind == msgKill {
			c.mgr.DropAll() // ends the VMs' suspended coroutines
			c.mgr.tenants = nil
			w.doneOnce.Do(func() { close(w.done) })
			msg.reply <- result{}
			return // exec stays held: nothing runs inline any more
		}
		r := c.run(msg)
		if msg.size > 0 {
			w.held.Release(msg.id, msg.size)
		}
		if msg.reply != nil {
			msg.reply <- r
		}
		c.pending.Add(-1)
		if c.abort.Load() {
			// Abandoned while running msg: the successor owns the worker.
			c.unlock()
			w.log.Warn().Msg("an abandoned worker goroutine came back from its call and stops")
			return
		}
		w.loaded.Store(int64(c.mgr.Loaded()))
		c.unlock()
	}
}

// run executes msg with exec held, recording it in the progress record.
func (c *core) run(msg message) result {
	ctx := msg.ctx
	if err := ctx.Err(); err != nil {
		// The caller gave up while the message was queued.
		return result{err: proto.Errorf(proto.CodeTimeout, "call expired in the worker queue: %v", err)}
	}
	var r result
	switch msg.kind {
	case msgDispatch:
		c.progress.begin(msg.id, time.Now())
		r.value, r.err = c.mgr.Dispatch(ctx, msg.id, msg.event)
		c.progress.end()
		if msg.reply == nil && r.err != nil {
			w := c.w
			w.log.Warn().Str("tenant", msg.id.String()).Str("event", msg.event.Name).Err(r.err).Msg("nowait dispatch failed")
			if w.onNowait != nil && !c.abort.Load() {
				w.onNowait(msg.id, r.err)
			}
		}
	case msgRunScript:
		c.progress.begin(msg.id, time.Now())
		r.value, r.err = c.mgr.RunScript(ctx, msg.id, msg.name, msg.code, msg.event)
		c.progress.end()
	case msgDrop:
		c.mgr.Drop(msg.id)
	case msgDropAll:
		c.mgr.DropAll()
	case msgSweep:
		if n := c.mgr.Sweep(); n > 0 {
			c.w.log.Debug().Int("evicted", n).Msg("evicted idle tenants")
		}
		c.w.checkMemory(c.mgr)
	}
	if c.abort.Load() {
		r = result{err: unavailable(c.w.id)}
	}
	return r
}

// watch is the thread topology's watchdog: it abandons the current core
// when its call has run longer than the watchdog allows.
func (w *Thread) watch() {
	period := max(min(w.watchdog/10, 250*time.Millisecond), 10*time.Millisecond)
	tick := time.NewTicker(period)
	defer tick.Stop()
	pw := ProgressWatch{Period: period}
	var watched *core
	for {
		select {
		case <-w.done:
			return
		case <-tick.C:
			c := w.cur.Load()
			if c != watched {
				watched, pw = c, ProgressWatch{Period: period}
			}
			s := c.progress.Snapshot()
			if ran := pw.Observe(s, time.Now()); ran > w.watchdog {
				w.abandon(c, s, "watchdog: its call ran "+ran.Round(time.Millisecond).String()+
					" (limit "+w.watchdog.String()+")")
			}
		}
	}
}

// abandon replaces core c, whose call of s.Tenant failed as why says,
// with a fresh core: c's callers and queued calls fail with worker_unavailable
// (nowait events move to the fresh core), and c's VMs end
// their call if they ever reach the count hook.
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
	go w.loop(fresh)
	w.mu.Unlock()
	w.log.Error().Str("tenant", s.Tenant.String()).Str("why", why).
		Msg("watchdog: abandoning the worker goroutine and its VMs; a fresh one takes over")
	// The strike is recorded before the calls fail, so that what a caller
	// does next already sees it.
	if w.onCut != nil && s.Running {
		w.onCut(s.Tenant, why)
	}
	close(c.dead)
	for {
		select {
		case msg := <-c.queue:
			w.moveOrFail(msg)
		default:
			return
		}
	}
}

// moveOrFail handles a message left on an abandoned core: a waited call
// fails (its caller has been told already), a nowait event or a Kill
// moves to the current core, a drop needs nothing (the fresh core starts
// empty).
func (w *Thread) moveOrFail(msg message) {
	switch {
	case msg.kind == msgKill:
		// Kill waits for the core's death too and asks the successor.
	case msg.reply != nil:
		msg.reply <- result{err: unavailable(w.id)}
	case msg.kind == msgDispatch:
		if msg.size > 0 {
			w.held.Release(msg.id, msg.size) // enqueue holds it again
		}
		if err := w.enqueue(w.cur.Load(), msg); err != nil {
			w.log.Warn().Str("tenant", msg.id.String()).Err(err).Msg("nowait event of an abandoned worker goroutine dropped")
		}
	}
}

// progressStore marks the time a call waits for the store in the progress
// record: that time is the store's, not the tenant's.
type progressStore struct {
	Store
	p *Progress
}

func (s progressStore) Templates(ctx context.Context, id proto.Id) ([]proto.Template, error) {
	s.p.storeWait(time.Now())
	defer s.p.storeWait(time.Time{})
	return s.Store.Templates(ctx, id)
}

func (s progressStore) KvGet(ctx context.Context, id proto.Id, key string) (json.RawMessage, bool, error) {
	s.p.storeWait(time.Now())
	defer s.p.storeWait(time.Time{})
	return s.Store.KvGet(ctx, id, key)
}

func (s progressStore) KvSet(ctx context.Context, id proto.Id, key string, v json.RawMessage) error {
	s.p.storeWait(time.Now())
	defer s.p.storeWait(time.Time{})
	return s.Store.KvSet(ctx, id, key, v)
}

func (s progressStore) KvDelete(ctx context.Context, id proto.Id, key string) error {
	s.p.storeWait(time.Now())
	defer s.p.storeWait(time.Time{})
	return s.Store.KvDelete(ctx, id, key)
}

func (s progressStore) KvFind(ctx context.Context, id proto.Id, prefix string) ([]proto.KVItem, error) {
	s.p.storeWait(time.Now())
	defer s.p.storeWait(time.Time{})
	return s.Store.KvFind(ctx, id, prefix)
}

func (s progressStore) ScheduleEvent(ctx context.Context, id proto.Id, at time.Time, ev proto.Event) (string, error) {
	s.p.storeWait(time.Now())
	defer s.p.storeWait(time.Time{})
	return s.Store.ScheduleEvent(ctx, id, at, ev)
}

func (s progressStore) CancelEvent(ctx context.Context, id proto.Id, eventID string) (bool, error) {
	s.p.storeWait(time.Now())
	defer s.p.storeWait(time.Time{})
	return s.Store.CancelEvent(ctx, id, eventID)
}

func (s progressStore) ScheduledEvents(ctx context.Context, id proto.Id) ([]proto.ScheduledEvent, error) {
	s.p.storeWait(time.Now())
	defer s.p.storeWait(time.Time{})
	return s.Store.ScheduledEvents(ctx, id)
}

package master

import (
	"context"
	"sort"
	"strconv"
	"time"

	"github.com/templateworker/templateworker/mesophyll"
	"github.com/templateworker/templateworker/proto"
)

// successor is a planned replacement being started on the other slot.
type successor struct {
	slot int
	pid  int                  // 0 until started
	c    *mesophyll.Conn      // its connection once it connected
	conn chan *mesophyll.Conn // receives c
}

// oldSpawn is a replaced spawn while it drains. A tenant's events run one
// at a time, in order, across the switch: a tenant with waited calls in
// flight on the old process (procWorker.callsOn) gets its next call on the new one
// only when they have finished (changed is closed whenever one does); a
// nowait event of a tenant whose earlier events the old process has not
// acknowledged is held back (held) and sent to the new process, after
// the old one's unacknowledged events, when the old process has exited.
type oldSpawn struct {
	sp       *spawn
	conn     *mesophyll.Conn
	lastSent uint64 // nowait events up to this seq were sent to it
	shut     bool   // it was sent Shutdown (or killed by the drain)
	changed  chan struct{}
	held     map[uint64]bool
}

// pendingLocked reports whether tenant id has work the old process has
// not finished: a waited call, a nowait event unacknowledged or held back.
func (o *oldSpawn) pendingLocked(w *procWorker, id proto.Id) bool {
	if w.callsOn[o.conn][id] > 0 {
		return true
	}
	for s, e := range w.nowait {
		if e.id == id && (s <= o.lastSent || o.held[s]) {
			return true
		}
	}
	return false
}

// callEndedLocked wakes the calls waiting for the end of a call on the
// old process.
func (o *oldSpawn) callEndedLocked() {
	close(o.changed)
	o.changed = make(chan struct{})
}

// swapReq asks the loop watching old to make the ready next current.
type swapReq struct {
	old      *spawn
	oldConn  *mesophyll.Conn
	next     *spawn
	conn     *mesophyll.Conn
	reason   string
	lastSent uint64    // set by handOver
	done     chan bool // whether the hand-over happened
}

// swap replaces the current spawn with a new process for reason
// (ReasonMemory, ReasonRecycle, ReasonRolling) without failing a call: the new process is
// started on the other Mesophyll slot and, once it is connected (ready),
// new calls and nowait events go to it; then the old process drains (its
// waited calls in flight finish on it, the nowait events sent to it are
// acknowledged), gets Shutdown and exits. Its unacknowledged events go to
// the new process. It returns once the old process has exited (or an
// error, the old process still serving, when the new one could not be
// made ready). A planned replacement counts as a restart of reason, never
// as a failure.
func (w *procWorker) swap(ctx context.Context, reason string) error {
	w.restartMu.Lock()
	defer w.restartMu.Unlock()
	w.mu.Lock()
	old, oldConn := w.cur, w.conn
	if old == nil || oldConn == nil || w.live != oldConn || w.stopping {
		w.mu.Unlock()
		return proto.Errorf(proto.CodeWorkerUnavailable, "worker %d is not ready", w.id)
	}
	nx := &successor{slot: otherSlot(old.slot, w.total), conn: make(chan *mesophyll.Conn, 1)}
	w.next = nx
	w.mu.Unlock()
	fail := func(sp *spawn, why string) error {
		w.mu.Lock()
		if w.next == nx {
			w.next = nil
		}
		w.mu.Unlock()
		if sp != nil {
			killGroup(sp.pid)
			<-sp.exited
			sp.progress.Close()
		}
		return proto.Errorf(proto.CodeWorkerUnavailable, "planned replacement of worker %d: %s", w.id, why)
	}
	w.log.Info().Str("reason", reason).Int("old_pid", old.pid).Msg("planned replacement: starting the new process")
	sp, why := w.startSpawn(nx.slot, false)
	if sp == nil {
		return fail(nil, "start the new process: "+why)
	}
	w.mu.Lock()
	nx.pid = sp.pid
	w.mu.Unlock()
	timer := time.NewTimer(w.cfg.ReadyTimeout)
	defer timer.Stop()
	var c *mesophyll.Conn
	select {
	case c = <-nx.conn:
	case <-sp.exited:
		return fail(sp, "the new process exited before it was ready ("+sp.status+")")
	case <-timer.C:
		return fail(sp, "the new process did not connect within "+w.cfg.ReadyTimeout.String())
	case <-ctx.Done():
		return fail(sp, "cut short before the new process was ready")
	case <-old.exited:
		return fail(sp, "the old process exited before the new one was ready")
	case <-w.stopCh:
		return fail(sp, "the worker is stopping")
	}
	req := &swapReq{old: old, oldConn: oldConn, next: sp, conn: c, reason: reason, done: make(chan bool, 1)}
	select {
	case w.swapCh <- req:
	case <-old.exited:
		return fail(sp, "the old process exited before the new one was ready")
	case <-w.stopCh:
		return fail(sp, "the worker is stopping")
	}
	if !<-req.done {
		return fail(sp, "the old process or the new one's connection is gone")
	}
	sp.log.Info().Str("reason", reason).Int("old_pid", old.pid).Dur("start_to_ready", time.Since(sp.started)).
		Msg("planned replacement: the new process is ready and serving; draining the old one")
	w.drainOld(old, oldConn, req.lastSent)
	return nil
}

// handOver makes req.next, connected on req.conn, the current spawn
// unless req.old stopped being it; it runs on the loop that watched
// req.old, which watches req.next from now on.
func (w *procWorker) handOver(req *swapReq) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cur != req.old || w.conn != req.oldConn || w.live != req.oldConn || w.stopping {
		return false
	}
	select {
	case <-req.conn.Done(): // the successor's connection ended meanwhile
		return false
	default:
	}
	req.lastSent = w.seq
	w.old = &oldSpawn{sp: req.old, conn: req.oldConn, lastSent: w.seq,
		changed: make(chan struct{}), held: make(map[uint64]bool)}
	w.next = nil
	w.adoptLocked(req.next)
	w.conn, w.live = req.conn, req.conn
	w.readyAt = time.Now()
	w.state = StateReady
	w.restarts++
	w.reasons[req.reason]++
	w.lastReason = req.reason
	w.failures = 0
	w.lastExit = "replaced (" + req.reason + ")"
	w.cache, w.heapBytes, w.rssBytes = nil, 0, 0
	w.hung, w.cut, w.stalled, w.lostCalls = false, nil, false, false
	return true
}

// drainOld lets the replaced spawn o finish its work on c, then shuts it
// down and waits for it to exit: its waited calls in flight and the nowait
// events sent to it (up to lastSent) get their answers, bounded by the
// watchdog's limit; a call of it that overruns that limit is blamed on its
// tenant and the process killed, as the watchdog does. Its exit is never a
// failure of the worker; a crash with a call running blames that call's
// tenant (from o's own progress record). Events it did not acknowledge are
// sent to the current spawn.
func (w *procWorker) drainOld(o *spawn, c *mesophyll.Conn, lastSent uint64) {
	bound := w.cfg.Watchdog
	if bound <= 0 {
		bound = time.Minute
	}
	since := time.Now()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	drainBy := time.NewTimer(bound)
	defer drainBy.Stop()
	dog := newWatchdog(w.cfg.Watchdog)
	defer dog.stop()
	var stopBy <-chan time.Time
	timedOut, shut, cut, killed := false, false, false, false
	stopCh := w.stopCh
	for {
		if !shut {
			w.mu.Lock()
			drained := len(w.callsOn[c]) == 0 && !w.unackedUpToLocked(lastSent)
			if drained || timedOut {
				shut = true
				w.old.shut = true
			}
			w.mu.Unlock()
			if shut {
				if timedOut {
					o.log.Warn().Dur("bound", bound).Msg("planned replacement: the old process did not drain in time; shutting it down anyway (unacknowledged nowait events go to the new process)")
				}
				o.log.Info().Msg("planned replacement: shutting down the old process")
				sctx, cancel := context.WithTimeout(context.Background(), bound)
				_ = c.Shutdown(sctx)
				cancel()
				t := time.NewTimer(bound)
				defer t.Stop()
				stopBy = t.C
			}
		}
		select {
		case <-o.exited:
			w.oldExited(o, lastSent, cut || killed, time.Since(since))
			return
		case <-tick.C:
		case <-drainBy.C:
			timedOut = true
		case <-stopCh:
			stopCh = nil
			timedOut = true // the master stops: no more waiting
		case <-stopBy:
			stopBy = nil
			o.log.Warn().Dur("bound", bound).Msg("planned replacement: the old process did not stop in time; killing it")
			killed = true
			killGroup(o.pid)
		case now := <-dog.tick():
			running, s, ran := dog.observe(o.progress, now)
			if running > 0 && ran > dog.limit && !cut {
				cut = true
				o.log.Error().Str("tenant", s.Tenant.String()).Dur("ran", ran.Round(time.Millisecond)).Dur("limit", dog.limit).
					Msg("watchdog: a call overran the time limit and its grace; killing the old worker process")
				if w.crashed != nil {
					w.crashed(s.Tenant, "watchdog: its call ran "+ran.Round(time.Millisecond).String()+" (limit "+dog.limit.String()+"); worker process killed")
				}
				killGroup(o.pid)
			}
		}
	}
}

// oldExited ends the drain of o: blame for a crash while it ran a call
// (unless the drain killed it on purpose), and the nowait events it
// did not acknowledge sent to the current spawn.
func (w *procWorker) oldExited(o *spawn, lastSent uint64, onPurpose bool, drained time.Duration) {
	last := o.progress.Running()
	o.progress.Close()
	ev := o.log.Info()
	if !onPurpose {
		ev = o.log.Warn()
	}
	ev.Str("exit", o.status).Dur("drain", drained).Bool("counts_as_failure", false).Msg("planned replacement: the old process exited")
	if !onPurpose && w.crashed != nil {
		// As for a current spawn: each tenant running a call is a suspect.
		why := "worker process died (" + o.status + ") while running its call"
		if len(last) > 1 {
			why += " (one of " + strconv.Itoa(len(last)) + " calls running)"
		}
		for _, s := range last {
			w.crashed(s.Tenant, why)
		}
	}
	// Its unacknowledged events, then the events held back, in order;
	// events that arrive meanwhile are held back too, until none is left.
	flushed := make(map[uint64]bool)
	for {
		w.mu.Lock()
		c := w.conn
		var seqs []uint64
		for s := range w.nowait {
			if !flushed[s] && (s <= lastSent || w.old.held[s]) {
				seqs = append(seqs, s)
			}
		}
		if len(seqs) == 0 || c == nil {
			// None left, or the current spawn is down: its next
			// connection redelivers every held event.
			w.old = nil
			w.mu.Unlock()
			return
		}
		sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
		pending := make([]nowaitEvent, len(seqs))
		for i, s := range seqs {
			pending[i] = w.nowait[s]
			flushed[s] = true
		}
		w.mu.Unlock()
		w.log.Info().Int("events", len(seqs)).Msg("planned replacement: sending the old process's unacknowledged (and held back) nowait events to the new one")
		for i, s := range seqs {
			if err := c.DispatchEventNoWait(pending[i].id, pending[i].ev, s); err != nil {
				break // the connection died; the next spawn redelivers
			}
		}
	}
}

// waitingLocked reports whether work waits for the current spawn: waited
// calls in flight on its connection, or nowait events sent to it (not
// those a draining old process still has).
func (w *procWorker) waitingLocked() bool {
	if w.live != nil && len(w.callsOn[w.live]) > 0 {
		return true
	}
	if w.conn == nil {
		return false
	}
	if w.old == nil {
		return len(w.nowait) > 0
	}
	for s := range w.nowait {
		if s > w.old.lastSent && !w.old.held[s] {
			return true
		}
	}
	return false
}

// waitAlone waits until the process on Mesophyll slot is w's only one: a
// planned successor, until it was handed the worker and the process it
// replaces has drained and exited (drainOld); any other process at once.
// Its OnStartup waits for it (storeBackend.TenantsFor), so that a tenant's
// OnStartup on the new process never runs beside that tenant's call still
// running on the old one. It gives up after bound, or when w stops.
func (w *procWorker) waitAlone(ctx context.Context, slot int, bound time.Duration) error {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.NewTimer(bound)
	defer deadline.Stop()
	for {
		w.mu.Lock()
		successor := w.next != nil && w.next.slot == slot
		draining := w.old != nil && w.cur != nil && w.cur.slot == slot
		w.mu.Unlock()
		if !successor && !draining {
			return nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		case <-w.stopCh:
			return proto.Errorf(proto.CodeWorkerUnavailable, "worker %d is stopping", w.id)
		case <-deadline.C:
			return proto.Errorf(proto.CodeWorkerUnavailable, "worker %d: the process it replaces did not finish within %v", w.id, bound)
		}
	}
}

package master

import (
	"context"
	"errors"
	"sort"
	"time"

	"github.com/templateworker/templateworker/mesophyll"
	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/worker"
)

// onConnect is called by the Mesophyll server when this worker's process
// has authenticated: the worker is ready and held nowait events are
// redelivered in order.
func (w *procWorker) onConnect(c *mesophyll.Conn) {
	w.mu.Lock()
	if n := w.next; n != nil && c.WorkerID() == n.slot && n.c == nil && !w.stopping {
		// A planned successor: it serves once swap hands over to it.
		n.c = c
		w.mu.Unlock()
		n.conn <- c
		return
	}
	if w.proc == nil || w.stopping || !w.readyAt.IsZero() || c.WorkerID() != w.slot {
		// Not spawned, stopping, or a second connection of one spawn.
		w.mu.Unlock()
		c.Close("worker is not expected to connect now")
		return
	}
	w.conn, w.live = c, c
	w.state = StateReady
	w.readyAt = time.Now()
	select {
	case <-w.readyCh:
	default:
		close(w.readyCh)
	}
	seqs := make([]uint64, 0, len(w.nowait))
	for s := range w.nowait {
		seqs = append(seqs, s)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	pending := make([]nowaitEvent, len(seqs))
	for i, s := range seqs {
		pending[i] = w.nowait[s]
	}
	w.mu.Unlock()
	if len(seqs) > 0 {
		w.log.Info().Int("events", len(seqs)).Msg("redelivering unacknowledged nowait events")
	}
	for i, s := range seqs {
		if err := c.DispatchEventNoWait(pending[i].id, pending[i].ev, s); err != nil {
			return // the connection died; the next spawn redelivers
		}
	}
}

// onDisconnect is called when the worker's connection ends. A process
// that is still alive without its connection is killed, so it restarts
// clean.
func (w *procWorker) onDisconnect(c *mesophyll.Conn, err error) {
	w.mu.Lock()
	if o := w.old; o != nil && c == o.conn {
		// The draining old process: it is killed unless it leaves after
		// its Shutdown; the current spawn is not concerned.
		pid, shut := o.sp.pid, o.shut
		w.mu.Unlock()
		if !shut {
			o.sp.log.Warn().Err(err).Msg("old worker's connection lost while draining; killing the process")
			killGroup(pid)
		}
		return
	}
	if n := w.next; n != nil && c == n.c {
		pid := n.pid
		w.mu.Unlock()
		w.log.Warn().Err(err).Int("pid", pid).Msg("successor's connection lost before it served; killing it")
		killGroup(pid)
		return
	}
	if c != w.live {
		// The end of an earlier spawn's connection, reported after its
		// replacement started: nothing to do with the current process.
		w.mu.Unlock()
		return
	}
	pid := w.pid
	w.conn, w.live = nil, nil
	stopping := w.stopping || w.planned
	if w.state == StateReady {
		w.state = StateStarting
	}
	// Calls from now on wait for the next spawn (not for this one, whose
	// ready channel is closed).
	w.resetReadyLocked()
	w.mu.Unlock()
	if !stopping {
		w.log.Warn().Err(err).Msg("worker connection lost; killing the process")
		killGroup(pid)
	}
}

// onHung is called when the connection on Mesophyll slot slot missed its
// heartbeats: the process on that slot is killed, and only the current
// spawn's death is a hung restart.
func (w *procWorker) onHung(slot int) {
	w.mu.Lock()
	if o := w.old; o != nil && slot == o.sp.slot {
		pid := o.sp.pid
		w.mu.Unlock()
		o.sp.log.Error().Msg("draining old worker missed 3 heartbeats: killing it")
		killGroup(pid)
		return
	}
	if n := w.next; n != nil && slot == n.slot {
		pid := n.pid
		w.mu.Unlock()
		w.log.Error().Int("pid", pid).Msg("successor missed 3 heartbeats: killing it")
		killGroup(pid)
		return
	}
	if slot != w.slot {
		w.mu.Unlock()
		return
	}
	w.hung = true
	pid := w.pid
	w.mu.Unlock()
	w.log.Error().Int("pid", pid).Msg("worker missed 3 heartbeats: killing it")
	killGroup(pid)
}

func (w *procWorker) onAck(ack proto.Ack) {
	w.mu.Lock()
	if w.ackWindowLocked(ack) {
		w.mu.Unlock()
		return
	}
	e, ok := w.forgetNowaitLocked(ack.Seq)
	w.mu.Unlock()
	if ok && fatalCode(ack.Code) && w.failed != nil {
		w.failed(e.id, ack.Code)
	}
}

// onHeartbeat takes the figures of the current spawn's heartbeats (those
// of a successor or of a draining old process say nothing about it).
func (w *procWorker) onHeartbeat(slot int, hb proto.Heartbeat) {
	w.mu.Lock()
	if slot != w.slot || w.cur == nil {
		w.mu.Unlock()
		return
	}
	w.tenants = hb.Tenants
	w.cache, w.heapBytes, w.rssBytes = hb.Cache, hb.HeapBytes, hb.RSSBytes
	w.mu.Unlock()
	w.checkRSS(hb.RSSBytes)
}

// ready waits until the worker is connected, for at most DispatchTimeout
// (and ctx).
func (w *procWorker) ready(ctx context.Context) (*mesophyll.Conn, error) {
	w.mu.Lock()
	c, ch, stopping := w.conn, w.readyCh, w.stopping
	w.mu.Unlock()
	if stopping {
		return nil, proto.Errorf(proto.CodeShuttingDown, "worker %d is stopping", w.id)
	}
	if c != nil {
		return c, nil
	}
	t := time.NewTimer(w.cfg.DispatchTimeout)
	defer t.Stop()
	select {
	case <-ch:
		w.mu.Lock()
		c = w.conn
		w.mu.Unlock()
		if c != nil {
			return c, nil
		}
	case <-t.C:
	case <-ctx.Done():
	case <-w.stopCh:
	}
	return nil, &proto.Error{Code: proto.CodeWorkerUnavailable, RetryAfter: 1,
		Message: "worker " + itoa(w.id) + " is restarting; try again"}
}

// unavailable makes sure a failure of a dead connection reads as 503.
func (w *procWorker) unavailable(err error) error {
	if err == nil {
		return nil
	}
	var pe *proto.Error
	if errors.As(err, &pe) && pe.Code == proto.CodeWorkerUnavailable && pe.RetryAfter == 0 {
		cp := *pe
		cp.RetryAfter = 1
		return &cp
	}
	return err
}

// DispatchEvent runs ev on the worker, waiting for it if it is restarting.
func (w *procWorker) DispatchEvent(ctx context.Context, id proto.Id, ev proto.Event) (proto.Value, error) {
	c, err := w.ready(ctx)
	if err != nil {
		return nil, err
	}
	if c, err = w.track(ctx, id, c); err != nil {
		return nil, err
	}
	w.countDispatch()
	v, err := c.DispatchEvent(ctx, id, ev)
	w.untrack(id, c, err)
	return v, w.unavailable(err)
}

// DispatchEventNoWait keeps ev until the worker acknowledges it, sending it
// now if the worker is connected and again after a restart if needed.
func (w *procWorker) DispatchEventNoWait(id proto.Id, ev proto.Event) error {
	if err := ev.Validate(); err != nil {
		return proto.Errorf(proto.CodeBadRequest, "%v", err)
	}
	if err := fitsFrame(ev, w.cfg.MaxFrame); err != nil {
		return err // it could never be sent: refuse it rather than hold it
	}
	w.mu.Lock()
	if w.stopping {
		w.mu.Unlock()
		return proto.Errorf(proto.CodeShuttingDown, "worker %d is stopping", w.id)
	}
	if len(w.nowait) >= w.cfg.QueueSize {
		w.mu.Unlock()
		return &proto.Error{Code: proto.CodeWorkerOverloaded, RetryAfter: 1,
			Message: "worker " + itoa(w.id) + " has " + itoa(w.cfg.QueueSize) + " unacknowledged events queued"}
	}
	size := worker.EventSize(ev)
	if err := w.held.Hold(w.id, id, size, w.cfg.QueueBytes, w.cfg.QueueSize); err != nil {
		w.mu.Unlock()
		return err
	}
	w.seq++
	seq := w.seq
	w.nowait[seq] = nowaitEvent{id: id, ev: ev, size: size}
	c := w.conn
	if o := w.old; o != nil && o.pendingLocked(w, id) {
		// The old process of a planned replacement still has this
		// tenant's earlier work: the event follows it (oldExited).
		o.held[seq] = true
		c = nil
	}
	w.mu.Unlock()
	if c != nil {
		_ = c.DispatchEventNoWait(id, ev, seq) // on failure it is redelivered after the restart
	}
	w.countDispatch()
	return nil
}

// forgetNowaitLocked removes the held nowait event seq and returns it.
func (w *procWorker) forgetNowaitLocked(seq uint64) (nowaitEvent, bool) {
	e, ok := w.nowait[seq]
	if ok {
		delete(w.nowait, seq)
		w.held.Release(e.id, e.size)
	}
	return e, ok
}

// RunScript runs code on the worker.
func (w *procWorker) RunScript(ctx context.Context, id proto.Id, name, code string, ev proto.Event) (proto.Value, error) {
	c, err := w.ready(ctx)
	if err != nil {
		return nil, err
	}
	if c, err = w.track(ctx, id, c); err != nil {
		return nil, err
	}
	w.countDispatch()
	v, err := c.RunScript(ctx, id, name, code, ev)
	w.untrack(id, c, err)
	return v, w.unavailable(err)
}

// DropTenant discards the tenant's VM. A worker that is not connected has
// no VM to drop: its next process starts empty.
func (w *procWorker) DropTenant(ctx context.Context, id proto.Id) error {
	w.mu.Lock()
	c := w.conn
	w.mu.Unlock()
	if c == nil {
		return nil
	}
	return w.unavailable(c.DropTenant(ctx, id))
}

// DropAll discards every tenant's VM in the worker. A worker that is not
// connected has none.
func (w *procWorker) DropAll(ctx context.Context) error {
	w.mu.Lock()
	c := w.conn
	w.mu.Unlock()
	if c == nil {
		return nil
	}
	return w.unavailable(c.DropAll(ctx))
}

// Kill stops supervising and ends the worker: Shutdown first, SIGKILL of
// its process group when ctx expires.
func (w *procWorker) Kill(ctx context.Context) error {
	w.mu.Lock()
	if !w.stopping {
		w.stopping = true
		close(w.stopCh)
	}
	c, pid := w.conn, w.pid
	w.mu.Unlock()
	if c != nil {
		_ = c.Shutdown(ctx)
	} else {
		killGroup(pid)
	}
	select {
	case <-w.doneCh:
	case <-ctx.Done():
		killGroup(pid)
		<-w.doneCh
	}
	// A planned replacement under way ends too: its successor is killed,
	// its old process shut down (killed when ctx expires).
	bg := make(chan struct{})
	go func() { w.bg.Wait(); close(bg) }()
	select {
	case <-bg:
	case <-ctx.Done():
		w.mu.Lock()
		var pids []int
		if w.old != nil {
			pids = append(pids, w.old.sp.pid)
		}
		if w.next != nil {
			pids = append(pids, w.next.pid)
		}
		w.mu.Unlock()
		for _, p := range pids {
			killGroup(p)
		}
		<-bg
	}
	return nil
}

// Status describes the worker for /v1/workers.
func (w *procWorker) Status() WorkerStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := WorkerStatus{
		ID: w.id, PID: w.pid, State: w.state, Tenants: w.tenants,
		Restarts: w.restarts, ConsecutiveFailures: w.failures, LastExit: w.lastExit,
		LastRestartReason: w.lastReason,
		Queued:            len(w.nowait) + len(w.pipe), QueuedBytes: w.held.Bytes() + w.pipeBytes,
		Cache: w.cache, HeapBytes: w.heapBytes, RSSBytes: w.rssBytes,
	}
	if w.pid != 0 {
		s.UptimeSeconds = time.Since(w.started).Seconds()
	}
	for _, n := range w.inflight {
		s.InFlight += n
	}
	if w.progress != nil {
		s.Running = runningCall(w.progress.Snapshot())
		s.RunningCalls = runningCalls(w.progress.Running())
	}
	s.restartReasons = make(map[string]int, len(w.reasons))
	for r, n := range w.reasons {
		s.restartReasons[r] = n
	}
	return s
}

// Restart replaces the worker process in place, drain first, without
// failing a call (the pool's rolling restart uses swap instead, which
// starts the new process first): new calls wait while it drains (in-flight calls finish, sent nowait events are
// acknowledged), then it is shut down and replaced, and Restart returns
// once the new process is ready. The drain and the shutdown are bounded
// by the watchdog's limit each (no call may legitimately run longer): a
// worker that does not drain or stop in time — a wedged one — is killed.
func (w *procWorker) Restart(ctx context.Context) error {
	return w.restart(ctx, ReasonRolling)
}

// restart is Restart for reason (ReasonRolling, ReasonMemory,
// ReasonRecycle), counted under that reason.
func (w *procWorker) restart(ctx context.Context, reason string) error {
	w.restartMu.Lock()
	defer w.restartMu.Unlock()
	w.mu.Lock()
	c := w.conn
	if c == nil || w.stopping {
		w.mu.Unlock()
		return proto.Errorf(proto.CodeWorkerUnavailable, "worker %d is not ready", w.id)
	}
	// Hide the connection: new calls wait for the next spawn, new nowait
	// events are held for it.
	w.conn = nil
	w.state = StateDraining
	w.resetReadyLocked()
	ready := w.readyCh
	lastSent := w.seq // events after this are held for the next process
	w.mu.Unlock()
	w.log.Info().Str("reason", reason).Msg("planned restart: draining")

	bound := w.cfg.Watchdog
	if bound <= 0 {
		bound = time.Minute
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	drainBy := time.NewTimer(bound)
	defer drainBy.Stop()
	replaced := false // the spawn died meanwhile (the watchdog, a crash)
	for drained := false; !drained && !replaced; {
		w.mu.Lock()
		drained = len(w.inflight) == 0 && !w.unackedUpToLocked(lastSent)
		replaced = w.live != c
		w.mu.Unlock()
		if drained || replaced {
			break
		}
		select {
		case <-tick.C:
		case <-drainBy.C:
			w.log.Warn().Dur("bound", bound).Msg("rolling restart: drain timed out; stopping the worker anyway (unacknowledged nowait events will be redelivered)")
			drained = true
		case <-ctx.Done():
			w.log.Warn().Msg("rolling restart: drain cut short; unacknowledged nowait events will be redelivered")
			drained = true
		}
	}
	w.mu.Lock()
	pid := w.pid
	replaced = replaced || w.live != c
	if !replaced {
		w.planned, w.plannedReason = true, reason
	}
	w.mu.Unlock()
	if !replaced {
		sctx, cancel := context.WithTimeout(ctx, bound)
		_ = c.Shutdown(sctx)
		cancel()
		stopBy := time.NewTimer(bound)
		defer stopBy.Stop()
	wait:
		for {
			w.mu.Lock()
			gone := w.live != c || w.pid != pid
			w.mu.Unlock()
			if gone {
				break
			}
			select {
			case <-tick.C:
			case <-ready:
				break wait
			case <-stopBy.C:
				w.log.Warn().Int("pid", pid).Dur("bound", bound).Msg("rolling restart: worker did not stop in time; killing it")
				killGroup(pid)
				break wait
			case <-ctx.Done():
				// The caller stops waiting, but a call still in flight on
				// the old process may finish: it is killed only if it has
				// not stopped within the bound (a wedged one).
				time.AfterFunc(bound, func() {
					w.mu.Lock()
					still := w.live == c && w.pid == pid
					w.mu.Unlock()
					if still {
						w.log.Warn().Int("pid", pid).Dur("bound", bound).Msg("rolling restart: worker did not stop in time; killing it")
						killGroup(pid)
					}
				})
				break wait
			}
		}
	}
	select {
	case <-ready:
		w.log.Info().Msg("rolling restart: replaced")
		return nil
	case <-ctx.Done():
		return proto.Errorf(proto.CodeTimeout, "worker %d was not ready again in time", w.id)
	case <-w.stopCh:
		return proto.Errorf(proto.CodeShuttingDown, "worker %d is stopping", w.id)
	}
}

// unackedUpToLocked reports whether a nowait event with seq ≤ last is still
// unacknowledged.
func (w *procWorker) unackedUpToLocked(last uint64) bool {
	for s := range w.nowait {
		if s <= last {
			return true
		}
	}
	return false
}

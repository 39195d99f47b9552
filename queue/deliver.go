package queue

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/store"
)

// pageSize is how many due events of a tenant one serve loads and
// delivers before the tenant goes to the back of the ready list.
const pageSize = 64

// windowSize is how many due events of a tenant one pipelined delivery
// (Config.DispatchWindow) sends at most.
const windowSize = 16

// waitRetry is how long a tenant waits after a failure that is not the
// event's fault (the worker restarting or overloaded, the store away).
const waitRetry = 200 * time.Millisecond

// Outcome is what a delivery's result means for its event.
type Outcome int

// Outcomes of a delivery (see Classify).
const (
	// Delivered: the worker ran the event (its template may have raised
	// an error of its own); it is deleted.
	Delivered Outcome = iota
	// Failed: the run ended with a fatal limit or took its worker down;
	// the attempt counts, and the event is retried after a backoff or
	// dead-lettered.
	Failed
	// Wait: the event did not run through no fault of its own (worker
	// restarting or overloaded, tenant quarantined, store unavailable,
	// shutting down); it is tried again later, the attempt not counted.
	Wait
)

// Classify maps a delivery's error to its outcome: nil and the errors a
// template raises itself (script_error, kv_quota_exceeded,
// result_too_large, ...) are Delivered — running it again would raise them
// again; fatal limits, worker deaths and internal errors are Failed; an
// event that could not reach a worker must Wait.
func Classify(err error) Outcome {
	if err == nil {
		return Delivered
	}
	if errors.Is(err, context.Canceled) {
		return Wait
	}
	switch proto.CodeOf(err) {
	case proto.CodeCPULimit, proto.CodeTimeout, proto.CodeMemoryLimit, proto.CodeStackOverflow,
		proto.CodeWorkerUnavailable, proto.CodeInternal:
		return Failed
	case proto.CodeTenantQuarantined, proto.CodeWorkerOverloaded, proto.CodeBacklogFull,
		proto.CodeStoreUnavailable, proto.CodeShuttingDown, proto.CodeShardUnavailable, proto.CodeNotRun:
		return Wait
	}
	return Delivered
}

// deliverer serves tenants from the ready list until the queue stops.
func (q *Queue) deliverer() {
	defer q.wg.Done()
	for {
		q.mu.Lock()
		for len(q.ready) == 0 && !q.closed.Load() {
			q.cond.Wait()
		}
		if q.closed.Load() {
			q.mu.Unlock()
			return
		}
		id := q.ready[0]
		q.ready[0] = proto.Id{}
		q.ready = q.ready[1:]
		t := q.tenants[id]
		if t == nil {
			q.mu.Unlock()
			continue
		}
		t.queued, t.running, t.again = false, true, false
		q.mu.Unlock()

		q.serve(id, t)

		q.mu.Lock()
		t.running = false
		if t.again && t.count > 0 {
			q.readyLocked(id, t)
		}
		q.dropIfIdleLocked(id, t)
		q.mu.Unlock()
	}
}

// serve delivers up to a page of id's due events in order, stopping at the
// first that must wait, and arranges the tenant's next serve.
func (q *Queue) serve(id proto.Id, t *tenantState) {
	now := time.Now()
	q.mu.Lock()
	wantNext, gen := t.delayed, t.delayedGen
	var (
		recs      []store.EventRecord
		next      time.Time
		fromCache = t.complete
		pending   = t.lastDone
	)
	if fromCache {
		n := min(len(t.buf), pageSize)
		recs = append(recs, t.buf[:n]...)
		for _, r := range recs {
			q.cached -= eventBytes(r.Event)
		}
		t.buf = t.buf[n:]
		if len(t.buf) == 0 {
			t.buf = nil
		}
	}
	q.mu.Unlock()
	if !fromCache {
		if pending != nil {
			// The store must not show what was delivered: have the
			// deferred deletions committed, and wait for them.
			select {
			case <-pending.reply:
			default:
				_, _ = q.submit(context.Background(), &write{})
				<-pending.reply
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
		var err error
		recs, next, err = q.cfg.Store.DueEvents(ctx, id, now, pageSize, wantNext)
		cancel()
		if err != nil {
			q.log.Warn().Err(err).Str("tenant", id.String()).Msg("event queue: cannot read the tenant's events; retrying")
			q.later(id, t, time.Second)
			return
		}
	}
	q.mu.Lock()
	if !fromCache && wantNext && len(recs) < pageSize && next.IsZero() && gen == t.delayedGen {
		// None is delayed any more; a delayed Accept from now on sets
		// the flag again and arms its own wake.
		t.delayed = false
	}
	switch {
	case len(recs) > 0:
		t.oldest = recs[0].DeliverAt
	case !next.IsZero():
		t.oldest = next
	}
	q.mu.Unlock()

	finished := false // every event of recs delivered or dead-lettered
	defer func() {
		if fromCache && !finished {
			// Cut short (a failure, a wait, the queue closing): the
			// store has the rest, with their attempts.
			q.mu.Lock()
			q.uncacheLocked(t)
			q.mu.Unlock()
		}
		// The marks of delivered events go when their deletion is
		// committed (writer); the next read of the store waits for it.
		q.mu.Lock()
		if t.cancelling == 0 {
			clear(t.cancelled)
		}
		q.mu.Unlock()
	}()
	var (
		win []store.EventRecord // the window being delivered
		at  []int               // the index in recs of each of win
	)
	for i := 0; i < len(recs); {
		if q.closed.Load() {
			return
		}
		if wait := recs[i].NextAttemptAt.Sub(time.Now()); wait > 0 {
			q.later(id, t, wait)
			return
		}
		if q.cfg.Quarantined != nil {
			if err := q.cfg.Quarantined(id); err != nil {
				q.later(id, t, quarantineWait(err))
				return
			}
		}
		// The window: the next due events, up to windowSize of them
		// when the dispatcher pipelines, else one.
		limit := 1
		if q.cfg.DispatchWindow != nil {
			limit = windowSize
		}
		win, at = win[:0], at[:0]
		now := time.Now()
		q.mu.Lock()
		for ; i < len(recs) && len(win) < limit; i++ {
			r := recs[i]
			if len(win) > 0 && r.NextAttemptAt.After(now) {
				break
			}
			if t.cancelled[r.Seq] {
				continue
			}
			if t.delivering == nil {
				t.delivering = make(map[int64]bool)
			}
			t.delivering[r.Seq] = true
			win, at = append(win, r), append(at, i)
		}
		q.mu.Unlock()
		if len(win) == 0 {
			continue
		}
		errs := q.dispatch(id, win)
		// The deletions of the window's delivered events go to the
		// writer in one write, before anything else of the tenant's.
		var done []int64
		for k, r := range win {
			err := errs[k]
			switch q.classify(err) {
			case Delivered:
				if err != nil {
					q.log.Debug().Str("tenant", id.String()).Int64("event", r.Seq).Str("code", proto.CodeOf(err)).
						Msg("queued event ran with an error of its template")
				}
				done = append(done, r.Seq)
				q.delivered.Add(1)
				q.forget(id, t, recs, r)
				continue
			case Wait:
				q.undeliver(t, win[k:])
				q.deleteDelivered(id, t, done)
				if q.cfg.Quarantined != nil && proto.CodeOf(err) == proto.CodeTenantQuarantined {
					q.later(id, t, quarantineWait(err))
				} else {
					q.later(id, t, waitRetry)
				}
				return
			case Failed:
				q.undeliver(t, win[k+1:])
				q.deleteDelivered(id, t, done)
				done = nil
				if !q.fail(id, t, r, err) {
					return
				}
				// Dead-lettered: the window's later events did not run
				// (not_run); they go again from the next one.
				if k+1 < len(win) {
					i = at[k+1]
				}
			}
			break
		}
		q.deleteDelivered(id, t, done)
	}
	finished = true
	q.mu.Lock()
	more := fromCache && len(t.buf) > 0
	q.mu.Unlock()
	if len(recs) == pageSize || more {
		q.mu.Lock()
		t.again = true
		q.mu.Unlock()
	} else if !next.IsZero() {
		q.mu.Lock()
		q.wakeAtLocked(id, t, next, time.Now())
		q.mu.Unlock()
	}
}

// deleteDelivered hands the deletion of id's delivered events seqs to the
// writer, to commit with its next commit of anything else; the tenant's
// next read of the store waits for it (lastDone).
func (q *Queue) deleteDelivered(id proto.Id, t *tenantState, seqs []int64) {
	if len(seqs) == 0 {
		return
	}
	w := &write{done: seqs, t: t, tenant: id}
	ok := q.submitAsync(w)
	q.mu.Lock()
	if ok {
		t.lastDone = w
	} else {
		for _, seq := range seqs {
			delete(t.delivering, seq)
		}
	}
	q.mu.Unlock()
}

// fail records a failed delivery of r: a retry after a backoff, or, at
// MaxAttempts, the dead-letter table. It reports whether the tenant's next
// event may be delivered now (r was dead-lettered).
func (q *Queue) fail(id proto.Id, t *tenantState, r store.EventRecord, err error) bool {
	pe := proto.AsError(err)
	attempts := r.Attempts + 1
	f := store.EventFailure{Seq: r.Seq, Attempts: attempts, Err: &proto.Error{Code: pe.Code, Message: pe.Message}}
	if attempts >= q.cfg.MaxAttempts {
		_, werr := q.submit(context.Background(), &write{dead: &f})
		if werr != nil {
			q.mu.Lock()
			delete(t.delivering, r.Seq)
			q.mu.Unlock()
			q.later(id, t, time.Second)
			return false
		}
		q.deadLettered.Add(1)
		q.lines.Event(&q.log, zerolog.WarnLevel, id).Str("event", strconv.FormatInt(r.Seq, 10)).Int("attempts", attempts).
			Str("code", pe.Code).Msg("event dead-lettered after its last attempt")
		q.forget(id, t, nil, r)
		q.mu.Lock()
		delete(t.delivering, r.Seq)
		q.mu.Unlock()
		return true
	}
	backoff := q.backoff(attempts)
	f.NextAttemptAt = time.Now().Add(backoff)
	if _, werr := q.submit(context.Background(), &write{failed: &f}); werr != nil {
		q.log.Warn().Err(werr).Str("tenant", id.String()).Msg("event queue: cannot record a failed delivery")
	}
	q.retried.Add(1)
	q.lines.Event(&q.log, zerolog.InfoLevel, id).Str("event", strconv.FormatInt(r.Seq, 10)).Int("attempts", attempts).
		Str("code", pe.Code).Dur("backoff", backoff).Msg("event delivery failed; retrying after a backoff")
	q.mu.Lock()
	delete(t.delivering, r.Seq)
	q.mu.Unlock()
	q.later(id, t, backoff)
	return false
}

// forget counts event gone of id as gone from the queue.
func (q *Queue) forget(id proto.Id, t *tenantState, page []store.EventRecord, gone store.EventRecord) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.goneLocked(t, eventBytes(gone.Event))
	for i, r := range page {
		if r.Seq == gone.Seq && i+1 < len(page) {
			t.oldest = page[i+1].DeliverAt
		}
	}
}

// later makes id ready again after d.
func (q *Queue) later(id proto.Id, t *tenantState, d time.Duration) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.wakeAtLocked(id, t, time.Now().Add(d), time.Now())
}

// backoff is the wait after the attempts-th failed delivery.
func (q *Queue) backoff(attempts int) time.Duration {
	d := q.cfg.RetryBackoff
	for i := 1; i < attempts && d < q.cfg.RetryBackoffMax; i++ {
		d *= 2
	}
	return min(d, q.cfg.RetryBackoffMax)
}

// classify is Config.Classify or Classify.
func (q *Queue) classify(err error) Outcome {
	if q.cfg.Classify != nil {
		return q.cfg.Classify(err)
	}
	return Classify(err)
}

// quarantineWait is how long a quarantined tenant's events wait before the
// quarantine is checked again: until it ends, at most a second (an
// operator may lift it sooner).
func quarantineWait(error) time.Duration {
	return time.Second
}

// dispatch delivers win, a tenant's next due events in order, and returns
// how each ended: one waited Dispatch for a single event, else one
// DispatchWindow (which runs none after one that failed or must wait:
// those are not_run).
func (q *Queue) dispatch(id proto.Id, win []store.EventRecord) []error {
	evs := make([]proto.Event, len(win))
	for k, r := range win {
		evs[k] = r.Event
		evs[k].ID = strconv.FormatInt(r.Seq, 10)
	}
	ctx, cancel := context.WithTimeout(context.Background(), q.cfg.CallTimeout*time.Duration(len(win)))
	defer cancel()
	q.deliveries.Add(1)
	if len(win) == 1 || q.cfg.DispatchWindow == nil {
		_, err := q.cfg.Dispatch(ctx, id, evs[0])
		return []error{err}
	}
	errs := q.cfg.DispatchWindow(ctx, id, evs)
	if n := len(errs); n != len(win) {
		// A broken dispatcher: nothing is known to have run.
		errs = make([]error, len(win))
		for k := range errs {
			errs[k] = proto.Errorf(proto.CodeNotRun, "window dispatcher answered %d outcomes for %d events", n, len(win))
		}
	}
	return errs
}

// undeliver removes the delivering marks of rest, events of a window that
// did not run.
func (q *Queue) undeliver(t *tenantState, rest []store.EventRecord) {
	if len(rest) == 0 {
		return
	}
	q.mu.Lock()
	for _, r := range rest {
		delete(t.delivering, r.Seq)
	}
	q.mu.Unlock()
}

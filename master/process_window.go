package master

import (
	"context"

	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/worker"
)

// pipeCall is one window of a tenant's events sent to the worker back to
// back (DispatchWindow), waiting for their Acks.
type pipeCall struct {
	first uint64  // the seq of the window's first event; the others follow
	errs  []error // by position: how each acknowledged event ended
	acked []bool
	sizes []int64 // by position: worker.EventSize, counted in w.pipeBytes until acknowledged
	left  int     // events not acknowledged yet
	done  chan struct{}
}

// ackWindowLocked takes ack if it answers an event of a window in flight
// and reports whether it did (w.mu held).
func (w *procWorker) ackWindowLocked(ack proto.Ack) bool {
	pc := w.pipe[ack.Seq]
	if pc == nil {
		return false
	}
	delete(w.pipe, ack.Seq)
	i := ack.Seq - pc.first
	if pc.acked[i] {
		return true
	}
	pc.acked[i] = true
	w.pipeBytes -= pc.sizes[i]
	switch {
	case ack.Code != "" && ack.Message != "":
		pc.errs[i] = &proto.Error{Code: ack.Code, Message: ack.Message}
	case ack.Code != "":
		pc.errs[i] = proto.Errorf(ack.Code, "worker %d: the event ended with %s", w.id, ack.Code)
	}
	if pc.left--; pc.left == 0 {
		close(pc.done)
	}
	return true
}

// DispatchWindow runs a window of tenant id's events in order on the
// worker without waiting for each: it sends them back to back on the
// worker's connection, each an unheld nowait event of one Mesophyll
// window, and returns how each ended once all are acknowledged. The
// worker runs none after one that ended with an error that
// proto.StopsWindow (those are not_run). The caller (the durable queue)
// owns redelivery: if the connection ends (the worker died) or ctx
// expires first, the acknowledged events keep their outcomes, the first
// unacknowledged one fails with worker_unavailable (or timeout) — it
// took its worker down — and the later ones are not_run.
func (w *procWorker) DispatchWindow(ctx context.Context, id proto.Id, evs []proto.Event) []error {
	errs := make([]error, len(evs))
	c, err := w.ready(ctx)
	if err == nil {
		c, err = w.track(ctx, id, c)
	}
	if err != nil {
		return notRunAfter(errs, 0, err)
	}
	n := uint64(len(evs))
	pc := &pipeCall{errs: errs, acked: make([]bool, n), sizes: make([]int64, n), left: len(evs), done: make(chan struct{})}
	for i, ev := range evs {
		pc.sizes[i] = worker.EventSize(ev)
	}
	w.mu.Lock()
	w.windows++
	win := w.windows
	pc.first = w.seq + 1
	w.seq += n
	if w.pipe == nil {
		w.pipe = make(map[uint64]*pipeCall)
	}
	for i := range n {
		w.pipe[pc.first+i] = pc
		w.pipeBytes += pc.sizes[i]
	}
	w.mu.Unlock()
	var sendErr error
	for i, ev := range evs {
		w.countDispatch()
		if sendErr = c.DispatchEventWindow(id, ev, pc.first+uint64(i), win, i == len(evs)-1); sendErr != nil {
			break
		}
	}
	var cut error // why the window ended before every Ack
	if sendErr != nil {
		cut = w.unavailable(sendErr)
	} else {
		select {
		case <-pc.done:
		case <-c.Done():
			cut = &proto.Error{Code: proto.CodeWorkerUnavailable, RetryAfter: 1,
				Message: "worker " + itoa(w.id) + " died (its connection ended) before acknowledging the event"}
		case <-ctx.Done():
			cut = proto.Errorf(proto.CodeTimeout, "worker %d did not acknowledge the event in time: %v", w.id, ctx.Err())
		}
	}
	w.mu.Lock()
	for i := range n {
		if w.pipe[pc.first+i] == pc {
			delete(w.pipe, pc.first+i)
			w.pipeBytes -= pc.sizes[i]
		}
	}
	out := append([]error(nil), pc.errs...)
	acked := append([]bool(nil), pc.acked...)
	w.mu.Unlock()
	for i := range out {
		if !acked[i] {
			if cut == nil {
				cut = proto.Errorf(proto.CodeInternal, "worker %d: the event was not acknowledged", w.id)
			}
			notRunAfter(out, i, cut)
			break
		}
	}
	w.untrack(id, c, cut)
	return out
}

// notRunAfter sets errs[i] to err and the errors after it to not_run, and
// returns errs.
func notRunAfter(errs []error, i int, err error) []error {
	errs[i] = err
	for j := i + 1; j < len(errs); j++ {
		errs[j] = proto.Errorf(proto.CodeNotRun, "not run: an earlier event of its window did not run through")
	}
	return errs
}

// windower is a WorkerLike that runs a window of a tenant's events itself
// (a process worker pipelines them).
type windower interface {
	DispatchWindow(ctx context.Context, id proto.Id, evs []proto.Event) []error
}

// dispatchWindow runs evs for tenant id in order on w and returns how each
// ended: pipelined if w is a windower, else one waited DispatchEvent after
// the other, none after one that ended with an error that
// proto.StopsWindow (those are not_run), the rule the process workers
// follow.
func dispatchWindow(ctx context.Context, w WorkerLike, id proto.Id, evs []proto.Event) []error {
	if wd, ok := w.(windower); ok {
		return wd.DispatchWindow(ctx, id, evs)
	}
	errs := make([]error, len(evs))
	for i, ev := range evs {
		_, err := w.DispatchEvent(ctx, id, ev)
		if err != nil && proto.StopsWindow(proto.CodeOf(err)) {
			return notRunAfter(errs, i, err)
		}
		errs[i] = err
	}
	return errs
}

// DispatchWindow runs a window of tenant id's events in order on its
// worker (see procWorker.DispatchWindow) and returns how each ended.
func (p *Pool) DispatchWindow(ctx context.Context, id proto.Id, evs []proto.Event) []error {
	return dispatchWindow(ctx, p.For(id), id, evs)
}

// DispatchWindow is the quarantine's guard around a window: a quarantined
// tenant's events are refused, and each fatal limit is a strike.
func (g guarded) DispatchWindow(ctx context.Context, id proto.Id, evs []proto.Event) []error {
	if err := g.q.Check(id); err != nil {
		return notRunAfter(make([]error, len(evs)), 0, err)
	}
	errs := dispatchWindow(ctx, g.WorkerLike, id, evs)
	for _, err := range errs {
		_ = g.observe(ctx, id, err)
	}
	return errs
}

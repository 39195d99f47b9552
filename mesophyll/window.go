package mesophyll

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/templateworker/templateworker/proto"
)

// A window is the worker's record of one pipelined delivery of a tenant's
// events (DispatchEvent frames with a Window): once one of its events
// ended with an error that proto.StopsWindow, its later events are not
// run (they are acknowledged not_run).
type window struct {
	id      uint64
	stopped atomic.Bool
}

// windows holds the open window of each tenant: one at most, dropped at
// the window's Last frame or replaced by the tenant's next window, so
// its size is bounded by the tenants with a window open.
type windows struct {
	mu   sync.Mutex
	open map[proto.Id]*window
}

// of returns the window of frame q (nil if q is not windowed), opening it
// at its first frame and forgetting it at its last.
func (ws *windows) of(q *proto.DispatchEvent) *window {
	if q.Window == 0 || q.ReqID != 0 {
		return nil
	}
	ws.mu.Lock()
	defer ws.mu.Unlock()
	w := ws.open[q.ID]
	if w == nil || w.id != q.Window {
		w = &window{id: q.Window}
		if ws.open == nil {
			ws.open = make(map[proto.Id]*window)
		}
		ws.open[q.ID] = w
	}
	if q.Last {
		delete(ws.open, q.ID)
	}
	return w
}

// windowKey is the context key of the window an event belongs to.
type windowKey struct{}

// withWindow returns ctx carrying w (ctx itself when w is nil).
func withWindow(ctx context.Context, w *window) context.Context {
	if w == nil {
		return ctx
	}
	return context.WithValue(ctx, windowKey{}, w)
}

// notRun is the error of a windowed event that was not run.
func notRun() error {
	return proto.Errorf(proto.CodeNotRun, "not run: an earlier event of its window failed")
}

// WindowStopped returns a not_run error if the event of ctx belongs to a
// window whose earlier event failed: the handler must not run it. A
// Handler (or its queue) calls it just before running an event, in the
// tenant's order; nil for events without a window.
func WindowStopped(ctx context.Context) error {
	if w, _ := ctx.Value(windowKey{}).(*window); w != nil && w.stopped.Load() {
		return notRun()
	}
	return nil
}

// WindowRan records that the event of ctx ended with err: an error that
// proto.StopsWindow stops the rest of its window. A Handler calls it once
// the event has run, before the tenant's next event starts.
func WindowRan(ctx context.Context, err error) {
	if err == nil {
		return
	}
	if w, _ := ctx.Value(windowKey{}).(*window); w != nil && proto.StopsWindow(proto.CodeOf(err)) {
		w.stopped.Store(true)
	}
}

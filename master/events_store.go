package master

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/store"
	"github.com/templateworker/templateworker/worker"
)

// lateQueue holds the event queue, which is opened after the workers (it
// delivers through them) although the workers' ctx.events calls need it:
// until Set, those calls fail with store_unavailable.
type lateQueue struct {
	q atomic.Pointer[EventQueue]
}

// Set makes q the queue of the workers' ctx.events calls.
func (l *lateQueue) Set(q EventQueue) { l.q.Store(&q) }

func (l *lateQueue) get() (EventQueue, error) {
	if l == nil {
		return nil, errNoQueue
	}
	p := l.q.Load()
	if p == nil || *p == nil {
		return nil, proto.Errorf(proto.CodeStoreUnavailable, "the event queue is not open yet")
	}
	return *p, nil
}

// workerEvents answers the workers' ctx.events calls (worker.EventStore)
// from the queue, in both topologies: the time is checked again (a worker
// is not trusted to have), and a list answer must fit in a Mesophyll frame
// like a ctx.kv.find answer.
type workerEvents struct {
	q      *lateQueue
	budget int // bytes of encoded events one answer may carry
}

var _ worker.EventStore = workerEvents{}

// newWorkerEvents bounds list answers by frames of maxFrame.
func newWorkerEvents(q *lateQueue, maxFrame int64) workerEvents {
	return workerEvents{q: q, budget: proto.ValueBudget(frameLimit(maxFrame))}
}

// ScheduleEvent stores ev for tenant, due at at (Queue.Schedule).
func (e workerEvents) ScheduleEvent(ctx context.Context, tenant proto.Id, at time.Time, ev proto.Event) (string, error) {
	q, err := e.q.get()
	if err != nil {
		return "", err
	}
	if d := time.Until(at); d > proto.MaxScheduleAhead+time.Minute {
		return "", proto.Errorf(proto.CodeBadRequest, "the event is due more than one year ahead")
	}
	if len(ev.Data) > proto.MaxValueBytes {
		return "", proto.Errorf(proto.CodeBadRequest, "the event's data is larger than %d bytes", proto.MaxValueBytes)
	}
	ev.Author, ev.ID = nil, ""
	return q.Schedule(ctx, tenant, at, ev)
}

// CancelEvent cancels the tenant's pending event id (Queue.Cancel).
func (e workerEvents) CancelEvent(ctx context.Context, tenant proto.Id, id string) (bool, error) {
	q, err := e.q.get()
	if err != nil {
		return false, err
	}
	return q.Cancel(ctx, tenant, id)
}

// pendingSizer is an EventQueue that sizes a tenant's pending events
// without reading them (queue.Queue.PendingSize).
type pendingSizer interface {
	PendingSize(ctx context.Context, tenant proto.Id, scheduledOnly bool) (n int, bytes int64, ok bool, err error)
}

// ScheduledEvents lists the tenant's pending scheduled events if they fit
// in one answer.
func (e workerEvents) ScheduledEvents(ctx context.Context, tenant proto.Id) ([]proto.ScheduledEvent, error) {
	q, err := e.q.get()
	if err != nil {
		return nil, err
	}
	// Each event's share of the answer is more than its stored JSON:
	// when that alone is over the budget, refuse without reading them.
	if ps, ok := q.(pendingSizer); ok {
		if n, b, known, err := ps.PendingSize(ctx, tenant, true); err == nil && known && b+2 > int64(e.budget) {
			return nil, proto.Errorf(proto.CodeKVResultTooLarge,
				"the tenant's %d scheduled events are more than %d bytes encoded, over the %d bytes one answer may carry (--mesophyll-max-frame); cancel some or keep less data in them",
				n, b, e.budget)
		}
	}
	list, err := q.Pending(ctx, tenant, true)
	if err != nil {
		return nil, err
	}
	out := make([]proto.ScheduledEvent, len(list))
	n := 2
	for i, ev := range list {
		pe := ev.Event
		pe.ID = ""
		out[i] = proto.ScheduledEvent{ID: ev.ID, Event: pe, DeliverAt: ev.DeliverAt}
		// {"id":"…","event":{"name":…,"author":null,"data":…},"deliver_at":"<RFC 3339 nano>"},
		n += 110 + len(ev.ID) + proto.JSONStringBound(pe.Name) + len(pe.Data)
	}
	if n > e.budget {
		return nil, proto.Errorf(proto.CodeKVResultTooLarge,
			"the tenant's %d scheduled events are about %d bytes encoded, over the %d bytes one answer may carry (--mesophyll-max-frame); cancel some or keep less data in them",
			len(list), n, e.budget)
	}
	return out, nil
}

// workerStore is the store as thread workers see it: the bounded store
// with the queue's ctx.events calls.
type workerStore struct {
	boundedStore
	workerEvents
}

// threadStore is st as thread workers see it: bounded by frames of
// maxFrame, with ctx.events answered by events (nil: store_unavailable).
func threadStore(st store.Store, events *lateQueue, maxFrame int64) worker.Store {
	return workerStore{newBoundedStore(st, maxFrame), newWorkerEvents(events, maxFrame)}
}

package queue

import (
	"container/heap"
	"time"

	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/store"
)

// tenantState is what the queue keeps in memory of one tenant with pending
// events: counts and scheduling flags, never payloads.
type tenantState struct {
	count    int // pending events in the store
	reserved int // Accepts of it in flight
	// bytes and reservedBytes are count and reserved in eventBytes
	// (approximate after a restart: the store counts encoded events).
	bytes, reservedBytes int64
	oldest               time.Time // when its longest-waiting pending event became due (approximate)
	queued               bool      // in the ready list
	running              bool      // a deliverer serves it
	again                bool      // made ready while running: serve again
	wakeAt               time.Time // a timer wake is pending (zero: none)
	// delayed: the tenant may have events not due yet, so a serve that
	// finds fewer due than a page asks the store when the next one is.
	// A delayed Accept sets it (and arms the timer itself).
	delayed bool
	// delayedGen counts the delayed Accepts, so that a serve clears
	// delayed only if none came while it read the store.
	delayedGen uint64

	// buf caches, in seq order, the tenant's pending events as they were
	// committed, while complete: they are all of them, all due, so a
	// serve needs no read of the store. Anything irregular (a delayed
	// event, a failed delivery, a cancel, a restart, a full cache) ends
	// that until the tenant has no pending event left.
	buf      []store.EventRecord
	complete bool
	// lastDone is the last deletion of a delivered event of the tenant
	// handed to the writer: a read of the store waits for it.
	lastDone *write

	// delivering holds the seqs dispatched by the current serve whose
	// deletion is not committed yet; cancelled the seqs Cancel deleted
	// (or is deleting) that a page may still hold, kept while a serve
	// runs or a Cancel is in flight (cancelling).
	delivering map[int64]bool
	cancelled  map[int64]bool
	cancelling int
}

// Bounds of the tenants' caches of due events.
const (
	cacheEvents = 2 * pageSize // per tenant
	cacheBytes  = 32 << 20     // all tenants
)

// tenantLocked returns id's state, creating it. A new state has no pending
// events (a tenant with some keeps its state), so its cache is complete.
func (q *Queue) tenantLocked(id proto.Id) *tenantState {
	t := q.tenants[id]
	if t == nil {
		t = &tenantState{complete: true}
		q.tenants[id] = t
	}
	return t
}

// goneLocked counts one pending event of t (of size bytes, 0: unknown) as
// gone from the store. A tenant left without pending events is served
// from its cache again.
func (q *Queue) goneLocked(t *tenantState, size int64) {
	t.count--
	q.total--
	t.bytes = max(t.bytes-size, 0)
	if t.count <= 0 {
		t.bytes, t.delayed = 0, false
		if !t.complete && len(t.buf) == 0 {
			t.complete = true
		}
	}
}

// dropIfIdleLocked forgets id's state when nothing refers to it.
func (q *Queue) dropIfIdleLocked(id proto.Id, t *tenantState) {
	if t.count <= 0 && t.reserved == 0 && !t.running && !t.queued && t.wakeAt.IsZero() && t.cancelling == 0 && len(t.delivering) == 0 {
		delete(q.tenants, id)
	}
}

// wakeAtLocked makes id ready at at: now if at has passed, else by the
// timer.
func (q *Queue) wakeAtLocked(id proto.Id, t *tenantState, at, now time.Time) {
	if !at.After(now) {
		q.readyLocked(id, t)
		return
	}
	if !t.wakeAt.IsZero() && !at.Before(t.wakeAt) {
		return
	}
	t.wakeAt = at
	first := q.wakes.Len() == 0 || at.Before(q.wakes[0].at)
	heap.Push(&q.wakes, wake{at: at, tenant: id})
	if first {
		select {
		case q.wakeCh <- struct{}{}:
		default:
		}
	}
}

// readyLocked puts id in the ready list (or, when it is being served,
// has it served again).
func (q *Queue) readyLocked(id proto.Id, t *tenantState) {
	switch {
	case t.running:
		t.again = true
	case !t.queued:
		t.queued = true
		q.ready = append(q.ready, id)
		q.cond.Signal()
	}
}

// timer makes tenants ready when their wake time comes.
func (q *Queue) timer() {
	defer q.wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		q.mu.Lock()
		now := time.Now()
		for q.wakes.Len() > 0 && !q.wakes[0].at.After(now) {
			w := heap.Pop(&q.wakes).(wake)
			ts := q.tenants[w.tenant]
			if ts == nil || !ts.wakeAt.Equal(w.at) {
				continue // stale: an earlier wake replaced it
			}
			ts.wakeAt = time.Time{}
			q.readyLocked(w.tenant, ts)
		}
		d := time.Hour
		if q.wakes.Len() > 0 {
			d = q.wakes[0].at.Sub(now)
		}
		q.mu.Unlock()
		t.Reset(d)
		select {
		case <-q.stop:
			return
		case <-q.wakeCh:
			if !t.Stop() {
				select {
				case <-t.C:
				default:
				}
			}
		case <-t.C:
		}
	}
}

// wake is a timer entry: tenant becomes ready at at.
type wake struct {
	at     time.Time
	tenant proto.Id
}

// wakeHeap is a min-heap of wakes by time.
type wakeHeap []wake

func (h wakeHeap) Len() int           { return len(h) }
func (h wakeHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h wakeHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *wakeHeap) Push(x any)        { *h = append(*h, x.(wake)) }
func (h *wakeHeap) Pop() any {
	old := *h
	w := old[len(old)-1]
	*h = old[:len(old)-1]
	return w
}

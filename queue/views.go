package queue

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/store"
)

// What the queue shows (pending events, dead letters, totals) and the
// dead-letter table's operations.

// Pending lists the tenant's pending events (immediate, delayed and
// scheduled; only the scheduled ones with scheduledOnly) in delivery order.
func (q *Queue) Pending(ctx context.Context, tenant proto.Id, scheduledOnly bool) ([]Event, error) {
	recs, err := q.cfg.Store.PendingEvents(ctx, tenant, scheduledOnly, q.cfg.BacklogTenant)
	if err != nil {
		return nil, err
	}
	return events(recs), nil
}

// PendingSize returns how many pending events tenant has (only the
// scheduled ones if scheduledOnly) and the bytes of their stored events,
// without reading them; ok is false when the store cannot tell
// (store.PendingSizer).
func (q *Queue) PendingSize(ctx context.Context, tenant proto.Id, scheduledOnly bool) (n int, bytes int64, ok bool, err error) {
	ps, ok := q.cfg.Store.(store.PendingSizer)
	if !ok {
		return 0, 0, false, nil
	}
	n, bytes, err = ps.PendingSize(ctx, tenant, scheduledOnly)
	return n, bytes, err == nil, err
}

// DeadLetterPageBytes bounds the stored events one page of dead letters
// holds (store.DeadLetterQuery.MaxBytes): each tenant's dead letters are
// bounded by its byte share, but every tenant's together are not, and a
// listing of them is held in memory and encoded at once.
const DeadLetterPageBytes = 16 << 20

// DeadLetters lists up to limit dead letters (1 to 10,000; 0 or more:
// 10,000) of tenant when not nil, oldest first, from the first whose id
// follows after ("" or "0": from the first), at most DeadLetterPageBytes
// of their events; more reports that others follow the last one listed.
func (q *Queue) DeadLetters(ctx context.Context, tenant *proto.Id, after string, limit int) (list []Event, more bool, err error) {
	if limit <= 0 || limit > 10000 {
		limit = 10000
	}
	var seq int64
	if after != "" && after != "0" {
		if seq, err = parseID(after); err != nil {
			return nil, false, proto.Errorf(proto.CodeBadRequest, "bad after %q: want a dead letter id", after)
		}
	}
	recs, more, err := q.cfg.Store.DeadLetters(ctx, store.DeadLetterQuery{Tenant: tenant, After: seq, Limit: limit, MaxBytes: DeadLetterPageBytes})
	if err != nil {
		return nil, false, err
	}
	return events(recs), more, nil
}

// DeadLetter returns dead letter id; not_found if there is none. A
// cluster's API reads its tenant to forward a retry to the tenant's owner.
func (q *Queue) DeadLetter(ctx context.Context, id string) (Event, error) {
	seq, err := parseID(id)
	if err != nil {
		return Event{}, proto.Errorf(proto.CodeNotFound, "dead letter %q not found", id)
	}
	rec, err := q.cfg.Store.DeadLetter(ctx, seq)
	if err != nil {
		return Event{}, err
	}
	return event(rec), nil
}

// RetryDeadLetter moves dead letter id back into the queue with its
// attempts reset; it is delivered next among its tenant's events (its id
// is older than theirs). not_found if there is none; backlog_full past
// --event-backlog-max; shard_unavailable when another master owns its
// tenant (Config.Owns): the retry belongs on the owner, which delivers it.
func (q *Queue) RetryDeadLetter(ctx context.Context, id string) (Event, error) {
	seq, err := parseID(id)
	if err != nil {
		return Event{}, proto.Errorf(proto.CodeNotFound, "dead letter %q not found", id)
	}
	if q.cfg.Owns != nil {
		dl, err := q.cfg.Store.DeadLetter(ctx, seq)
		if err != nil {
			return Event{}, err
		}
		if !q.cfg.Owns(dl.Tenant) {
			return Event{}, proto.Errorf(proto.CodeShardUnavailable, "tenant %s of dead letter %s belongs to another master: retry it there", dl.Tenant, id)
		}
	}
	if q.closed.Load() {
		return Event{}, proto.Errorf(proto.CodeShuttingDown, "the master is shutting down")
	}
	if q.total+q.reserveCount() >= q.cfg.BacklogMax {
		return Event{}, &proto.Error{Code: proto.CodeBacklogFull, RetryAfter: 1,
			Message: "the master has " + strconv.Itoa(q.total) + " pending events, the most --event-backlog-max allows"}
	}
	rec, err := q.cfg.Store.ReviveDeadLetter(ctx, seq)
	if err != nil {
		return Event{}, err
	}
	now := time.Now()
	q.mu.Lock()
	t := q.tenantLocked(rec.Tenant)
	q.uncacheLocked(t)
	if t.count == 0 || rec.DeliverAt.Before(t.oldest) {
		t.oldest = rec.DeliverAt
	}
	t.count++
	t.bytes += eventBytes(rec.Event)
	t.delayed = true
	t.delayedGen++
	q.total++
	q.wakeAtLocked(rec.Tenant, t, rec.DeliverAt, now)
	q.mu.Unlock()
	return event(rec), nil
}

// reserveCount returns the Accepts in flight.
func (q *Queue) reserveCount() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.reserve
}

// DeleteDeadLetter deletes dead letter id; not_found if there is none.
func (q *Queue) DeleteDeadLetter(ctx context.Context, id string) error {
	seq, err := parseID(id)
	if err != nil {
		return proto.Errorf(proto.CodeNotFound, "dead letter %q not found", id)
	}
	return q.cfg.Store.DeleteDeadLetter(ctx, seq)
}

// PendingCount returns the tenant's pending events, from memory.
func (q *Queue) PendingCount(tenant proto.Id) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	if t := q.tenants[tenant]; t != nil {
		return t.count
	}
	return 0
}

// Stats returns the queue's totals.
func (q *Queue) Stats() Stats {
	s := Stats{PendingByWorker: map[int]int{},
		Delivered: q.delivered.Load(), Retried: q.retried.Load(),
		DeadLettered: q.deadLettered.Load(), Scheduled: q.scheduled.Load(), Commits: q.commits.Load(),
		Deliveries: q.deliveries.Load()}
	now := time.Now()
	q.mu.Lock()
	defer q.mu.Unlock()
	s.Pending = q.total
	var oldest time.Time
	for id, t := range q.tenants {
		if t.count == 0 {
			continue
		}
		s.PendingByWorker[q.cfg.Route(id)] += t.count
		if !t.oldest.After(now) && (oldest.IsZero() || t.oldest.Before(oldest)) {
			oldest = t.oldest
		}
	}
	if !oldest.IsZero() {
		s.OldestPendingAge = now.Sub(oldest)
	}
	return s
}

// parseID parses an event id.
func parseID(id string) (int64, error) {
	seq, err := strconv.ParseInt(id, 10, 64)
	if err != nil || seq <= 0 {
		return 0, fmt.Errorf("bad event id %q", id)
	}
	return seq, nil
}

func event(r store.EventRecord) Event {
	e := Event{ID: strconv.FormatInt(r.Seq, 10), Tenant: r.Tenant, Event: r.Event,
		AcceptedAt: r.AcceptedAt, DeliverAt: r.DeliverAt, Scheduled: r.Scheduled,
		Attempts: r.Attempts, LastError: r.LastError}
	e.Event.ID = e.ID
	if !r.DeadAt.IsZero() {
		at := r.DeadAt
		e.DeadAt = &at
	}
	return e
}

func events(rs []store.EventRecord) []Event {
	out := make([]Event, len(rs))
	for i, r := range rs {
		out[i] = event(r)
	}
	return out
}

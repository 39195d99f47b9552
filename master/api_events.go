package master

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/queue"
)

// EventQueue is what the API and the workers' ctx.events calls need of the
// durable event queue (*queue.Queue); see package queue for the methods.
type EventQueue interface {
	// Accept commits ev for tenant, due at deliverAt (zero: now), and
	// returns its id.
	Accept(ctx context.Context, tenant proto.Id, ev proto.Event, deliverAt time.Time) (string, error)
	// Schedule commits ev for tenant due at at, marked scheduled
	// (ctx.events.schedule).
	Schedule(ctx context.Context, tenant proto.Id, at time.Time, ev proto.Event) (string, error)
	// Cancel deletes the tenant's pending event id; false if none.
	Cancel(ctx context.Context, tenant proto.Id, id string) (bool, error)
	// Pending lists the tenant's pending events in delivery order.
	Pending(ctx context.Context, tenant proto.Id, scheduledOnly bool) ([]queue.Event, error)
	// DeadLetters lists up to limit dead letters, of tenant if not nil,
	// from the first after the dead letter after, and whether more follow.
	DeadLetters(ctx context.Context, tenant *proto.Id, after string, limit int) ([]queue.Event, bool, error)
	// RetryDeadLetter moves dead letter id back into the queue.
	RetryDeadLetter(ctx context.Context, id string) (queue.Event, error)
	// DeleteDeadLetter deletes dead letter id (not_found if none).
	DeleteDeadLetter(ctx context.Context, id string) error
	// PendingCount is the tenant's pending events, from memory.
	PendingCount(tenant proto.Id) int
	// Stats are the queue's totals (pending by worker among them).
	Stats() queue.Stats
}

var _ EventQueue = (*queue.Queue)(nil)

// errNoQueue answers the event routes of a master without a queue.
var errNoQueue = proto.Errorf(proto.CodeStoreUnavailable, "the master has no event queue")

// events is a.Events, or an error when there is none.
func (a *API) events() (EventQueue, error) {
	if a.Events == nil {
		return nil, errNoQueue
	}
	return a.Events, nil
}

// eventBody is an event body that may carry "deliver_at".
type eventBody struct {
	proto.Event
	DeliverAt *string `json:"deliver_at"`
}

// delivery reads the body of POST …/events: the event, and when it is due
// from ?delay= (a Go duration such as 30s or 1h30m, or a number of
// seconds) or the body's "deliver_at" (RFC 3339). The zero time means now;
// either needs ?wait=false.
func (a *API) delivery(r *http.Request) (proto.Event, time.Time, error) {
	buf, err := readBody(r)
	if err != nil {
		return proto.Event{}, time.Time{}, bodyError(err)
	}
	// What the event keeps of the body is copied out of it (Parse-
	// CanonicalEvent clones, encoding/json copies).
	defer putBody(buf)
	body := buf.Bytes()
	var ev proto.Event
	var at *string
	if fast, ok := proto.ParseCanonicalEvent(bytes.TrimRight(body, " \t\r\n")); ok {
		ev = fast
	} else {
		var b eventBody
		if err := decodeFrom(bytes.NewReader(body), &b); err != nil {
			return ev, time.Time{}, err
		}
		ev, at = b.Event, b.DeliverAt
	}
	// The worker refuses data nested deeper than it decodes at every
	// delivery: refuse it here, before a nowait call is answered 202.
	if err := proto.CheckJSONDepth(ev.Data); err != nil {
		return ev, time.Time{}, proto.Errorf(proto.CodeBadRequest, "event: %v", err)
	}
	delay := queryGet(r.URL.RawQuery, "delay")
	if delay == "" && at == nil {
		return ev, time.Time{}, nil
	}
	if delay != "" && at != nil {
		return ev, time.Time{}, proto.Errorf(proto.CodeBadRequest, "give ?delay= or \"deliver_at\", not both")
	}
	if w := queryGet(r.URL.RawQuery, "wait"); w != "false" && w != "0" {
		return ev, time.Time{}, proto.Errorf(proto.CodeBadRequest, "?delay= and \"deliver_at\" need ?wait=false (a delayed event is not waited for)")
	}
	now := time.Now()
	var due time.Time
	if delay != "" {
		d, err := parseDelay(delay)
		if err != nil {
			return ev, time.Time{}, err
		}
		due = now.Add(d)
	} else {
		t, err := time.Parse(time.RFC3339Nano, *at)
		if err != nil {
			return ev, time.Time{}, proto.Errorf(proto.CodeBadRequest, "bad \"deliver_at\" %q: want an RFC 3339 time such as 2026-12-02T15:04:05Z", *at)
		}
		if t.Sub(now) > proto.MaxScheduleAhead {
			return ev, time.Time{}, proto.Errorf(proto.CodeBadRequest, "\"deliver_at\" %s is more than one year ahead", *at)
		}
		due = t
		if !due.After(now) {
			due = now // due already: delivered at once, in order
		}
	}
	return ev, due, nil
}

// bodies recycles the buffers request bodies of POST …/events are read
// into.
var bodies = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxPooledBody is the largest buffer bodies keeps.
const maxPooledBody = 64 << 10

// readBody reads r's body into a buffer of bodies; putBody gives it back.
func readBody(r *http.Request) (*bytes.Buffer, error) {
	buf := bodies.Get().(*bytes.Buffer)
	buf.Reset()
	if _, err := buf.ReadFrom(r.Body); err != nil {
		putBody(buf)
		return nil, err
	}
	return buf, nil
}

// putBody gives buf back to bodies.
func putBody(buf *bytes.Buffer) {
	if buf.Cap() <= maxPooledBody {
		bodies.Put(buf)
	}
}

// queryGet is url.ParseQuery(raw).Get(key), as r.URL.Query().Get(key),
// without making the url.Values when raw has nothing to unescape.
func queryGet(raw, key string) string {
	if strings.ContainsAny(raw, "%+;") {
		v, _ := url.ParseQuery(raw)
		return v.Get(key)
	}
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		if k, v, _ := strings.Cut(pair, "="); k == key {
			return v
		}
	}
	return ""
}

// parseDelay parses ?delay=: a Go duration (30s, 1h30m) or seconds.
func parseDelay(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		secs, nerr := strconv.ParseFloat(s, 64)
		if nerr != nil || secs != secs {
			return 0, proto.Errorf(proto.CodeBadRequest, "bad delay %q: want a duration such as 30s, 5m or 1h30m, or a number of seconds", s)
		}
		if secs > proto.MaxScheduleAhead.Seconds() {
			return 0, proto.Errorf(proto.CodeBadRequest, "delay %q is more than one year", s)
		}
		d = time.Duration(secs * float64(time.Second))
	}
	if d < 0 {
		return 0, proto.Errorf(proto.CodeBadRequest, "delay %q is negative", s)
	}
	if d > proto.MaxScheduleAhead {
		return 0, proto.Errorf(proto.CodeBadRequest, "delay %q is more than one year", s)
	}
	return d, nil
}

// acceptDelayed commits ev for id, due at deliverAt, and answers 202 with
// the event's id and due time.
func (a *API) acceptDelayed(w http.ResponseWriter, r *http.Request, id proto.Id, ev proto.Event, deliverAt time.Time) error {
	q, err := a.events()
	if err != nil {
		return err
	}
	if a.Quarantine != nil {
		if err := a.Quarantine.Check(id); err != nil {
			return err
		}
	}
	eid, err := q.Accept(r.Context(), id, ev, deliverAt)
	a.Metrics.observe(time.Now(), false, err)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"accepted": true, "id": eid, "deliver_at": deliverAt.UTC()})
	return nil
}

// queryTenant parses ?tenant= (guild:<id>, user:<id>, or guild/<id> as in
// paths); ok is false when it is absent.
func queryTenant(r *http.Request) (proto.Id, bool, error) {
	s := strings.TrimSpace(r.URL.Query().Get("tenant"))
	if s == "" {
		return proto.Id{}, false, nil
	}
	id, err := proto.ParseId(s)
	if err != nil {
		return proto.Id{}, false, proto.Errorf(proto.CodeBadRequest, "bad ?tenant=: %v", err)
	}
	return id, true, nil
}

// queryLimit parses ?limit= (default def, at most max).
func queryLimit(r *http.Request, def, max int) (int, error) {
	s := r.URL.Query().Get("limit")
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > max {
		return 0, proto.Errorf(proto.CodeBadRequest, "bad ?limit=%q: want 1 to %d", s, max)
	}
	return n, nil
}

// maxListed bounds the events one list answer carries.
const maxListed = 10000

// listPending is GET /v1/events/pending?tenant=…[&scheduled=true]: the
// tenant's pending events (immediate, delayed, scheduled) in delivery
// order.
func (a *API) listPending(w http.ResponseWriter, r *http.Request) error {
	id, ok, err := queryTenant(r)
	if err != nil {
		return err
	}
	if !ok {
		return proto.Errorf(proto.CodeBadRequest, "missing ?tenant= (guild:<id> or user:<id>)")
	}
	scheduled := false
	switch s := r.URL.Query().Get("scheduled"); s {
	case "", "false", "0":
	case "true", "1":
		scheduled = true
	default:
		return proto.Errorf(proto.CodeBadRequest, "bad ?scheduled=%q: want true or false", s)
	}
	q, err := a.events()
	if err != nil {
		return err
	}
	list, err := q.Pending(r.Context(), id, scheduled)
	if err != nil {
		return err
	}
	if list == nil {
		list = []queue.Event{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"tenant": id, "count": len(list), "pending": list})
	return nil
}

// listDeadLetters is GET /v1/dead-letters[?tenant=…][&after=ID][&limit=N]:
// a page of dead letters oldest first, at most limit and at most
// queue.DeadLetterPageBytes of their events, and whether more follow (the
// next page is ?after= the last one's id).
func (a *API) listDeadLetters(w http.ResponseWriter, r *http.Request) error {
	id, ok, err := queryTenant(r)
	if err != nil {
		return err
	}
	limit, err := queryLimit(r, 1000, maxListed)
	if err != nil {
		return err
	}
	q, err := a.events()
	if err != nil {
		return err
	}
	var tenant *proto.Id
	if ok {
		tenant = &id
	}
	after := r.URL.Query().Get("after")
	if len(after) > 20 || strings.Trim(after, "0123456789") != "" {
		return proto.Errorf(proto.CodeBadRequest, "bad after %q: want the decimal id of a dead letter (the last one of the page before)", after)
	}
	list, more, err := q.DeadLetters(r.Context(), tenant, after, limit)
	if err != nil {
		return err
	}
	if list == nil {
		list = []queue.Event{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"dead_letters": list, "more": more})
	return nil
}

// deadLetterID checks the {id} of a dead-letter route.
func deadLetterID(r *http.Request) (string, error) {
	id := r.PathValue("id")
	if id == "" || len(id) > 20 || strings.Trim(id, "0123456789") != "" {
		return "", proto.Errorf(proto.CodeBadRequest, "bad dead letter id %q: want the decimal id GET /v1/dead-letters lists", id)
	}
	return id, nil
}

// retryDeadLetter is POST /v1/dead-letters/{id}/retry: the event goes back
// into its tenant's queue with its attempts reset.
func (a *API) retryDeadLetter(w http.ResponseWriter, r *http.Request) error {
	id, err := deadLetterID(r)
	if err != nil {
		return err
	}
	q, err := a.events()
	if err != nil {
		return err
	}
	ev, err := q.RetryDeadLetter(r.Context(), id)
	if err != nil {
		return err
	}
	a.Log.Info().Str("tenant", ev.Tenant.String()).Str("event_id", id).Msg("dead letter requeued by an operator")
	writeJSON(w, http.StatusOK, map[string]any{"requeued": ev})
	return nil
}

// deleteDeadLetter is DELETE /v1/dead-letters/{id}.
func (a *API) deleteDeadLetter(w http.ResponseWriter, r *http.Request) error {
	id, err := deadLetterID(r)
	if err != nil {
		return err
	}
	q, err := a.events()
	if err != nil {
		return err
	}
	if err := q.DeleteDeadLetter(r.Context(), id); err != nil {
		return err
	}
	a.Log.Info().Str("event_id", id).Msg("dead letter deleted by an operator")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// workerStatus is the pool's status with each worker's pending events.
func (a *API) workerStatus() []WorkerStatus {
	list := a.Workers.Status()
	if a.Events != nil {
		by := a.Events.Stats().PendingByWorker
		for i := range list {
			list[i].Pending = by[list[i].ID]
		}
	}
	return list
}

// cancelEvent is DELETE /v1/tenants/{kind}/{tid}/events/{id}: the tenant's
// pending event id (immediate, delayed or scheduled) is deleted before it
// runs, as ctx.events.cancel does from Lua. 404 not_found when the tenant
// has no such pending event: never accepted, another tenant's, delivered,
// or already handed to its worker.
func (a *API) cancelEvent(w http.ResponseWriter, r *http.Request) error {
	tid, err := tenant(r)
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	if id == "" || len(id) > 20 || strings.Trim(id, "0123456789") != "" {
		return proto.Errorf(proto.CodeBadRequest, "bad event id %q: want the decimal id a nowait call answered or GET /v1/events/pending lists", id)
	}
	q, err := a.events()
	if err != nil {
		return err
	}
	ok, err := q.Cancel(r.Context(), tid, id)
	if err != nil {
		return err
	}
	if !ok {
		return proto.Errorf(proto.CodeNotFound, "%s has no pending event %s (never accepted, delivered, or already sent to its worker)", tid, id)
	}
	a.Log.Info().Str("tenant", tid.String()).Str("event_id", id).Msg("pending event cancelled by an operator")
	writeJSON(w, http.StatusOK, map[string]any{"cancelled": true, "id": id})
	return nil
}

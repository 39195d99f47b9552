package master

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/queue"
	"github.com/templateworker/templateworker/worker"
)

// fakeQueue is an in-memory EventQueue: pending events by tenant, dead
// letters, and a per-tenant bound.
type fakeQueue struct {
	mu      sync.Mutex
	next    int
	pending []queue.Event
	dead    []queue.Event
	bound   int
	route   func(proto.Id) int
	// deadTenant is the tenant filter the last DeadLetters call got.
	deadTenant *proto.Id
	deadLimit  int
	deadAfter  string
}

func (f *fakeQueue) add(tenant proto.Id, ev proto.Event, at time.Time, scheduled bool) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, e := range f.pending {
		if e.Tenant == tenant {
			n++
		}
	}
	if f.bound > 0 && n >= f.bound {
		return "", &proto.Error{Code: proto.CodeBacklogFull, RetryAfter: 1, Message: "tenant " + tenant.String() + " has " + strconv.Itoa(n) + " pending events, the most --event-backlog-tenant allows"}
	}
	now := time.Now()
	if at.IsZero() {
		at = now
	}
	f.next++
	id := strconv.Itoa(f.next)
	ev.ID = id
	f.pending = append(f.pending, queue.Event{ID: id, Tenant: tenant, Event: ev, AcceptedAt: now, DeliverAt: at, Scheduled: scheduled})
	return id, nil
}

func (f *fakeQueue) Accept(ctx context.Context, tenant proto.Id, ev proto.Event, at time.Time) (string, error) {
	return f.add(tenant, ev, at, false)
}

func (f *fakeQueue) Schedule(ctx context.Context, tenant proto.Id, at time.Time, ev proto.Event) (string, error) {
	return f.add(tenant, ev, at, true)
}

func (f *fakeQueue) Cancel(ctx context.Context, tenant proto.Id, id string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, e := range f.pending {
		if e.ID == id && e.Tenant == tenant {
			f.pending = append(f.pending[:i:i], f.pending[i+1:]...)
			return true, nil
		}
	}
	return false, nil
}

func (f *fakeQueue) Pending(ctx context.Context, tenant proto.Id, scheduledOnly bool) ([]queue.Event, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []queue.Event
	for _, e := range f.pending {
		if e.Tenant == tenant && (!scheduledOnly || e.Scheduled) {
			out = append(out, e)
		}
	}
	return out, nil
}

func (f *fakeQueue) DeadLetters(ctx context.Context, tenant *proto.Id, after string, limit int) ([]queue.Event, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deadTenant, f.deadLimit, f.deadAfter = tenant, limit, after
	var out []queue.Event
	for _, e := range f.dead {
		if tenant == nil || e.Tenant == *tenant {
			out = append(out, e)
		}
	}
	return out, false, nil
}

func (f *fakeQueue) RetryDeadLetter(ctx context.Context, id string) (queue.Event, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, e := range f.dead {
		if e.ID == id {
			f.dead = append(f.dead[:i:i], f.dead[i+1:]...)
			e.DeadAt, e.Attempts, e.LastError = nil, 0, nil
			f.pending = append(f.pending, e)
			return e, nil
		}
	}
	return queue.Event{}, proto.Errorf(proto.CodeNotFound, "dead letter %q not found", id)
}

func (f *fakeQueue) DeleteDeadLetter(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, e := range f.dead {
		if e.ID == id {
			f.dead = append(f.dead[:i:i], f.dead[i+1:]...)
			return nil
		}
	}
	return proto.Errorf(proto.CodeNotFound, "dead letter %q not found", id)
}

func (f *fakeQueue) PendingCount(tenant proto.Id) int {
	l, _ := f.Pending(context.Background(), tenant, false)
	return len(l)
}

func (f *fakeQueue) Stats() queue.Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := queue.Stats{Pending: len(f.pending), PendingByWorker: map[int]int{}}
	for _, e := range f.pending {
		s.PendingByWorker[f.route(e.Tenant)]++
	}
	return s
}

// eventsAPI serves an API with a thread pool of 2 workers over a SQLite
// store and the fake queue, wired as Run wires the real one.
func eventsAPI(t *testing.T) (string, *fakeQueue, *API) {
	t.Helper()
	st := openTestStore(t)
	late := &lateQueue{}
	pool, err := newThreadPool(2, worker.Options{Store: threadStore(st, late, 0), Logger: zerolog.Nop(), NoStartup: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pool.Kill(context.Background()) })
	fq := &fakeQueue{route: func(id proto.Id) int { return id.WorkerID(2) }}
	late.Set(fq)
	q := NewQuarantine(3, time.Minute)
	a := &API{Store: st, Workers: pool, Quarantine: q, Token: "t", CallTimeout: 30 * time.Second,
		Log: zerolog.Nop(), Events: fq, Ready: st.Ping}
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(srv.Close)
	return srv.URL, fq, a
}

// call sends method path with body and returns the status and the decoded
// JSON answer.
func call(t *testing.T, base, method, path, body string) (int, map[string]any, http.Header) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer t")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(b) > 0 {
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("%s %s: answer %q is not JSON: %v", method, path, b, err)
		}
	}
	return resp.StatusCode, out, resp.Header
}

func errCode(out map[string]any) (string, string) {
	e, _ := out["error"].(map[string]any)
	c, _ := e["code"].(string)
	m, _ := e["message"].(string)
	return c, m
}

// TestDelayedEventRoutes: ?delay= and "deliver_at" commit the event due at
// that time and answer 202 with its id; bad values are 400 naming the
// problem.
func TestDelayedEventRoutes(t *testing.T) {
	base, fq, _ := eventsAPI(t)
	const path = "/v1/tenants/guild/1234567890123456789/events"
	ev := `{"name":"Remind","author":null,"data":{"what":"tea"}}`
	before := time.Now()
	status, out, _ := call(t, base, "POST", path+"?wait=false&delay=30s", ev)
	if status != 202 || out["accepted"] != true || out["id"] != "1" {
		t.Fatalf("delay=30s: %d %v", status, out)
	}
	if d := fq.pending[0].DeliverAt.Sub(before); d < 30*time.Second || d > 31*time.Second+time.Minute {
		t.Fatalf("due in %v, want 30s", d)
	}
	if string(fq.pending[0].Event.Data) != `{"what":"tea"}` || fq.pending[0].Scheduled {
		t.Fatalf("stored %+v", fq.pending[0])
	}
	status, out, _ = call(t, base, "POST", path+"?wait=false&delay=90", ev)
	if d := fq.pending[1].DeliverAt.Sub(before); status != 202 || d < 90*time.Second || d > 91*time.Second+time.Minute {
		t.Fatalf("delay=90: %d %v, due in %v", status, out, d)
	}
	at := time.Now().Add(2 * time.Hour).UTC().Truncate(time.Second)
	status, out, _ = call(t, base, "POST", path+"?wait=false",
		`{"name":"Remind","author":"42","data":1,"deliver_at":"`+at.Format(time.RFC3339)+`"}`)
	if status != 202 || !fq.pending[2].DeliverAt.Equal(at) || *fq.pending[2].Event.Author != "42" || out["deliver_at"] != at.Format(time.RFC3339) {
		t.Fatalf("deliver_at: %d %v, stored %+v", status, out, fq.pending[2])
	}
	// A time in the past is due now.
	status, _, _ = call(t, base, "POST", path+"?wait=false", `{"name":"Remind","deliver_at":"2001-01-01T00:00:00Z"}`)
	if status != 202 || fq.pending[3].DeliverAt.Before(before) {
		t.Fatalf("past deliver_at: %d, due %v", status, fq.pending[3].DeliverAt)
	}
	far := time.Now().Add(400 * 24 * time.Hour).UTC().Format(time.RFC3339)
	for _, c := range []struct{ query, body, want string }{
		{"?wait=false&delay=-5s", ev, "is negative"},
		{"?wait=false&delay=soon", ev, "want a duration such as 30s"},
		{"?wait=false&delay=NaN", ev, "want a duration such as 30s"},
		{"?wait=false&delay=9000h", ev, "more than one year"},
		{"?wait=false&delay=40000000", ev, "more than one year"},
		{"?delay=30s", ev, "need ?wait=false"},
		{"?wait=true&delay=30s", ev, "need ?wait=false"},
		{"", `{"name":"Remind","deliver_at":"2026-12-02T05:00:00Z"}`, "need ?wait=false"},
		{"?wait=false", `{"name":"Remind","deliver_at":"tomorrow"}`, "want an RFC 3339 time"},
		{"?wait=false", `{"name":"Remind","deliver_at":"2026-12-02 05:00"}`, "want an RFC 3339 time"},
		{"?wait=false", `{"name":"Remind","deliver_at":"` + far + `"}`, "more than one year ahead"},
		{"?wait=false&delay=1s", `{"name":"Remind","deliver_at":"2026-12-02T05:00:00Z"}`, "not both"},
		{"?wait=false&delay=1s", `{"name":"","data":1}`, "bad event"},
		{"?wait=false", `{"name":"Remind","deliver_at":5}`, "bad JSON body"},
	} {
		status, out, _ := call(t, base, "POST", path+c.query, c.body)
		code, msg := errCode(out)
		if status != 400 || code != proto.CodeBadRequest || !strings.Contains(msg, c.want) {
			t.Errorf("%s %s: %d %s %q, want 400 bad_request containing %q", c.query, c.body, status, code, msg, c.want)
		}
	}
	if len(fq.pending) != 4 {
		t.Fatalf("%d events stored, want 4", len(fq.pending))
	}
	// Past the tenant's bound: 503 backlog_full with Retry-After.
	fq.bound = 4
	status, out, h := call(t, base, "POST", path+"?wait=false&delay=1s", ev)
	if code, _ := errCode(out); status != 503 || code != proto.CodeBacklogFull || h.Get("Retry-After") == "" {
		t.Fatalf("past the bound: %d %v %v", status, out, h)
	}
}

// TestPendingAndDeadLetterRoutes: the pending list of a tenant, the dead
// letters (all, or of ?tenant=), retry and delete with their 404s and 400s.
func TestPendingAndDeadLetterRoutes(t *testing.T) {
	base, fq, _ := eventsAPI(t)
	g, u := proto.GuildID(1234567890123456789), proto.UserID(42)
	_, _ = fq.Accept(context.Background(), g, proto.Event{Name: "A", Data: proto.Value(`1`)}, time.Time{})
	_, _ = fq.Schedule(context.Background(), g, time.Now().Add(time.Hour), proto.Event{Name: "B", Data: proto.Null})
	_, _ = fq.Accept(context.Background(), u, proto.Event{Name: "C", Data: proto.Null}, time.Time{})
	dead := time.Now()
	fq.dead = []queue.Event{
		{ID: "10", Tenant: g, Event: proto.Event{Name: "Poison", Data: proto.Null}, Attempts: 5, DeadAt: &dead,
			LastError: proto.Errorf(proto.CodeCPULimit, "instruction limit exceeded")},
		{ID: "11", Tenant: u, Event: proto.Event{Name: "Poison", Data: proto.Null}, Attempts: 5, DeadAt: &dead},
	}

	for _, q := range []string{"guild:1234567890123456789", "guild/1234567890123456789", "Guild:1234567890123456789"} {
		status, out, _ := call(t, base, "GET", "/v1/events/pending?tenant="+q, "")
		list, _ := out["pending"].([]any)
		if status != 200 || len(list) != 2 || out["count"] != float64(2) {
			t.Fatalf("pending of %s: %d %v", q, status, out)
		}
	}
	status, out, _ := call(t, base, "GET", "/v1/events/pending?tenant=guild:1234567890123456789&scheduled=true", "")
	if list, _ := out["pending"].([]any); status != 200 || len(list) != 1 || list[0].(map[string]any)["scheduled"] != true {
		t.Fatalf("scheduled only: %d %v", status, out)
	}
	status, out, _ = call(t, base, "GET", "/v1/events/pending?tenant=user:7", "")
	if list, ok := out["pending"].([]any); status != 200 || !ok || len(list) != 0 {
		t.Fatalf("empty pending: %d %v", status, out)
	}
	for _, q := range []string{"", "?tenant=guild", "?tenant=guild:abc", "?tenant=team:1", "?tenant=guild:1&scheduled=maybe"} {
		status, out, _ := call(t, base, "GET", "/v1/events/pending"+q, "")
		if code, _ := errCode(out); status != 400 || code != proto.CodeBadRequest {
			t.Errorf("pending%s: %d %v, want 400", q, status, out)
		}
	}

	status, out, _ = call(t, base, "GET", "/v1/dead-letters", "")
	if list, _ := out["dead_letters"].([]any); status != 200 || len(list) != 2 || fq.deadTenant != nil || fq.deadLimit != 1000 {
		t.Fatalf("dead letters: %d %v", status, out)
	}
	if more, ok := out["more"].(bool); !ok || more {
		t.Fatalf("dead letters: more = %v, want false", out["more"])
	}
	status, out, _ = call(t, base, "GET", "/v1/dead-letters?tenant=user:42&limit=5&after=7", "")
	list, _ := out["dead_letters"].([]any)
	if status != 200 || len(list) != 1 || fq.deadTenant == nil || *fq.deadTenant != u || fq.deadLimit != 5 || fq.deadAfter != "7" {
		t.Fatalf("dead letters of user:42: %d %v", status, out)
	}
	if d := list[0].(map[string]any); d["id"] != "11" || d["attempts"] != float64(5) || d["dead_at"] == nil {
		t.Fatalf("dead letter: %v", d)
	}
	for _, q := range []string{"?tenant=nobody", "?limit=0", "?limit=x", "?limit=10001", "?after=x", "?after=-1"} {
		status, out, _ := call(t, base, "GET", "/v1/dead-letters"+q, "")
		if code, _ := errCode(out); status != 400 || code != proto.CodeBadRequest {
			t.Errorf("dead-letters%s: %d %v, want 400", q, status, out)
		}
	}

	status, out, _ = call(t, base, "POST", "/v1/dead-letters/10/retry", "")
	if r, _ := out["requeued"].(map[string]any); status != 200 || r["id"] != "10" || len(fq.dead) != 1 || fq.PendingCount(g) != 3 {
		t.Fatalf("retry: %d %v", status, out)
	}
	status, out, _ = call(t, base, "POST", "/v1/dead-letters/10/retry", "")
	if code, _ := errCode(out); status != 404 || code != proto.CodeNotFound {
		t.Fatalf("second retry: %d %v", status, out)
	}
	status, _, _ = call(t, base, "DELETE", "/v1/dead-letters/11", "")
	if status != 204 || len(fq.dead) != 0 {
		t.Fatalf("delete: %d, left %v", status, fq.dead)
	}
	status, out, _ = call(t, base, "DELETE", "/v1/dead-letters/11", "")
	if code, _ := errCode(out); status != 404 || code != proto.CodeNotFound {
		t.Fatalf("second delete: %d %v", status, out)
	}
	for _, p := range []string{"/v1/dead-letters/abc", "/v1/dead-letters/-1", "/v1/dead-letters/123456789012345678901"} {
		status, out, _ := call(t, base, "DELETE", p, "")
		if code, _ := errCode(out); status != 400 || code != proto.CodeBadRequest {
			t.Errorf("DELETE %s: %d %v, want 400", p, status, out)
		}
	}
	status, out, h := call(t, base, "GET", "/v1/dead-letters/10/retry", "")
	if status != 405 || h.Get("Allow") != "POST" {
		t.Fatalf("GET retry: %d %v %v", status, out, h)
	}
}

// TestWorkersShowPendingAndReadyzStaysUp: /v1/workers carries each
// worker's pending events, and a backlog does not make the master
// unready.
func TestWorkersShowPendingAndReadyzStaysUp(t *testing.T) {
	base, fq, _ := eventsAPI(t)
	// Tenants 1<<22 and 2<<22 route to workers 1 and 0 of 2.
	w1, w0 := proto.GuildID(1<<22), proto.GuildID(2<<22)
	for i := 0; i < 5; i++ {
		_, _ = fq.Accept(context.Background(), w1, proto.Event{Name: "A"}, time.Time{})
	}
	_, _ = fq.Schedule(context.Background(), w0, time.Now().Add(time.Hour), proto.Event{Name: "B"})
	status, out, _ := call(t, base, "GET", "/v1/workers", "")
	ws, _ := out["workers"].([]any)
	if status != 200 || len(ws) != 2 {
		t.Fatalf("workers: %d %v", status, out)
	}
	for _, w := range ws {
		m := w.(map[string]any)
		want := map[float64]float64{0: 1, 1: 5}[m["id"].(float64)]
		if m["pending"] != want {
			t.Fatalf("worker %v pending %v, want %v", m["id"], m["pending"], want)
		}
	}
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/readyz with a backlog of 6: %d", resp.StatusCode)
	}
}

// TestWorkerEventsThroughTheThreadStore: a thread worker's
// ctx.events calls reach the queue for the VM's tenant, through the
// master's checks.
func TestWorkerEventsThroughTheThreadStore(t *testing.T) {
	base, fq, a := eventsAPI(t)
	g := proto.GuildID(1234567890123456789)
	status, out, _ := call(t, base, "POST", "/v1/tenants/guild/1234567890123456789/scripts",
		`{"code":"local e, ctx = ... local id = ctx.events.schedule(60, 'Remind', {n = 1}) local l = ctx.events.list() return {id = id, n = #l, name = l[1].name, c = ctx.events.cancel(id), after = #ctx.events.list()}"}`)
	if status != 200 {
		t.Fatalf("script: %d %v", status, out)
	}
	r := out["result"].(map[string]any)
	if r["id"] != "1" || r["n"] != float64(1) || r["name"] != "Remind" || r["c"] != true || r["after"] != float64(0) {
		t.Fatalf("result %v", r)
	}
	fq.bound = 2
	status, out, _ = call(t, base, "POST", "/v1/tenants/guild/1234567890123456789/scripts",
		`{"code":"local e, ctx = ... for i = 1, 5 do ctx.events.schedule(60, 'Tick', i) end"}`)
	if code, msg := errCode(out); status != 503 || code != proto.CodeBacklogFull || !strings.Contains(msg, "ctx.events.schedule: backlog_full") {
		t.Fatalf("past the bound: %d %v", status, out)
	}
	if n := fq.PendingCount(g); n != 2 {
		t.Fatalf("%d pending, want 2", n)
	}
	_ = a
}

// TestProcessBackendChecksOwnership: a worker process's ctx.events calls
// are refused for a tenant not routed to it, and answered for its own.
func TestProcessBackendChecksOwnership(t *testing.T) {
	late := &lateQueue{}
	b := storeBackend{events: newWorkerEvents(late, 0), total: 2}
	ctx := context.Background()
	w1 := proto.GuildID(1 << 22) // routes to worker 1 of 2
	if _, err := b.ScheduleEvent(ctx, 1, w1, time.Now(), proto.Event{Name: "A"}); proto.CodeOf(err) != proto.CodeStoreUnavailable {
		t.Fatalf("before the queue is set: %v", err)
	}
	fq := &fakeQueue{route: func(id proto.Id) int { return id.WorkerID(2) }}
	late.Set(fq)
	if _, err := b.ScheduleEvent(ctx, 0, w1, time.Now(), proto.Event{Name: "A"}); proto.CodeOf(err) != proto.CodeBadRequest {
		t.Fatalf("worker 0 scheduled for worker 1's tenant: %v", err)
	}
	if _, err := b.CancelEvent(ctx, 0, w1, "1"); proto.CodeOf(err) != proto.CodeBadRequest {
		t.Fatalf("worker 0 cancelled for worker 1's tenant: %v", err)
	}
	if _, err := b.ScheduledEvents(ctx, 0, w1); proto.CodeOf(err) != proto.CodeBadRequest {
		t.Fatalf("worker 0 listed worker 1's tenant: %v", err)
	}
	author := "42"
	id, err := b.ScheduleEvent(ctx, 1, w1, time.Now().Add(time.Minute), proto.Event{Name: "A", Author: &author, ID: "99"})
	if err != nil || id != "1" || fq.pending[0].Event.Author != nil {
		t.Fatalf("own tenant: %q %v, stored %+v", id, err, fq.pending)
	}
	if _, err := b.ScheduleEvent(ctx, 1, w1, time.Now().Add(400*24*time.Hour), proto.Event{Name: "A"}); proto.CodeOf(err) != proto.CodeBadRequest {
		t.Fatalf("400 days ahead: %v", err)
	}
	list, err := b.ScheduledEvents(ctx, 1, w1)
	if err != nil || len(list) != 1 || list[0].ID != "1" || list[0].Event.ID != "" {
		t.Fatalf("list: %+v %v", list, err)
	}
	// A list over one frame is refused with a clear error.
	small := storeBackend{events: newWorkerEvents(late, 64<<10), total: 2}
	big := proto.Value(`"` + strings.Repeat("x", 40<<10) + `"`)
	_, _ = fq.Schedule(ctx, w1, time.Now().Add(time.Minute), proto.Event{Name: "Big", Data: big})
	_, _ = fq.Schedule(ctx, w1, time.Now().Add(time.Minute), proto.Event{Name: "Big", Data: big})
	if _, err := small.ScheduledEvents(ctx, 1, w1); proto.CodeOf(err) != proto.CodeKVResultTooLarge || !strings.Contains(err.Error(), "3 scheduled events") {
		t.Fatalf("list over a frame: %v", err)
	}
}

// TestCancelEventRoute: DELETE …/events/{id} cancels the tenant's own
// pending event (200), and answers 404 for one it does not have (another
// tenant's, or one already gone) and 400 for an id that is not one.
func TestCancelEventRoute(t *testing.T) {
	base, fq, _ := eventsAPI(t)
	g, u := proto.GuildID(1234567890123456789), proto.UserID(42)
	gid, _ := fq.Accept(context.Background(), g, proto.Event{Name: "A", Data: proto.Null}, time.Now().Add(time.Hour))
	uid, _ := fq.Schedule(context.Background(), u, time.Now().Add(time.Hour), proto.Event{Name: "B", Data: proto.Null})

	status, out, _ := call(t, base, "DELETE", "/v1/tenants/guild/1234567890123456789/events/"+uid, "")
	if code, msg := errCode(out); status != 404 || code != proto.CodeNotFound || !strings.Contains(msg, "has no pending event "+uid) {
		t.Fatalf("another tenant's event: %d %v", status, out)
	}
	status, out, _ = call(t, base, "DELETE", "/v1/tenants/guild/1234567890123456789/events/"+gid, "")
	if status != 200 || out["cancelled"] != true || out["id"] != gid {
		t.Fatalf("cancel: %d %v", status, out)
	}
	if n := fq.PendingCount(g); n != 0 {
		t.Fatalf("%d pending after the cancel", n)
	}
	if status, out, _ = call(t, base, "DELETE", "/v1/tenants/guild/1234567890123456789/events/"+gid, ""); status != 404 {
		t.Fatalf("cancel again: %d %v", status, out)
	}
	if status, out, _ = call(t, base, "DELETE", "/v1/tenants/user/42/events/"+uid, ""); status != 200 {
		t.Fatalf("cancel a scheduled event: %d %v", status, out)
	}
	for _, id := range []string{"abc", "-1", "1.5", strings.Repeat("9", 21)} {
		status, out, _ := call(t, base, "DELETE", "/v1/tenants/user/42/events/"+id, "")
		if code, msg := errCode(out); status != 400 || code != proto.CodeBadRequest || !strings.Contains(msg, "bad event id") {
			t.Errorf("id %q: %d %v", id, status, out)
		}
	}
}

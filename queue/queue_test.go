package queue

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/store"
)

// recorder is a fake worker: it records every delivery and answers with
// what fail returns (nil: ran fine).
type recorder struct {
	mu   sync.Mutex
	got  map[proto.Id][]string // event ids delivered, in order
	runs map[string]int        // deliveries per event id
	fail func(tenant proto.Id, ev proto.Event) error
}

func newRecorder() *recorder {
	return &recorder{got: map[proto.Id][]string{}, runs: map[string]int{}}
}

func (r *recorder) dispatch(ctx context.Context, tenant proto.Id, ev proto.Event) (proto.Value, error) {
	r.mu.Lock()
	f := r.fail
	r.mu.Unlock()
	if f != nil {
		if err := f(tenant, ev); err != nil {
			r.mu.Lock()
			r.runs[ev.ID]++
			r.mu.Unlock()
			return nil, err
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got[tenant] = append(r.got[tenant], ev.ID)
	r.runs[ev.ID]++
	return proto.Null, nil
}

func (r *recorder) delivered(tenant proto.Id) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got[tenant]...)
}

func (r *recorder) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, l := range r.got {
		n += len(l)
	}
	return n
}

func openStore(t *testing.T, dir string) *store.SQLite {
	t.Helper()
	st, err := store.OpenSQLite(context.Background(), filepath.Join(dir, "q.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func openQueue(t *testing.T, cfg Config) *Queue {
	t.Helper()
	q, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = q.Close(context.Background()) })
	return q
}

// waitFor polls cond until it holds, failing the test after a minute.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func ev(name string) proto.Event { return proto.Event{Name: name, Data: proto.Value(`{}`)} }

// ascending fails unless ids are increasing decimal numbers.
func ascending(t *testing.T, tenant proto.Id, ids []string) {
	t.Helper()
	last := int64(0)
	for _, id := range ids {
		n, err := strconv.ParseInt(id, 10, 64)
		if err != nil || n <= last {
			t.Fatalf("tenant %s: deliveries out of acceptance order: %v", tenant, ids)
		}
		last = n
	}
}

func TestAcceptDeliversInOrderPerTenant(t *testing.T) {
	rec := newRecorder()
	st := openStore(t, t.TempDir())
	q := openQueue(t, Config{Store: st, Dispatch: rec.dispatch, Concurrency: 8})
	const tenants, each = 20, 30
	var wg sync.WaitGroup
	accepted := make([][]string, tenants)
	for i := 0; i < tenants; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for j := 0; j < each; j++ {
				id, err := q.Accept(context.Background(), proto.GuildID(uint64(i+1)), ev("E"), time.Time{})
				if err != nil {
					t.Error(err)
					return
				}
				accepted[i] = append(accepted[i], id)
			}
		}(i)
	}
	wg.Wait()
	waitFor(t, "every event delivered", func() bool { return rec.total() == tenants*each })
	for i := 0; i < tenants; i++ {
		id := proto.GuildID(uint64(i + 1))
		got := rec.delivered(id)
		ascending(t, id, got)
		if fmt.Sprint(got) != fmt.Sprint(accepted[i]) {
			t.Fatalf("tenant %s delivered %v, accepted %v", id, got, accepted[i])
		}
	}
	waitFor(t, "the queue empty", func() bool { return q.Stats().Pending == 0 })
	// Deleted from the store once delivered (the deletion is committed
	// before the tenant is served again, or at close).
	if err := q.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	backlog, err := st.EventBacklog(context.Background())
	if err != nil || len(backlog) != 0 {
		t.Fatalf("store still holds %+v, %v", backlog, err)
	}
	if s := q.Stats(); s.Delivered != tenants*each {
		t.Fatalf("stats: %+v", s)
	}
}

// gatedStore holds the first commit until release is closed.
type gatedStore struct {
	*store.SQLite
	first   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (g *gatedStore) CommitEvents(ctx context.Context, b store.EventBatch) ([]int64, error) {
	if !g.first.Swap(true) {
		close(g.entered)
		<-g.release
	}
	return g.SQLite.CommitEvents(ctx, b)
}

func TestGroupCommitBatchesConcurrentAccepts(t *testing.T) {
	rec := newRecorder()
	// No delivery (so no deletion commit) until the accepts are counted.
	var hold atomic.Bool
	hold.Store(true)
	rec.fail = func(proto.Id, proto.Event) error {
		if hold.Load() {
			return proto.Errorf(proto.CodeWorkerOverloaded, "busy")
		}
		return nil
	}
	g := &gatedStore{SQLite: openStore(t, t.TempDir()), entered: make(chan struct{}), release: make(chan struct{})}
	q := openQueue(t, Config{Store: g, Dispatch: rec.dispatch})
	go func() { _, _ = q.Accept(context.Background(), proto.GuildID(1), ev("First"), time.Time{}) }()
	<-g.entered
	const n = 200
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if _, err := q.Accept(context.Background(), proto.GuildID(uint64(i+2)), ev("E"), time.Time{}); err != nil {
				t.Error(err)
			}
		}(i)
	}
	waitFor(t, "the accepts queued behind the first commit", func() bool { return len(q.writes) == n })
	close(g.release)
	wg.Wait()
	// The 200 accepts that arrived during the first commit share one more.
	if c := q.commits.Load(); c != 2 {
		t.Fatalf("%d commits for %d accepts, want 2", c, n+1)
	}
	hold.Store(false)
	waitFor(t, "every event delivered", func() bool { return rec.total() == n+1 })
}

// failPoison fails the events named Poison with a fatal limit.
func failPoison(_ proto.Id, e proto.Event) error {
	if e.Name == "Poison" {
		return proto.Errorf(proto.CodeCPULimit, "instruction limit")
	}
	return nil
}

func TestPoisonEventDeadLetteredNeighboursDelivered(t *testing.T) {
	rec := newRecorder()
	rec.fail = failPoison
	st := openStore(t, t.TempDir())
	q := openQueue(t, Config{Store: st, Dispatch: rec.dispatch, MaxAttempts: 3, RetryBackoff: time.Millisecond, RetryBackoffMax: 2 * time.Millisecond})
	ctx := context.Background()
	bad, other := proto.GuildID(1), proto.GuildID(2)
	before, _ := q.Accept(ctx, bad, ev("Before"), time.Time{})
	poison, _ := q.Accept(ctx, bad, ev("Poison"), time.Time{})
	after, _ := q.Accept(ctx, bad, ev("After"), time.Time{})
	neighbour, _ := q.Accept(ctx, other, ev("N"), time.Time{})
	waitFor(t, "the tenant's later event delivered", func() bool { return len(rec.delivered(bad)) == 2 })
	waitFor(t, "the neighbour's event delivered", func() bool { return len(rec.delivered(other)) == 1 })
	if got := rec.delivered(bad); got[0] != before || got[1] != after {
		t.Fatalf("delivered %v, want %s then %s", got, before, after)
	}
	if got := rec.delivered(other); len(got) != 1 || got[0] != neighbour {
		t.Fatalf("neighbour delivered %v", got)
	}
	rec.mu.Lock()
	runs := rec.runs[poison]
	rec.mu.Unlock()
	if runs != 3 {
		t.Fatalf("poison event tried %d times, want exactly --event-max-attempts = 3", runs)
	}
	dl, _, err := q.DeadLetters(ctx, &bad, "", 0)
	if err != nil || len(dl) != 1 || dl[0].ID != poison || dl[0].Attempts != 3 || dl[0].LastError == nil ||
		dl[0].LastError.Code != proto.CodeCPULimit || dl[0].DeadAt == nil || dl[0].Event.Name != "Poison" {
		t.Fatalf("dead letters = %+v, %v", dl, err)
	}
	if s := q.Stats(); s.DeadLettered != 1 || s.Retried != 2 || s.Pending != 0 {
		t.Fatalf("stats = %+v", s)
	}
	// Fixed: a retry from the dead-letter table delivers it.
	rec.mu.Lock()
	rec.fail = nil
	rec.mu.Unlock()
	if _, err := q.RetryDeadLetter(ctx, poison); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the retried dead letter delivered", func() bool { return len(rec.delivered(bad)) == 3 })
	if got := rec.delivered(bad); got[2] != poison {
		t.Fatalf("delivered %v", got)
	}
	if dl, _, err := q.DeadLetters(ctx, nil, "", 0); err != nil || len(dl) != 0 {
		t.Fatalf("dead letters after retry = %+v, %v", dl, err)
	}
	if _, err := q.RetryDeadLetter(ctx, poison); proto.CodeOf(err) != proto.CodeNotFound {
		t.Fatalf("retry of a missing dead letter: %v", err)
	}
	if err := q.DeleteDeadLetter(ctx, "12345"); proto.CodeOf(err) != proto.CodeNotFound {
		t.Fatalf("delete of a missing dead letter: %v", err)
	}
}

func TestBacklogSurvivesRestartInOrder(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir)
	var block atomic.Bool
	block.Store(true)
	rec := newRecorder()
	rec.fail = func(proto.Id, proto.Event) error {
		if block.Load() {
			return proto.Errorf(proto.CodeWorkerOverloaded, "busy")
		}
		return nil
	}
	q := openQueue(t, Config{Store: st, Dispatch: rec.dispatch})
	ctx := context.Background()
	tenant := proto.UserID(7)
	var ids []string
	for i := 0; i < 100; i++ {
		id, err := q.Accept(ctx, tenant, ev("Old"), time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := q.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Accept(ctx, tenant, ev("Late"), time.Time{}); proto.CodeOf(err) != proto.CodeShuttingDown {
		t.Fatalf("accept after close: %v", err)
	}
	// The restarted queue's deliveries wait (block) until its backlog has
	// been counted and a new event accepted behind it: its deliverers start
	// with Open and would otherwise drain some of it first.
	rec2 := newRecorder()
	rec2.fail = rec.fail
	q2 := openQueue(t, Config{Store: openStore(t, dir), Dispatch: rec2.dispatch})
	if n := q2.PendingCount(tenant); n != 100 {
		t.Fatalf("restarted queue has %d pending, want 100", n)
	}
	id, err := q2.Accept(ctx, tenant, ev("New"), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	ids = append(ids, id)
	block.Store(false)
	waitFor(t, "backlog and new event delivered", func() bool { return len(rec2.delivered(tenant)) == 101 })
	if got := rec2.delivered(tenant); fmt.Sprint(got) != fmt.Sprint(ids) {
		t.Fatalf("after restart delivered %v\nwant %v", got, ids)
	}
}

func TestBacklogBounds(t *testing.T) {
	rec := newRecorder()
	rec.fail = func(proto.Id, proto.Event) error { return proto.Errorf(proto.CodeWorkerOverloaded, "busy") }
	q := openQueue(t, Config{Store: openStore(t, t.TempDir()), Dispatch: rec.dispatch, BacklogTenant: 3, BacklogMax: 5,
		BacklogTenantBytes: 1000, BacklogBytesFlag: "--test-bytes"})
	ctx := context.Background()
	a, b, c := proto.GuildID(1), proto.GuildID(2), proto.GuildID(3)
	for i := 0; i < 3; i++ {
		if _, err := q.Accept(ctx, a, ev("E"), time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := q.Accept(ctx, a, ev("E"), time.Time{})
	if pe := proto.AsError(err); pe == nil || pe.Code != proto.CodeBacklogFull || pe.RetryAfter <= 0 {
		t.Fatalf("past the tenant bound: %v", err)
	}
	for i := 0; i < 2; i++ {
		if _, err := q.Accept(ctx, b, ev("E"), time.Time{}); err != nil {
			t.Fatalf("neighbour refused: %v", err)
		}
	}
	if _, err := q.Accept(ctx, c, ev("E"), time.Time{}); proto.CodeOf(err) != proto.CodeBacklogFull {
		t.Fatalf("past the total bound: %v", err)
	}
	big := proto.Event{Name: "Big", Data: proto.Value(`"` + string(make([]byte, 0)) + fmt.Sprintf("%01000d", 0) + `"`)}
	if _, err := q.Accept(ctx, proto.GuildID(9), big, time.Time{}); proto.CodeOf(err) != proto.CodeBacklogFull {
		t.Fatalf("past the byte bound: %v", err)
	}
	if s := q.Stats(); s.Pending != 5 || s.PendingByWorker[0] != 5 {
		t.Fatalf("stats = %+v", s)
	}
	// Delivered events free their room; nothing accepted was dropped.
	rec.mu.Lock()
	rec.fail = nil
	rec.mu.Unlock()
	waitFor(t, "every accepted event delivered", func() bool { return rec.total() == 5 })
	waitFor(t, "room again", func() bool { return q.PendingCount(a) == 0 })
	if _, err := q.Accept(ctx, a, ev("E"), time.Time{}); err != nil {
		t.Fatalf("after the drain: %v", err)
	}
}

func TestQuarantinedTenantWaits(t *testing.T) {
	rec := newRecorder()
	var quarantined atomic.Bool
	quarantined.Store(true)
	bad, good := proto.GuildID(1), proto.GuildID(2)
	q := openQueue(t, Config{Store: openStore(t, t.TempDir()), Dispatch: rec.dispatch,
		Quarantined: func(id proto.Id) error {
			if id == bad && quarantined.Load() {
				return &proto.Error{Code: proto.CodeTenantQuarantined, RetryAfter: 1, Message: "quarantined"}
			}
			return nil
		}})
	ctx := context.Background()
	if _, err := q.Accept(ctx, bad, ev("E"), time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Accept(ctx, good, ev("E"), time.Time{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the neighbour delivered", func() bool { return len(rec.delivered(good)) == 1 })
	if n := len(rec.delivered(bad)); n != 0 || q.PendingCount(bad) != 1 {
		t.Fatalf("quarantined tenant: %d delivered, %d pending", n, q.PendingCount(bad))
	}
	quarantined.Store(false)
	waitFor(t, "the quarantined tenant's event delivered once the quarantine ended", func() bool { return len(rec.delivered(bad)) == 1 })
}

func TestDelayedEventsPendingAndCancel(t *testing.T) {
	rec := newRecorder()
	q := openQueue(t, Config{Store: openStore(t, t.TempDir()), Dispatch: rec.dispatch})
	ctx := context.Background()
	tenant := proto.GuildID(5)
	later, err := q.Schedule(ctx, tenant, time.Now().Add(time.Hour), ev("Later"))
	if err != nil {
		t.Fatal(err)
	}
	soon, err := q.Accept(ctx, tenant, ev("Soon"), time.Now().Add(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	now, err := q.Accept(ctx, tenant, ev("Now"), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	// The delayed event runs once due, not blocking the immediate one.
	waitFor(t, "the due events delivered", func() bool { return len(rec.delivered(tenant)) == 2 })
	if got := rec.delivered(tenant); got[0] != now || got[1] != soon {
		t.Fatalf("delivered %v, want %s then %s", got, now, soon)
	}
	pend, err := q.Pending(ctx, tenant, true)
	if err != nil || len(pend) != 1 || pend[0].ID != later || !pend[0].Scheduled || pend[0].Event.ID != later {
		t.Fatalf("scheduled pending = %+v, %v", pend, err)
	}
	if ok, err := q.Cancel(ctx, proto.GuildID(6), later); err != nil || ok {
		t.Fatalf("cancel by another tenant = %v, %v", ok, err)
	}
	if ok, err := q.Cancel(ctx, tenant, later); err != nil || !ok {
		t.Fatalf("cancel = %v, %v", ok, err)
	}
	if ok, _ := q.Cancel(ctx, tenant, later); ok {
		t.Fatal("cancelled twice")
	}
	if n := q.PendingCount(tenant); n != 0 {
		t.Fatalf("%d pending after cancel", n)
	}
	if _, err := q.Accept(ctx, tenant, ev("Far"), time.Now().Add(2*MaxDelay)); proto.CodeOf(err) != proto.CodeBadRequest {
		t.Fatalf("too far ahead: %v", err)
	}
	if s := q.Stats(); s.Scheduled != 1 {
		t.Fatalf("stats = %+v", s)
	}
}

func TestCancelQueuedImmediateEvent(t *testing.T) {
	rec := newRecorder()
	var hold atomic.Bool
	hold.Store(true)
	rec.fail = func(proto.Id, proto.Event) error {
		if hold.Load() {
			return proto.Errorf(proto.CodeWorkerOverloaded, "busy")
		}
		return nil
	}
	q := openQueue(t, Config{Store: openStore(t, t.TempDir()), Dispatch: rec.dispatch})
	ctx := context.Background()
	tenant := proto.GuildID(3)
	a, _ := q.Accept(ctx, tenant, ev("A"), time.Time{})
	b, _ := q.Accept(ctx, tenant, ev("B"), time.Time{})
	c, _ := q.Accept(ctx, tenant, ev("C"), time.Time{})
	waitFor(t, "a delivery attempt", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return rec.runs[a] > 0
	})
	if ok, err := q.Cancel(ctx, tenant, b); err != nil || !ok {
		t.Fatalf("cancel = %v, %v", ok, err)
	}
	hold.Store(false)
	waitFor(t, "the rest delivered", func() bool { return len(rec.delivered(tenant)) == 2 })
	if got := rec.delivered(tenant); got[0] != a || got[1] != c {
		t.Fatalf("delivered %v, want %s and %s (not the cancelled %s)", got, a, c, b)
	}
	waitFor(t, "nothing pending", func() bool { return q.PendingCount(tenant) == 0 })
	if ok, _ := q.Cancel(ctx, tenant, a); ok {
		t.Fatal("cancelled a delivered event")
	}
}

// TestRestartLoadsOwnedTenantsOnly: a master of a cluster resumes the
// backlog of its own shards and leaves the others' to their owner.
func TestRestartLoadsOwnedTenantsOnly(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir)
	ctx := context.Background()
	mine, theirs := proto.GuildID(1), proto.GuildID(2)
	now := time.Now()
	if _, err := st.CommitEvents(ctx, store.EventBatch{Add: []store.EventRecord{
		{Tenant: mine, Event: ev("M"), AcceptedAt: now, DeliverAt: now},
		{Tenant: theirs, Event: ev("T"), AcceptedAt: now, DeliverAt: now},
	}}); err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	q := openQueue(t, Config{Store: st, Dispatch: rec.dispatch, Owns: func(id proto.Id) bool { return id == mine }})
	// Mine may already be delivered (delivery starts at once); theirs is
	// never loaded.
	if q.PendingCount(theirs) != 0 || q.Stats().Pending > 1 {
		t.Fatalf("loaded %d of theirs, %d in all", q.PendingCount(theirs), q.Stats().Pending)
	}
	waitFor(t, "the owned tenant's event delivered", func() bool { return len(rec.delivered(mine)) == 1 })
	if err := q.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(rec.delivered(theirs)); n != 0 {
		t.Fatalf("delivered %d events of a tenant this master does not own", n)
	}
	left, err := st.EventBacklog(ctx)
	if err != nil || len(left) != 1 || left[0].Tenant != theirs {
		t.Fatalf("backlog left for the owner: %+v, %v", left, err)
	}
}

// TestCacheOverflowKeepsOrder: a tenant's events beyond what its cache
// holds are read from the store, after the cached ones, in order, none
// twice.
func TestCacheOverflowKeepsOrder(t *testing.T) {
	rec := newRecorder()
	gate := make(chan struct{})
	var first atomic.Bool
	rec.fail = func(proto.Id, proto.Event) error {
		if !first.Swap(true) {
			<-gate // the first delivery waits until every event is accepted
		}
		return nil
	}
	q := openQueue(t, Config{Store: openStore(t, t.TempDir()), Dispatch: rec.dispatch})
	ctx := context.Background()
	tenant := proto.GuildID(11)
	var ids []string
	for i := 0; i < 3*cacheEvents; i++ {
		id, err := q.Accept(ctx, tenant, ev("E"), time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	close(gate)
	waitFor(t, "every event delivered", func() bool { return len(rec.delivered(tenant)) >= len(ids) })
	waitFor(t, "nothing pending", func() bool { return q.PendingCount(tenant) == 0 })
	if got := rec.delivered(tenant); fmt.Sprint(got) != fmt.Sprint(ids) {
		t.Fatalf("delivered %d events %v\nwant %d %v", len(got), got, len(ids), ids)
	}
	// Empty again: served from the cache again, and still in order.
	more, _ := q.Accept(ctx, tenant, ev("E"), time.Time{})
	waitFor(t, "the next event delivered", func() bool { return len(rec.delivered(tenant)) == len(ids)+1 })
	if got := rec.delivered(tenant); got[len(ids)] != more {
		t.Fatalf("last delivered %s, want %s", got[len(ids)], more)
	}
	q.mu.Lock()
	cached := q.cached
	q.mu.Unlock()
	if cached != 0 {
		t.Fatalf("%d bytes left in the caches", cached)
	}
}

// downStore fails every commit while down is set.
type downStore struct {
	*store.SQLite
	down atomic.Bool
}

func (d *downStore) CommitEvents(ctx context.Context, b store.EventBatch) ([]int64, error) {
	if d.down.Load() {
		return nil, proto.Errorf(proto.CodeStoreUnavailable, "sqlite commit: disk I/O error")
	}
	return d.SQLite.CommitEvents(ctx, b)
}

func TestStoreThatCannotCommitRefuses(t *testing.T) {
	rec := newRecorder()
	ds := &downStore{SQLite: openStore(t, t.TempDir())}
	ds.down.Store(true)
	q := openQueue(t, Config{Store: ds, Dispatch: rec.dispatch})
	ctx := context.Background()
	_, err := q.Accept(ctx, proto.GuildID(1), ev("E"), time.Time{})
	if proto.CodeOf(err) != proto.CodeStoreUnavailable {
		t.Fatalf("accept with the store down: %v", err)
	}
	if s := q.Stats(); s.Pending != 0 || q.PendingCount(proto.GuildID(1)) != 0 {
		t.Fatalf("a refused event is counted: %+v", s)
	}
	ds.down.Store(false)
	id, err := q.Accept(ctx, proto.GuildID(1), ev("E"), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "delivery once the store is back", func() bool { return len(rec.delivered(proto.GuildID(1))) == 1 })
	if got := rec.delivered(proto.GuildID(1)); got[0] != id {
		t.Fatalf("delivered %v, want %s", got, id)
	}
}

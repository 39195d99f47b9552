package queue

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/templateworker/templateworker/proto"
)

// windowed is a fake pipelining worker over a recorder: it runs a
// window's events in order through the recorder and answers not_run for
// those after one whose error proto.StopsWindow, as a process worker does.
// Until open is closed, every delivery waits for it.
type windowed struct {
	*recorder
	open    chan struct{}
	mu      sync.Mutex
	sizes   []int // the windows' sizes, in delivery order
	notRuns int
}

func newWindowed() *windowed { return &windowed{recorder: newRecorder(), open: make(chan struct{})} }

func (w *windowed) dispatch(ctx context.Context, tenant proto.Id, ev proto.Event) (proto.Value, error) {
	<-w.open
	return w.recorder.dispatch(ctx, tenant, ev)
}

func (w *windowed) window(ctx context.Context, tenant proto.Id, evs []proto.Event) []error {
	<-w.open
	w.mu.Lock()
	w.sizes = append(w.sizes, len(evs))
	w.mu.Unlock()
	errs := make([]error, len(evs))
	stopped := false
	for i, e := range evs {
		if stopped {
			errs[i] = proto.Errorf(proto.CodeNotRun, "not run")
			w.mu.Lock()
			w.notRuns++
			w.mu.Unlock()
			continue
		}
		_, errs[i] = w.recorder.dispatch(ctx, tenant, e)
		stopped = errs[i] != nil && proto.StopsWindow(proto.CodeOf(errs[i]))
	}
	return errs
}

func (w *windowed) stats() (maxSize, notRuns int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, n := range w.sizes {
		maxSize = max(maxSize, n)
	}
	return maxSize, w.notRuns
}

func TestWindowDeliversInOrder(t *testing.T) {
	w := newWindowed()
	st := openStore(t, t.TempDir())
	q := openQueue(t, Config{Store: st, Dispatch: w.dispatch, DispatchWindow: w.window, Concurrency: 4})
	ctx := context.Background()
	const tenants, each = 5, 50
	var accepted [tenants][]string
	for range each {
		for k := range tenants {
			id, err := q.Accept(ctx, proto.GuildID(uint64(k+1)), ev("E"), time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			accepted[k] = append(accepted[k], id)
		}
	}
	close(w.open) // the first deliveries waited: the rest piled up behind them
	waitFor(t, "every event delivered", func() bool { return w.total() == tenants*each })
	for k := range tenants {
		tenant := proto.GuildID(uint64(k + 1))
		got := w.delivered(tenant)
		ascending(t, tenant, got)
		if len(got) != each || got[0] != accepted[k][0] || got[each-1] != accepted[k][each-1] {
			t.Fatalf("tenant %d delivered %v", k+1, got)
		}
	}
	if maxSize, _ := w.stats(); maxSize < 2 || maxSize > windowSize {
		t.Fatalf("largest window %d events, want 2..%d: the deliveries were not pipelined", maxSize, windowSize)
	}
	if s := q.Stats(); s.Delivered != tenants*each || s.Pending != 0 || s.Retried != 0 {
		t.Fatalf("stats = %+v", s)
	}
}

// The poison event of a window stops its successors until it is
// dead-lettered after exactly MaxAttempts tries (not_run counts none);
// then they are delivered, once each, in order.
func TestWindowPoisonStopsSuccessors(t *testing.T) {
	w := newWindowed()
	w.fail = failPoison
	st := openStore(t, t.TempDir())
	q := openQueue(t, Config{Store: st, Dispatch: w.dispatch, DispatchWindow: w.window, MaxAttempts: 3,
		RetryBackoff: time.Millisecond, RetryBackoffMax: 2 * time.Millisecond})
	ctx := context.Background()
	bad, other := proto.GuildID(1), proto.GuildID(2)
	var ids []string
	for _, name := range []string{"A", "B", "Poison", "C", "D", "E"} {
		id, err := q.Accept(ctx, bad, ev(name), time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	neighbour, _ := q.Accept(ctx, other, ev("N"), time.Time{})
	close(w.open)
	waitFor(t, "the tenant's other events delivered", func() bool { return len(w.delivered(bad)) == 5 })
	waitFor(t, "the neighbour's event delivered", func() bool { return len(w.delivered(other)) == 1 })
	want := []string{ids[0], ids[1], ids[3], ids[4], ids[5]}
	got := w.delivered(bad)
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("delivered %v, want %v", got, want)
		}
	}
	if got := w.delivered(other); got[0] != neighbour {
		t.Fatalf("neighbour delivered %v", got)
	}
	w.mu.Lock()
	runs := map[string]int{}
	for k, v := range w.runs {
		runs[k] = v
	}
	w.mu.Unlock()
	if runs[ids[2]] != 3 {
		t.Fatalf("poison event tried %d times, want exactly MaxAttempts = 3", runs[ids[2]])
	}
	for _, id := range want {
		if runs[id] != 1 {
			t.Fatalf("event %s ran %d times, want once (runs %v)", id, runs[id], runs)
		}
	}
	if _, notRuns := w.stats(); notRuns == 0 {
		t.Fatal("no event was answered not_run: the poison event was never in a window with its successors")
	}
	dl, _, err := q.DeadLetters(ctx, &bad, "", 0)
	if err != nil || len(dl) != 1 || dl[0].ID != ids[2] || dl[0].Attempts != 3 || dl[0].LastError.Code != proto.CodeCPULimit {
		t.Fatalf("dead letters = %+v, %v", dl, err)
	}
	if s := q.Stats(); s.DeadLettered != 1 || s.Retried != 2 || s.Pending != 0 {
		t.Fatalf("stats = %+v", s)
	}
}

// An event that must wait (the worker overloaded) stops its window: its
// successors are not_run and, like it, counted no attempt.
func TestWindowWaitCountsNoAttempt(t *testing.T) {
	w := newWindowed()
	var mu sync.Mutex
	refusals := 3
	w.fail = func(_ proto.Id, e proto.Event) error {
		mu.Lock()
		defer mu.Unlock()
		if e.Name == "Busy" && refusals > 0 {
			refusals--
			return proto.Errorf(proto.CodeWorkerOverloaded, "queue full")
		}
		return nil
	}
	st := openStore(t, t.TempDir())
	q := openQueue(t, Config{Store: st, Dispatch: w.dispatch, DispatchWindow: w.window, MaxAttempts: 1})
	ctx := context.Background()
	tenant := proto.GuildID(7)
	var ids []string
	for _, name := range []string{"A", "Busy", "B", "C"} {
		id, _ := q.Accept(ctx, tenant, ev(name), time.Time{})
		ids = append(ids, id)
	}
	close(w.open)
	waitFor(t, "every event delivered", func() bool { return len(w.delivered(tenant)) == 4 })
	got := w.delivered(tenant)
	for i := range ids {
		if got[i] != ids[i] {
			t.Fatalf("delivered %v, want %v", got, ids)
		}
	}
	if _, notRuns := w.stats(); notRuns == 0 {
		t.Fatal("no event was answered not_run")
	}
	if s := q.Stats(); s.DeadLettered != 0 || s.Retried != 0 || s.Pending != 0 {
		t.Fatalf("stats = %+v: a wait or a not_run counted as an attempt", s)
	}
}

// The codes that stop a window are exactly those the queue delivers
// again.
func TestStopsWindowMatchesClassify(t *testing.T) {
	codes := []string{proto.CodeBadRequest, proto.CodeScriptError, proto.CodeCompileError, proto.CodeTenantBroken,
		proto.CodeWorkerOverloaded, proto.CodeWorkerUnavailable, proto.CodeTimeout, proto.CodeCPULimit, proto.CodeMemoryLimit,
		proto.CodeStackOverflow, proto.CodeTenantQuarantined, proto.CodeStoreUnavailable, proto.CodeKVQuotaExceeded,
		proto.CodeInvalidKV, proto.CodeShuttingDown, proto.CodeShardUnavailable, proto.CodeInternal, proto.CodeResultTooLarge,
		proto.CodeKVResultTooLarge, proto.CodeTemplateTooLarge, proto.CodeBacklogFull, proto.CodeNotRun}
	for _, c := range codes {
		redelivered := Classify(proto.Errorf(c, "x")) != Delivered
		if redelivered != proto.StopsWindow(c) {
			t.Errorf("code %s: redelivered %v, stops a window %v", c, redelivered, proto.StopsWindow(c))
		}
	}
	if Classify(proto.Errorf(proto.CodeNotRun, "x")) != Wait {
		t.Error("not_run must wait, no attempt counted")
	}
}

package worker

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
)

// gateStore is a memStore whose KvGet of the key "gate" blocks until
// release is closed: a call that reads it is running, deterministically,
// for as long as the test wants, with no CPU-bound loop and no time budget.
type gateStore struct {
	*memStore
	entered chan struct{} // receives once per call that reached the gate
	release chan struct{}
}

func (s *gateStore) KvGet(ctx context.Context, id proto.Id, key string) (json.RawMessage, bool, error) {
	if key != "gate" {
		return s.memStore.KvGet(ctx, id, key)
	}
	s.entered <- struct{}{}
	select {
	case <-s.release:
		return nil, false, nil
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
}

func TestTryDispatchEventRunsInlineOnlyWhenIdle(t *testing.T) {
	s := &gateStore{memStore: newMemStore(), entered: make(chan struct{}, 1), release: make(chan struct{})}
	g := proto.GuildID(1)
	s.put(g, "greet", `local event = ... return { hello = event.data.who }`, "Ping")
	s.put(g, "wait", `local event, ctx = ... return ctx.kv.get("gate") == nil`, "Wait")
	ctx := context.Background()
	ping := proto.Event{Name: "Ping", Data: proto.Value(`{"who":"ops"}`)}
	// No time budget takes part: the blocked call ends when the test
	// releases it, however slow the machine.
	limits := DefaultLimits
	limits.Timeout = 0

	w, err := New(0, 1, Options{Store: s, Limits: limits, Logger: zerolog.Nop(), NoStartup: true})
	if err != nil {
		t.Fatal(err)
	}
	// A tenant's first call (its VM not built) never runs inline.
	if _, ran, _ := w.TryDispatchEvent(ctx, g, ping); ran {
		t.Fatal("a cold tenant's call ran inline")
	}
	if _, err := w.DispatchEvent(ctx, g, ping); err != nil {
		t.Fatal(err)
	}
	v, ran, err := w.TryDispatchEvent(ctx, g, ping)
	if !ran || err != nil || string(v) != `{"greet":{"hello":"ops"}}` {
		t.Fatalf("idle worker: ran %v, %s, %v", ran, v, err)
	}
	if w.Loaded() != 1 {
		t.Fatalf("Loaded() = %d after an inline dispatch, want 1", w.Loaded())
	}

	// While a queued call runs, nothing runs inline: the VMs are busy and
	// order must hold. The call is held at the gate until the check is done.
	done := make(chan error, 1)
	go func() {
		_, err := w.DispatchEvent(ctx, g, proto.Event{Name: "Wait", Data: proto.Value(`{}`)})
		done <- err
	}()
	select {
	case <-s.entered:
	case err := <-done:
		t.Fatalf("the gated call ended before reaching the gate: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("the gated call never reached the gate")
	}
	if _, ran, _ := w.TryDispatchEvent(ctx, g, ping); ran {
		t.Fatal("TryDispatchEvent ran while a queued call was running")
	}
	close(s.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The worker goroutine finishes its bookkeeping just after replying:
	// wait for the condition, with a generous limit.
	deadline := time.Now().Add(time.Minute)
	for ran := false; !ran; {
		if time.Now().After(deadline) {
			t.Fatal("the worker never became idle again")
		}
		var err error
		if _, ran, err = w.TryDispatchEvent(ctx, g, ping); ran && err != nil {
			t.Fatalf("idle again: %v", err)
		}
		if !ran {
			time.Sleep(time.Millisecond)
		}
	}

	if err := w.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ran, _ := w.TryDispatchEvent(ctx, g, ping); ran {
		t.Fatal("a killed worker ran an event")
	}
	if _, err := w.DispatchEvent(ctx, g, ping); proto.CodeOf(err) != proto.CodeWorkerUnavailable {
		t.Fatalf("killed worker: %v, want worker_unavailable", err)
	}
}

// TestThreadQueueFullIsOverloaded: while the worker is busy, its bounded
// queue fills and the next message fails at once with worker_overloaded
// (Retry-After set) instead of blocking; the queued ones still run.
func TestThreadQueueFullIsOverloaded(t *testing.T) {
	s := &gateStore{memStore: newMemStore(), entered: make(chan struct{}, 1), release: make(chan struct{})}
	g := proto.GuildID(1)
	s.put(g, "wait", `local event, ctx = ... return ctx.kv.get("gate") == nil`, "Wait")
	s.put(g, "mark", `local event, ctx = ... ctx.kv.set("ran:" .. event.data.n, true)`, "Mark")
	limits := DefaultLimits
	limits.Timeout = 0
	// A tenant may hold a quarter of the queue: four tenants fill it.
	others := []proto.Id{proto.GuildID(2), proto.GuildID(3), proto.GuildID(4)}
	for _, o := range others {
		s.put(o, "mark", `local event, ctx = ... ctx.kv.set("ran:" .. event.data.n, true)`, "Mark")
	}
	w, err := New(0, 1, Options{Store: s, Limits: limits, QueueSize: 8, Concurrency: 1, Logger: zerolog.Nop(), NoStartup: true}) // one slot: the gate holds the worker
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t.Cleanup(func() { _ = w.Kill(ctx) })
	done := make(chan error, 1)
	go func() {
		_, err := w.DispatchEvent(ctx, g, proto.Event{Name: "Wait", Data: proto.Value(`{}`)})
		done <- err
	}()
	select {
	case <-s.entered:
	case <-time.After(time.Minute):
		t.Fatal("the gated call never reached the gate")
	}
	for _, id := range append([]proto.Id{g}, others...) {
		for i := 0; i < 2; i++ {
			if err := w.DispatchEventNoWait(id, proto.Event{Name: "Mark", Data: proto.Value(`{"n":` + itoa(i) + `}`)}); err != nil {
				t.Fatalf("nowait %d of %s into a queue of 8: %v", i, id, err)
			}
		}
	}
	// The worker goroutine may hold one of them, taken from the queue while
	// it waits for the gated call: one more message fits then.
	err = w.DispatchEventNoWait(proto.GuildID(5), proto.Event{Name: "Mark", Data: proto.Value(`{"n":9}`)})
	if err == nil {
		err = w.DispatchEventNoWait(proto.GuildID(6), proto.Event{Name: "Mark", Data: proto.Value(`{"n":9}`)})
	}
	if pe := proto.AsError(err); pe == nil || pe.Code != proto.CodeWorkerOverloaded || pe.RetryAfter == 0 || !strings.Contains(pe.Message, "queue is full (8 messages)") {
		t.Fatalf("messages past a full queue of 8: %v, want worker_overloaded", err)
	}
	if _, err := w.DispatchEvent(ctx, g, proto.Event{Name: "Mark", Data: proto.Value(`{"n":8}`)}); proto.CodeOf(err) != proto.CodeWorkerOverloaded {
		t.Fatalf("a waited call into the full queue: %v, want worker_overloaded", err)
	}
	close(s.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		s.mu.Lock()
		n := len(s.kv[g])
		s.mu.Unlock()
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the tenant's 2 queued events did not run: %d keys", n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestTryDispatchEventOnlyWarmTenants: a tenant's first call (templates
// fetched and compiled) never runs on the reading goroutine; once its VM
// is built its calls do, until one runs longer than inlineMax doing the
// work of a long run (the reading is handed off meanwhile: mesophyll); a
// reload starts afresh.
func TestTryDispatchEventOnlyWarmTenants(t *testing.T) {
	s := newMemStore()
	g := proto.GuildID(1)
	s.put(g, "quick", `local event = ... if event.data == "long" then for i = 1, 3e6 do end end return 1`, "Ping")
	limits := DefaultLimits
	limits.MaxInstructions, limits.Timeout = 0, 0 // the long call must end by itself
	w, err := New(0, 1, Options{Store: s, Limits: limits, Logger: zerolog.Nop(), NoStartup: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t.Cleanup(func() { _ = w.Kill(ctx) })
	ping := proto.Event{Name: "Ping"}
	if _, ran, _ := w.TryDispatchEvent(ctx, g, ping); ran {
		t.Fatal("a cold tenant's call ran inline")
	}
	if _, err := w.DispatchEvent(ctx, g, ping); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if v, ran, err := w.TryDispatchEvent(ctx, g, ping); !ran || err != nil || string(v) != `{"quick":1}` {
			t.Fatalf("a warm tenant: %s ran %v, %v", v, ran, err)
		}
	}
	// A run over inlineMax (3,000,000 iterations take milliseconds on any
	// machine, and are over inlineSlowSteps) and the tenant's calls no
	// longer run inline.
	long := proto.Event{Name: "Ping", Data: proto.Value(`"long"`)}
	if _, ran, err := w.TryDispatchEvent(ctx, g, long); !ran || err != nil {
		t.Fatalf("the long call: ran %v, %v", ran, err)
	}
	if _, ran, _ := w.TryDispatchEvent(ctx, g, ping); ran {
		t.Fatal("a tenant whose run was long ran inline again")
	}
	_ = w.DropTenant(ctx, g)
	if _, ran, _ := w.TryDispatchEvent(ctx, g, ping); ran {
		t.Fatal("a dropped tenant's next call ran inline")
	}
	if _, err := w.DispatchEvent(ctx, g, ping); err != nil {
		t.Fatal(err)
	}
	if _, ran, _ := w.TryDispatchEvent(ctx, g, ping); !ran {
		t.Fatal("a reloaded tenant's quick calls do not run inline")
	}
}

// slowKVStore is a memStore whose KvGet takes at least delay.
type slowKVStore struct {
	*memStore
	delay time.Duration
}

func (s slowKVStore) KvGet(ctx context.Context, id proto.Id, key string) (json.RawMessage, bool, error) {
	time.Sleep(s.delay)
	return s.memStore.KvGet(ctx, id, key)
}

// TestTryDispatchEventQuickRunTakingLongStaysInline: a run that took
// longer than inlineMax without doing the work of a long run (here it
// waited in a store call; on a busy host its thread may be descheduled)
// does not send its tenant's calls off the reading goroutine: only work
// (inlineSlowSteps) holds the reading up.
func TestTryDispatchEventQuickRunTakingLongStaysInline(t *testing.T) {
	s := newMemStore()
	g := proto.GuildID(1)
	s.put(g, "wait", `local event, ctx = ... if event.data == "wait" then ctx.kv.get("k") end return 1`, "Ping")
	limits := DefaultLimits
	limits.Timeout = time.Minute // the store's wait must not end the call
	w, err := New(0, 1, Options{Store: slowKVStore{s, 3 * inlineMax}, Limits: limits, Logger: zerolog.Nop(), NoStartup: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t.Cleanup(func() { _ = w.Kill(ctx) })
	ping := proto.Event{Name: "Ping"}
	if _, err := w.DispatchEvent(ctx, g, ping); err != nil {
		t.Fatal(err)
	}
	wait := proto.Event{Name: "Ping", Data: proto.Value(`"wait"`)}
	if v, ran, err := w.TryDispatchEvent(ctx, g, wait); !ran || err != nil || string(v) != `{"wait":1}` {
		t.Fatalf("the waiting call: %s ran %v, %v", v, ran, err)
	}
	if _, ran, _ := w.TryDispatchEvent(ctx, g, ping); !ran {
		t.Fatal("a tenant whose run only waited longer than inlineMax no longer runs inline")
	}
}

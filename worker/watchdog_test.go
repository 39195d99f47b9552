package worker

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
)

// waitUntil polls cond until it holds, failing the test after d.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestThreadWatchdogAbandonsWedgedGoroutine wedges a call in Go (the test
// hook: the count hook never runs) and checks that the watchdog replaces
// the worker goroutine: the guilty tenant alone is reported, the calls
// queued behind it fail at once with worker_unavailable, a nowait event
// queued behind it still runs, later calls are served by fresh VMs, and
// the abandoned goroutine ends its call at the next count hook once
// released. With 4 slots the neighbour's waited call runs beside the
// wedge instead of queueing behind it.
func TestThreadWatchdogAbandonsWedgedGoroutine(t *testing.T) {
	for _, n := range []int{1, 4} {
		t.Run("concurrency="+itoa(n), func(t *testing.T) { testWatchdogAbandons(t, n) })
	}
}

func testWatchdogAbandons(t *testing.T, concurrency int) {
	s := newMemStore()
	attacker, neighbour := proto.GuildID(1), proto.GuildID(2)
	s.put(neighbour, "quick", `local event, ctx = ...
if event.data.mark then ctx.kv.set("mark", event.data.mark) end
return "ok"`, "Ping")
	var (
		mu  sync.Mutex
		cut []proto.Id
	)
	lim := DefaultLimits
	lim.Timeout = 100 * time.Millisecond
	w, err := New(0, 1, Options{
		Store: s, Logger: zerolog.Nop(), NoStartup: true, Limits: lim, Concurrency: concurrency,
		// Long enough for the test to queue calls behind the wedge on a
		// busy machine (which it does right after seeing the wedge run).
		Watchdog: 2 * time.Second, TestWedgeFunction: "test_wedge",
		OnWatchdog: func(id proto.Id, why string) {
			mu.Lock()
			cut = append(cut, id)
			mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t.Cleanup(func() { _ = w.Kill(ctx) })
	ping := proto.Event{Name: "Ping", Data: proto.Value(`{}`)}
	// The neighbour's VM exists before the wedge: it must be rebuilt after.
	if v, err := w.DispatchEvent(ctx, neighbour, ping); err != nil || string(v) != `{"quick":"ok"}` {
		t.Fatalf("neighbour before: %s %v", v, err)
	}

	wedged := make(chan error, 1)
	go func() {
		_, err := w.RunScript(ctx, attacker, "wedge", `test_wedge() local n = 0 while true do n = n + 1 end`, ping)
		wedged <- err
	}()
	waitUntil(t, time.Minute, "the attacker's call running", func() bool {
		p := w.Progress()
		return p.Running && p.Tenant == attacker
	})
	// Queued behind the wedge: a waited call and a nowait event.
	queued := make(chan error, 1)
	go func() {
		_, err := w.DispatchEvent(ctx, neighbour, ping)
		queued <- err
	}()
	if concurrency == 1 {
		waitUntil(t, time.Minute, "the neighbour's call queued", func() bool { return w.InFlight() == 2 })
	} else {
		// Beside the wedge, not behind it (unless the machine is so slow
		// that the watchdog cut the worker first: then it failed with it).
		if err := <-queued; err != nil && proto.CodeOf(err) != proto.CodeWorkerUnavailable {
			t.Fatalf("neighbour beside the wedge: %v", err)
		}
		queued <- proto.Errorf(proto.CodeWorkerUnavailable, "ran")
	}
	if err := w.DispatchEventNoWait(neighbour, proto.Event{Name: "Ping", Data: proto.Value(`{"mark":"after"}`)}); err != nil {
		t.Fatal(err)
	}

	for i, ch := range []chan error{queued, wedged} {
		select {
		case err := <-ch:
			if proto.CodeOf(err) != proto.CodeWorkerUnavailable {
				t.Fatalf("call %d: %v, want worker_unavailable", i, err)
			}
		case <-time.After(time.Minute):
			t.Fatalf("call %d did not fail after the watchdog", i)
		}
	}
	if w.Abandoned() != 1 {
		t.Fatalf("Abandoned() = %d, want 1", w.Abandoned())
	}
	mu.Lock()
	if len(cut) != 1 || cut[0] != attacker {
		t.Fatalf("watchdog blamed %v, want only %v", cut, attacker)
	}
	mu.Unlock()
	// The nowait event queued behind the wedge ran on the fresh goroutine.
	waitUntil(t, time.Minute, "the moved nowait event", func() bool {
		v, ok, _ := s.KvGet(ctx, neighbour, "mark")
		return ok && string(v) == `"after"`
	})
	if v, err := w.DispatchEvent(ctx, neighbour, ping); err != nil || string(v) != `{"quick":"ok"}` {
		t.Fatalf("neighbour after: %s %v", v, err)
	}
	if p := w.Progress(); p.Running {
		t.Fatalf("fresh goroutine shows a call running: %+v", p)
	}
}

// TestThreadWatchdogLeavesStoreWaitsAlone: time a call spends waiting for
// the store is not its own, so a slow store does not trip the watchdog.
func TestThreadWatchdogLeavesStoreWaitsAlone(t *testing.T) {
	s := &slowStore{memStore: newMemStore(), delay: 600 * time.Millisecond}
	id := proto.GuildID(7)
	s.put(id, "kv", `local event, ctx = ... return ctx.kv.get("k")`, "Ping")
	lim := DefaultLimits
	lim.Timeout = 5 * time.Second
	w, err := New(0, 1, Options{Store: s, Logger: zerolog.Nop(), NoStartup: true, Limits: lim,
		Watchdog: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t.Cleanup(func() { _ = w.Kill(ctx) })
	if _, err := w.DispatchEvent(ctx, id, proto.Event{Name: "Ping", Data: proto.Value(`{}`)}); err != nil {
		t.Fatalf("slow store call: %v", err)
	}
	if w.Abandoned() != 0 {
		t.Fatalf("the watchdog fired on store waits")
	}
}

// slowStore delays every KV read.
type slowStore struct {
	*memStore
	delay time.Duration
}

func (s *slowStore) KvGet(ctx context.Context, id proto.Id, key string) (json.RawMessage, bool, error) {
	time.Sleep(s.delay)
	v, ok, err := s.memStore.KvGet(ctx, id, key)
	return v, ok, err
}

// panicStore panics when the templates of one tenant are loaded: a stand-in
// for a VM bug that panics while a call runs.
type panicStore struct {
	*memStore
	bad proto.Id
}

func (s panicStore) Templates(ctx context.Context, id proto.Id) ([]proto.Template, error) {
	if id == s.bad {
		panic("test: corrupted state")
	}
	return s.memStore.Templates(ctx, id)
}

// TestThreadAbandonOnPanic: with AbandonOnPanic (the thread topology, whose
// process is the master), a panic while a call runs fails that call with
// internal, blames its tenant, and a fresh goroutine with fresh VMs serves
// the others — the process does not abort.
func TestThreadAbandonOnPanic(t *testing.T) {
	ms := newMemStore()
	bad, neighbour := proto.GuildID(11), proto.GuildID(12)
	ms.put(neighbour, "quick", `return "ok"`, "Ping")
	busy := proto.GuildID(13)
	ms.put(busy, "slow", `local n = 0 while n < 2000000 do n = n + 1 end return n`, "Ping")
	var (
		mu  sync.Mutex
		cut []proto.Id
	)
	lim := DefaultLimits
	lim.Timeout, lim.MaxInstructions = 5*time.Minute, 1<<40
	w, err := New(0, 1, Options{Limits: lim, Store: panicStore{memStore: ms, bad: bad}, Logger: zerolog.Nop(), NoStartup: true,
		AbandonOnPanic: true,
		OnWatchdog: func(id proto.Id, why string) {
			mu.Lock()
			cut = append(cut, id)
			mu.Unlock()
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t.Cleanup(func() { _ = w.Kill(ctx) })
	ping := proto.Event{Name: "Ping", Data: proto.Value(`{}`)}
	for i, queued := range []bool{false, true} {
		if queued {
			// Keep the worker busy so the call goes through its queue.
			slow := make(chan error, 1)
			go func() {
				_, err := w.DispatchEvent(ctx, busy, ping)
				slow <- err
			}()
			waitUntil(t, time.Minute, "the slow call running", func() bool { return w.Progress().Running })
			_, err := w.DispatchEvent(ctx, bad, ping)
			if c := proto.CodeOf(err); c != proto.CodeInternal && c != proto.CodeWorkerUnavailable {
				t.Fatalf("panicking call (queued): %v", err)
			}
			<-slow
		} else if _, err := w.DispatchEvent(ctx, bad, ping); proto.CodeOf(err) != proto.CodeInternal {
			t.Fatalf("panicking call (inline): %v, want internal", err)
		}
		if w.Abandoned() != i+1 {
			t.Fatalf("Abandoned() = %d, want %d", w.Abandoned(), i+1)
		}
		if v, err := w.DispatchEvent(ctx, neighbour, ping); err != nil || string(v) != `{"quick":"ok"}` {
			t.Fatalf("neighbour after the panic: %s %v", v, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(cut) != 2 || cut[0] != bad || cut[1] != bad {
		t.Fatalf("blamed %v, want %v twice", cut, bad)
	}
}

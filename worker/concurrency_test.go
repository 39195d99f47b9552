package worker

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
)

// probeStore is a memStore that sees the calls of each tenant from the
// inside: a template reads the key "enter" first and "leave" last, and the
// store records the most calls of one tenant it saw between the two.
type probeStore struct {
	*memStore
	mu     sync.Mutex
	active map[proto.Id]int
	most   map[proto.Id]int
}

func newProbeStore() *probeStore {
	return &probeStore{memStore: newMemStore(), active: map[proto.Id]int{}, most: map[proto.Id]int{}}
}

func (s *probeStore) KvGet(ctx context.Context, id proto.Id, key string) (json.RawMessage, bool, error) {
	switch key {
	case "enter":
		s.mu.Lock()
		s.active[id]++
		s.most[id] = max(s.most[id], s.active[id])
		s.mu.Unlock()
	case "leave":
		s.mu.Lock()
		s.active[id]--
		s.mu.Unlock()
	}
	return s.memStore.KvGet(ctx, id, key)
}

// orderTemplate records, per tenant, whether its events ran in the order
// of their n (0, 1, 2, ...): "bad" is set at the first one out of order.
const orderTemplate = `local e, ctx = ...
ctx.kv.get("enter")
local last = ctx.kv.get("last") or -1
if e.data.n ~= last + 1 and ctx.kv.get("bad") == nil then
  ctx.kv.set("bad", {got = e.data.n, after = last})
end
ctx.kv.set("last", e.data.n)
ctx.kv.get("leave")
return e.data.n`

// TestConcurrencyKeepsEachTenantsOrder: 1,000 nowait events of one tenant
// interleaved with the events of three others, on a worker running 4
// calls at once, run in arrival order per tenant, one at a time per
// tenant; and a waited call of the tenant, queued behind them, comes last.
func TestConcurrencyKeepsEachTenantsOrder(t *testing.T) {
	s := newProbeStore()
	main := proto.GuildID(1)
	others := []proto.Id{proto.GuildID(2), proto.GuildID(3), proto.GuildID(4)}
	for _, id := range append([]proto.Id{main}, others...) {
		s.put(id, "order", orderTemplate, "Seq")
	}
	w, err := New(0, 1, Options{Store: s, Logger: zerolog.Nop(), NoStartup: true, Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t.Cleanup(func() { _ = w.Kill(ctx) })
	const n = 1000
	sent := map[proto.Id]int{}
	for i := 0; i < n; i++ {
		if err := w.DispatchEventNoWait(main, proto.Event{Name: "Seq", Data: proto.Value(`{"n":` + itoa(i) + `}`)}); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if i%3 == 0 {
			o := others[(i/3)%len(others)]
			if err := w.DispatchEventNoWait(o, proto.Event{Name: "Seq", Data: proto.Value(`{"n":` + itoa(sent[o]) + `}`)}); err != nil {
				t.Fatalf("event of %s: %v", o, err)
			}
			sent[o]++
		}
	}
	// A waited call goes behind the tenant's queued events.
	v, err := w.DispatchEvent(ctx, main, proto.Event{Name: "Seq", Data: proto.Value(`{"n":` + itoa(n) + `}`)})
	if err != nil || string(v) != `{"order":`+itoa(n)+`}` {
		t.Fatalf("waited call after the events: %s %v", v, err)
	}
	waitUntil(t, 2*time.Minute, "every event ran", func() bool {
		for id, want := range map[proto.Id]int{main: n + 1, others[0]: sent[others[0]], others[1]: sent[others[1]], others[2]: sent[others[2]]} {
			v, ok, _ := s.memStore.KvGet(ctx, id, "last")
			if !ok || string(v) != itoa(want-1) {
				return false
			}
		}
		return true
	})
	for _, id := range append([]proto.Id{main}, others...) {
		if v, ok, _ := s.memStore.KvGet(ctx, id, "bad"); ok {
			t.Errorf("tenant %s: events out of order: %s", id, v)
		}
		s.mu.Lock()
		most := s.most[id]
		s.mu.Unlock()
		if most != 1 {
			t.Errorf("tenant %s: %d calls ran at once, want 1", id, most)
		}
	}
}

// TestConcurrencySlotsAndLanes: with 4 slots, a call blocked in the store
// does not hold up another tenant's call; a tenant holds at most one slot
// (its second call waits in its lane while others run); 4 blocked tenants
// fill the worker and a fifth tenant's call queues until one ends. With 1
// slot, the blocked call holds up the neighbour: the old serial worker.
func TestConcurrencySlotsAndLanes(t *testing.T) {
	s := &gateStore{memStore: newMemStore(), entered: make(chan struct{}, 8), release: make(chan struct{})}
	ids := []proto.Id{proto.GuildID(1), proto.GuildID(2), proto.GuildID(3), proto.GuildID(4), proto.GuildID(5)}
	for _, id := range ids {
		s.put(id, "wait", `local event, ctx = ... return ctx.kv.get("gate") == nil`, "Wait")
		s.put(id, "ping", `return "pong"`, "Ping")
	}
	limits := DefaultLimits
	limits.Timeout = 0 // the gated calls end when the test releases them
	w, err := New(0, 1, Options{Store: s, Limits: limits, Logger: zerolog.Nop(), NoStartup: true, Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t.Cleanup(func() { _ = w.Kill(ctx) })
	wait := proto.Event{Name: "Wait", Data: proto.Value(`{}`)}
	ping := proto.Event{Name: "Ping", Data: proto.Value(`{}`)}
	done := make(chan error, 16)
	gated := func(id proto.Id) {
		go func() {
			_, err := w.DispatchEvent(ctx, id, wait)
			done <- err
		}()
	}
	entered := func(what string) {
		t.Helper()
		select {
		case <-s.entered:
		case <-time.After(time.Minute):
			t.Fatalf("%s never reached the gate", what)
		}
	}

	gated(ids[0])
	entered("tenant 1's call")
	// Another tenant's call runs beside it.
	if v, err := w.DispatchEvent(ctx, ids[1], ping); err != nil || string(v) != `{"ping":"pong"}` {
		t.Fatalf("neighbour beside a blocked call: %s %v", v, err)
	}
	// The blocked tenant's second call waits for its first.
	gated(ids[0])
	waitUntil(t, time.Minute, "tenant 1's second call queued", func() bool { return w.Queued() == 1 })
	if v, err := w.DispatchEvent(ctx, ids[1], ping); err != nil || string(v) != `{"ping":"pong"}` {
		t.Fatalf("neighbour while tenant 1 has a call queued: %s %v", v, err)
	}
	if r := w.Running(); len(r) != 1 || r[0].Tenant != ids[0] {
		t.Fatalf("running %+v, want tenant 1's call alone", r)
	}
	// Three more blocked tenants fill the 4 slots; a fifth tenant queues.
	for _, id := range ids[1:4] {
		gated(id)
		entered("tenant " + id.String() + "'s call")
	}
	pinged := make(chan error, 1)
	go func() {
		_, err := w.DispatchEvent(ctx, ids[4], ping)
		pinged <- err
	}()
	waitUntil(t, time.Minute, "the fifth tenant's call queued", func() bool { return w.Queued() == 2 })
	if r := w.Running(); len(r) != 4 {
		t.Fatalf("running %+v, want 4 calls", r)
	}
	select {
	case err := <-pinged:
		t.Fatalf("a fifth tenant's call ran on a full worker: %v", err)
	default:
	}
	close(s.release)
	if err := <-pinged; err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if err := <-done; err != nil {
			t.Fatalf("gated call: %v", err)
		}
	}
	waitUntil(t, time.Minute, "the worker idle", func() bool { return w.Queued() == 0 && len(w.Running()) == 0 })

	// One slot: the neighbour waits behind the blocked call.
	s1 := &gateStore{memStore: s.memStore, entered: make(chan struct{}, 1), release: make(chan struct{})}
	w1, err := New(0, 1, Options{Store: s1, Limits: limits, Logger: zerolog.Nop(), NoStartup: true, Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w1.Kill(ctx) })
	go func() {
		_, err := w1.DispatchEvent(ctx, ids[0], wait)
		done <- err
	}()
	<-s1.entered
	go func() {
		_, err := w1.DispatchEvent(ctx, ids[1], ping)
		pinged <- err
	}()
	waitUntil(t, time.Minute, "the neighbour queued behind the blocked call", func() bool { return w1.Queued() == 1 })
	close(s1.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := <-pinged; err != nil {
		t.Fatal(err)
	}
}

// panicChildEnv makes the test binary a child that panics in a call.
const panicChildEnv = "TEMPLATEWORKER_TEST_PANIC_CHILD"

// TestConcurrencyPanicAbortsProcess: a panic while a call runs aborts the
// process (exit status 2), whether the call runs on a slot goroutine
// beside another call or inline on its caller's goroutine.
func TestConcurrencyPanicAbortsProcess(t *testing.T) {
	if mode := os.Getenv(panicChildEnv); mode != "" {
		panicChild(mode)
		return
	}
	for _, mode := range []string{"slot", "inline"} {
		t.Run(mode, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestConcurrencyPanicAbortsProcess$")
			cmd.Env = append(os.Environ(), panicChildEnv+"="+mode)
			out, err := cmd.CombinedOutput()
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() != 2 {
				t.Fatalf("child: %v, want exit status 2; output:\n%s", err, out)
			}
			if !strings.Contains(string(out), "worker panicked") || strings.Contains(string(out), "child survived") {
				t.Fatalf("child output:\n%s", out)
			}
		})
	}
}

// panicGate is a gateStore whose templates of tenant bad panic to load.
type panicGate struct {
	*gateStore
	bad proto.Id
}

func (s panicGate) Templates(ctx context.Context, id proto.Id) ([]proto.Template, error) {
	if id == s.bad {
		panic("test: corrupted state")
	}
	return s.gateStore.Templates(ctx, id)
}

// panicChild runs a worker whose tenant 2 panics when its templates load:
// in mode "slot" beside a blocked call of tenant 1, queued as a nowait
// event (so on a slot goroutine); in mode "inline" as a waited call on an
// idle worker.
func panicChild(mode string) {
	busy, bad := proto.GuildID(1), proto.GuildID(2)
	gs := &gateStore{memStore: newMemStore(), entered: make(chan struct{}, 1), release: make(chan struct{})}
	gs.put(busy, "wait", `local event, ctx = ... return ctx.kv.get("gate") == nil`, "Wait")
	limits := DefaultLimits
	limits.Timeout = 0
	w, err := New(0, 1, Options{Store: panicGate{gateStore: gs, bad: bad}, Limits: limits,
		Logger: zerolog.New(os.Stderr), NoStartup: true, Concurrency: 4})
	if err != nil {
		panic(err)
	}
	ev := proto.Event{Name: "Wait", Data: proto.Value(`{}`)}
	ctx := context.Background()
	if mode == "slot" {
		go func() { _, _ = w.DispatchEvent(ctx, busy, ev) }()
		<-gs.entered
		_ = w.DispatchEventNoWait(bad, ev)
	} else {
		_, _ = w.DispatchEvent(ctx, bad, ev)
	}
	time.Sleep(time.Minute) // the panic exits the process long before
	os.Stderr.WriteString("child survived\n")
	os.Exit(0)
}

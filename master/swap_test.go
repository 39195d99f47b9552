package master

import (
	"context"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
)

// TestSlotMapping checks the two Mesophyll slots of every worker and
// that the store answers of a slot are its worker's.
func TestSlotMapping(t *testing.T) {
	const total = 3
	for slot, want := range []int{0, 1, 2, 0, 1, 2} {
		if got := slotWorker(slot, total); got != want {
			t.Errorf("slotWorker(%d, %d) = %d, want %d", slot, total, got, want)
		}
		other := otherSlot(slot, total)
		if other == slot || slotWorker(other, total) != want || otherSlot(other, total) != slot || other < 0 || other >= 2*total {
			t.Errorf("otherSlot(%d, %d) = %d: not the other slot of worker %d", slot, total, other, want)
		}
	}
	st := openTestStore(t)
	ids := []proto.Id{proto.GuildID(0 << 22), proto.GuildID(1 << 22), proto.GuildID(4 << 22), proto.GuildID(2 << 22)}
	for _, id := range ids {
		put(t, st, id, "s", `return 1`, "OnStartup")
	}
	b := storeBackend{st: newBoundedStore(st, 4<<20), total: total, q: NewQuarantine(3, time.Minute)}
	ctx := context.Background()
	for w := range total {
		a, err := b.TenantsFor(ctx, w, "OnStartup")
		if err != nil {
			t.Fatal(err)
		}
		c, err := b.TenantsFor(ctx, w+total, "OnStartup")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(a, c) {
			t.Errorf("worker %d: slot %d lists %v, slot %d lists %v", w, w, a, w+total, c)
		}
		for _, id := range c {
			if id.WorkerID(total) != w {
				t.Errorf("slot %d listed %s of worker %d", w+total, id, id.WorkerID(total))
			}
		}
	}
	// Tenant 4<<22 is worker 1's: slot 4 acts for it, slot 3 (worker 0) not.
	if err := b.owned(4, ids[2]); err != nil {
		t.Errorf("slot 4 refused its worker's tenant: %v", err)
	}
	if err := b.owned(3, ids[2]); proto.CodeOf(err) != proto.CodeBadRequest {
		t.Errorf("slot 3 (worker 0) acting for worker 1's tenant: %v, want bad_request", err)
	}
}

// TestSwapServesBeforeDrain replaces a worker while one of its calls is
// held in flight: the new process serves (another tenant's call answers)
// while the old one still runs the held call, which then finishes on the
// old process without error; the held tenant's next call waits for it
// (a tenant's calls never run in two processes at once); the old process
// exits, counted as a recycle restart and no failure.
func TestSwapServesBeforeDrain(t *testing.T) {
	st := newGatedStore(t)
	g, g2 := proto.GuildID(1<<22), proto.GuildID(2<<22) // worker 0 of 1
	put(t, st, g, "gate", gateTemplate, "Gate")
	for _, id := range []proto.Id{g, g2} {
		put(t, st, id, "other", `return 2`, "Other")
	}
	pp := startTestProcessPool(t, 1, st, pathsConfig(t))
	w := pp.workers[0]
	old := w.Status().PID

	callErr := make(chan error, 1)
	go func() {
		v, err := pp.DispatchEvent(context.Background(), g, eventOf("Gate", `{}`))
		if err == nil && string(v) != `{"gate":"open"}` {
			err = &proto.Error{Code: "unexpected", Message: string(v)}
		}
		callErr <- err
	}()
	st.waitEntered(t)
	swapped := make(chan error, 1)
	go func() { swapped <- w.swap(context.Background(), ReasonRecycle) }()
	waitUntil(t, "the new process serving", func() bool {
		s := w.Status()
		return s.State == StateReady && s.PID != 0 && s.PID != old && s.LastRestartReason == ReasonRecycle
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if v, err := pp.DispatchEvent(ctx, g2, eventOf("Other", `{}`)); err != nil || string(v) != `{"other":2}` {
		t.Fatalf("a call during the old process's drain: %s %v", v, err)
	}
	sameErr := make(chan error, 1)
	go func() {
		_, err := pp.DispatchEvent(ctx, g, eventOf("Other", `{}`))
		sameErr <- err
	}()
	if !alivePID(old) {
		t.Fatal("the old process exited before its call in flight finished")
	}
	select {
	case err := <-swapped:
		t.Fatalf("swap returned %v while the old process still drains", err)
	default:
	}
	select {
	case err := <-sameErr:
		t.Fatalf("the held tenant's next call ran (%v) while its call on the old process still runs", err)
	case <-time.After(200 * time.Millisecond): // the window a wrong switch-over would answer in
	}
	st.release()
	if err := <-callErr; err != nil {
		t.Fatalf("the call in flight on the old process: %v", err)
	}
	if err := <-sameErr; err != nil {
		t.Fatalf("the held tenant's call after its call on the old process: %v", err)
	}
	if err := <-swapped; err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the old process gone", func() bool { return !alivePID(old) })
	s := w.Status()
	if s.Restarts != 1 || s.ConsecutiveFailures != 0 || s.restartReasons[ReasonRecycle] != 1 || !strings.Contains(s.LastExit, "replaced") {
		t.Fatalf("after a swap: %+v (reasons %v), want 1 recycle restart and no failure", s, s.restartReasons)
	}
	if s.State != StateReady {
		t.Fatalf("state %s after the swap, want ready", s.State)
	}
}

// TestSwapWhoseSuccessorCannotStart keeps the old process serving when the
// new one dies before it is ready: no restart is counted, no failure.
func TestSwapWhoseSuccessorCannotStart(t *testing.T) {
	st := openTestStore(t)
	g := proto.GuildID(1 << 22)
	put(t, st, g, "t", `return 1`, "Ping")
	pp := startTestProcessPool(t, 1, st, pathsConfig(t))
	w := pp.workers[0]
	old := w.Status().PID
	w.cfg.Exe = writeScript(t, "exit 3")
	err := w.swap(context.Background(), ReasonMemory)
	if proto.CodeOf(err) != proto.CodeWorkerUnavailable || !strings.Contains(err.Error(), "exited before it was ready") {
		t.Fatalf("swap to a successor that exits: %v", err)
	}
	s := w.Status()
	if s.PID != old || s.State != StateReady || s.Restarts != 0 || s.ConsecutiveFailures != 0 {
		t.Fatalf("after a failed swap: %+v, want pid %d still serving, no restart", s, old)
	}
	if _, err := pp.DispatchEvent(context.Background(), g, eventOf("Ping", `{}`)); err != nil {
		t.Fatalf("the old process after a failed swap: %v", err)
	}
}

// TestSwapOldCrashDuringDrain kills the old process while it drains a
// nowait event held in its call: the death is no failure of the worker
// and no restart, the crash is blamed on the tenant the old process's own
// progress record names, and the unacknowledged event is delivered by the
// new process before the tenant's event sent during the drain.
func TestSwapOldCrashDuringDrain(t *testing.T) {
	st := newGatedStore(t)
	g := proto.GuildID(1 << 22)
	put(t, st, g, "gate", `local event, ctx = ...
local v = ctx.kv.get("gate")
local order = (ctx.kv.get("count") or 0) + 1
ctx.kv.set("count", order)
ctx.kv.set("done:" .. event.data.n, order)
return v`, "Gate")
	pp := startTestProcessPool(t, 1, st, pathsConfig(t))
	w := pp.workers[0]
	old := w.Status().PID
	blamed := make(chan proto.Id, 4)
	w.crashed = func(id proto.Id, why string) { blamed <- id }

	if err := pp.DispatchEventNoWait(g, eventOf("Gate", `{"n":1}`)); err != nil {
		t.Fatal(err)
	}
	st.waitEntered(t)
	swapped := make(chan error, 1)
	go func() { swapped <- w.swap(context.Background(), ReasonMemory) }()
	waitUntil(t, "the new process serving", func() bool {
		s := w.Status()
		return s.State == StateReady && s.PID != 0 && s.PID != old
	})
	newPID := w.Status().PID
	if err := pp.DispatchEventNoWait(g, eventOf("Gate", `{"n":2}`)); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := <-swapped; err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-blamed:
		if id != g {
			t.Fatalf("blamed %s, want %s", id, g)
		}
	case <-time.After(time.Minute):
		t.Fatal("the old process's crash during a call was blamed on nobody")
	}
	st.release()
	ctx := context.Background()
	waitUntil(t, "both events delivered", func() bool {
		items, _ := st.KvFind(ctx, g, "done:")
		return len(items) == 2
	})
	waitUntil(t, "acknowledged", func() bool { return w.Status().Queued == 0 })
	// The event held back (n=2, sent during the drain) ran after the one
	// the old process left unacknowledged (n=1).
	items, err := st.KvFind(ctx, g, "done:")
	if err != nil || len(items) != 2 || string(items[0].Value) != "1" || string(items[1].Value) != "2" {
		t.Fatalf("order of the tenant's events across the switch: %v %v, want done:1=1 done:2=2", items, err)
	}
	s := w.Status()
	if s.PID != newPID || s.Restarts != 1 || s.ConsecutiveFailures != 0 || s.restartReasons["crash"] != 0 || s.restartReasons[ReasonMemory] != 1 {
		t.Fatalf("after the old process crashed in its drain: %+v (reasons %v)", s, s.restartReasons)
	}
}

// TestRecycleDueDuringReplacementIsKept checks that a worker's share of
// dispatches reached while a replacement is under way, or a replacement
// that fails, re-arms the recycling instead of losing it.
func TestRecycleDueDuringReplacementIsKept(t *testing.T) {
	w := newProcWorker(0, 1, &ProcessConfig{MaxDispatches: 10, ReadyTimeout: time.Second, DispatchTimeout: time.Second}, nil, zerolog.Nop(), nil)
	w.recycleAt = w.nextRecycleAt()
	w.replacing.Store(true)
	for range 20 {
		w.countDispatch()
	}
	if w.recycleAt == 0 {
		t.Fatal("the recycling due during a replacement was consumed")
	}
	w.replacing.Store(false)
	w.countDispatch() // due now: the replacement fails (no process is ready)
	w.bg.Wait()
	w.mu.Lock()
	at, n := w.recycleAt, w.dispatches
	w.mu.Unlock()
	if at <= n || at > n+11 {
		t.Fatalf("after a failed replacement at %d dispatches the next is due at %d, want within another share", n, at)
	}
}

// TestRollingRestartWithBrokenBinaryKeepsServing: a rolling restart whose
// new binary cannot start stops with an error and leaves the old process
// serving, nothing counted.
func TestRollingRestartWithBrokenBinaryKeepsServing(t *testing.T) {
	st := openTestStore(t)
	g := proto.GuildID(1 << 22)
	put(t, st, g, "t", `return 1`, "Ping")
	pp := startTestProcessPool(t, 1, st, pathsConfig(t))
	w := pp.workers[0]
	old := w.Status().PID
	w.cfg.Exe = writeScript(t, "echo 'bad binary' >&2; exit 3")
	err := pp.RollingRestart(context.Background(), time.Minute)
	if err == nil || !strings.Contains(err.Error(), "rolling restart of worker 0") || !strings.Contains(err.Error(), "exited before it was ready") {
		t.Fatalf("rolling restart to a broken binary: %v", err)
	}
	if s := w.Status(); s.PID != old || s.State != StateReady || s.Restarts != 0 || s.ConsecutiveFailures != 0 {
		t.Fatalf("after the failed rolling restart: %+v, want pid %d serving, nothing counted", s, old)
	}
	if _, err := pp.DispatchEvent(context.Background(), g, eventOf("Ping", `{}`)); err != nil {
		t.Fatalf("the old process after a failed rolling restart: %v", err)
	}
}

// TestSwapSuccessorStartupWaitsForDrain: a planned successor runs its
// tenants' OnStartup only once the process it replaces has finished. The
// tenant's call held on the old process ends before its OnStartup runs on
// the new one: a tenant's calls never run in two processes at once, and
// OnStartup, which the new process dispatches itself, is no exception.
func TestSwapSuccessorStartupWaitsForDrain(t *testing.T) {
	st := newGatedStore(t)
	g := proto.GuildID(1 << 22) // worker 0 of 1
	put(t, st, g, "gate", `local event, ctx = ... local v = ctx.kv.get("gate")
ctx.kv.set("gate_done", (ctx.kv.get("gate_done") or 0) + 1) return v`, "Gate")
	put(t, st, g, "boot", `local event, ctx = ... local n = (ctx.kv.get("boots") or 0) + 1
ctx.kv.set("boots", n) ctx.kv.set("boot" .. n, ctx.kv.get("gate_done") or 0)`, "OnStartup")
	kv := func(key string) string {
		v, _, err := st.KvGet(context.Background(), g, key)
		if err != nil {
			t.Fatal(err)
		}
		return string(v)
	}
	pp := startTestProcessPool(t, 1, st, pathsConfig(t))
	w := pp.workers[0]
	waitUntil(t, "the first start's OnStartup", func() bool { return kv("boots") == "1" })
	old := w.Status().PID

	callErr := holdGate(t, pp, st, g)
	swapped := make(chan error, 1)
	go func() { swapped <- w.swap(context.Background(), ReasonRecycle) }()
	waitUntil(t, "the new process serving", func() bool {
		s := w.Status()
		return s.State == StateReady && s.PID != 0 && s.PID != old
	})
	// The window an OnStartup run beside the held call would show in.
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if b := kv("boots"); b != "1" {
			t.Fatalf("the new process ran OnStartup (boots %s, boot2 %s) while the tenant's call still runs on the old one", b, kv("boot2"))
		}
	}
	st.release()
	if err := <-callErr; err != nil {
		t.Fatalf("the call held on the old process: %v", err)
	}
	if err := <-swapped; err != nil {
		t.Fatal(err)
	}
	// OnStartup writes boots before boot2: wait for the second.
	waitUntil(t, "the new process's OnStartup", func() bool { return kv("boots") == "2" && kv("boot2") != "" })
	if got := kv("boot2"); got != "1" {
		t.Fatalf("the new process's OnStartup saw gate_done %s, want 1 (after the old process's call)", got)
	}
}

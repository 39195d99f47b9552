package master

import (
	"context"
	"testing"
	"time"

	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/queue"
	"github.com/templateworker/templateworker/worker"
)

// A process worker killed in the middle of a window: the events it
// acknowledged keep their outcomes (delivered), the first it did not
// fails (an attempt: it took its worker down), the rest are not_run
// (wait, no attempt); the next window, on the next process, runs.
func TestDispatchWindowWorkerDeath(t *testing.T) {
	st := newGatedStore(t)
	g := proto.GuildID(1 << 22) // worker 0 of 1
	put(t, st, g, "gate", gateTemplate, "Gate")
	put(t, st, g, "ping", `return 1`, "Ping")
	pp := startTestProcessPool(t, 1, st, pathsConfig(t))
	w := pp.workers[0]
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ping, gate := eventOf("Ping", `{}`), eventOf("Gate", `{}`)
	if _, err := pp.DispatchEvent(ctx, g, ping); err != nil {
		t.Fatal(err)
	}
	pid := w.Status().PID
	done := make(chan []error, 1)
	go func() { done <- pp.Pool.DispatchWindow(ctx, g, []proto.Event{ping, ping, gate, ping, ping}) }()
	st.waitEntered(t)
	waitUntil(t, "the events before the gate acknowledged", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return len(w.pipe) == 3
	})
	killGroup(pid)
	errs := <-done
	want := []queue.Outcome{queue.Delivered, queue.Delivered, queue.Failed, queue.Wait, queue.Wait}
	for i, err := range errs {
		if got := classifyDelivery(err); got != want[i] {
			t.Fatalf("event %d ended with %v (outcome %d), want outcome %d (all: %v)", i, err, got, want[i], errs)
		}
	}
	if c := proto.CodeOf(errs[3]); c != proto.CodeNotRun {
		t.Fatalf("event after the one cut: %v, want not_run", errs[3])
	}
	st.release()
	waitUntil(t, "the worker restarted", func() bool {
		s := w.Status()
		return s.State == StateReady && s.PID != pid && s.PID != 0
	})
	for i, err := range pp.Pool.DispatchWindow(ctx, g, []proto.Event{ping, gate, ping}) {
		if err != nil {
			t.Fatalf("event %d of the next window: %v", i, err)
		}
	}
	w.mu.Lock()
	left := len(w.pipe)
	w.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d window events still tracked after their windows ended", left)
	}
}

// The thread topology runs a window one event after the other with the
// same barrier: none after a fatal limit.
func TestDispatchWindowThread(t *testing.T) {
	st := openTestStore(t)
	g := proto.GuildID(1)
	put(t, st, g, "ping", `return 1`, "Ping")
	put(t, st, g, "spin", `while true do end`, "Spin")
	p := threadTopology(0)(t, st, 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ping, spin := eventOf("Ping", `{}`), eventOf("Spin", `{}`)
	errs := p.DispatchWindow(ctx, g, []proto.Event{ping, spin, ping})
	if errs[0] != nil || proto.CodeOf(errs[1]) != proto.CodeCPULimit || proto.CodeOf(errs[2]) != proto.CodeNotRun {
		t.Fatalf("window ended with %v, want nil, cpu_limit, not_run", errs)
	}
}

// A window event that fails on a process worker comes back with the
// worker's own error message (the Ack carries it), as a waited dispatch
// would: the queue keeps it as the event's last error.
func TestDispatchWindowProcessKeepsTheMessage(t *testing.T) {
	st := openTestStore(t)
	g := proto.GuildID(1 << 22)
	put(t, st, g, "ping", `return 1`, "Ping")
	put(t, st, g, "boom", `local t = {} for i = 1, 1e9 do t[i] = ("x"):rep(1024) .. i end`, "Boom")
	pp := startTestProcessPool(t, 1, st, pathsConfig(t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ping, boom := eventOf("Ping", `{}`), eventOf("Boom", `{}`)
	_, waited := pp.DispatchEvent(ctx, g, boom)
	errs := pp.Pool.DispatchWindow(ctx, g, []proto.Event{ping, boom, ping})
	if errs[0] != nil || proto.CodeOf(errs[2]) != proto.CodeNotRun {
		t.Fatalf("window ended with %v, want nil, a limit, not_run", errs)
	}
	got, want := proto.AsError(errs[1]), proto.AsError(waited)
	if want == nil || got == nil || got.Code != want.Code || got.Message != want.Message || got.Message == "" {
		t.Fatalf("the window's failed event: %+v; want the waited dispatch's error %+v", got, want)
	}
}

// /v1/workers' queued and queued_bytes count the events of the queue's
// windows that a process worker was sent and has not acknowledged yet
// (they were always 0 since the durable queue delivers in windows rather
// than through the held nowait events), and fall back to 0 once the
// window is acknowledged.
func TestDispatchWindowQueuedStatus(t *testing.T) {
	st := newGatedStore(t)
	g := proto.GuildID(1 << 22)
	put(t, st, g, "gate", gateTemplate, "Gate")
	put(t, st, g, "ping", `return 1`, "Ping")
	pp := startTestProcessPool(t, 1, st, pathsConfig(t))
	w := pp.workers[0]
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ping, gate := eventOf("Ping", `{"pad":"0123456789"}`), eventOf("Gate", `{}`)
	done := make(chan []error, 1)
	go func() { done <- pp.Pool.DispatchWindow(ctx, g, []proto.Event{ping, gate, ping, ping}) }()
	st.waitEntered(t)
	waitUntil(t, "the event before the gate acknowledged", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return len(w.pipe) == 3
	})
	s := w.Status()
	want := worker.EventSize(gate) + 2*worker.EventSize(ping)
	if s.Queued != 3 || s.QueuedBytes != want {
		t.Fatalf("while the gate holds the window: queued %d, queued_bytes %d; want 3 and %d", s.Queued, s.QueuedBytes, want)
	}
	st.release()
	for i, err := range <-done {
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
	if s := w.Status(); s.Queued != 0 || s.QueuedBytes != 0 {
		t.Fatalf("after the window: queued %d, queued_bytes %d; want 0 and 0", s.Queued, s.QueuedBytes)
	}
}

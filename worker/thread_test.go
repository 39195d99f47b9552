package worker

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
)

func TestTryDispatchEventRunsInlineOnlyWhenIdle(t *testing.T) {
	s := newMemStore()
	g := proto.GuildID(1)
	s.put(g, "greet", `local event = ... return { hello = event.data.who }`, "Ping")
	s.put(g, "spin", `local event = ... local n = 0 while n < event.data.n do n = n + 1 end return n`, "Spin")
	ctx := context.Background()
	ping := proto.Event{Name: "Ping", Data: proto.Value(`{"who":"ops"}`)}

	// Generous limits: the spin below must not hit them on a busy machine.
	lim := DefaultLimits
	lim.Timeout, lim.MaxInstructions = 5*time.Minute, 1<<40
	w, err := New(0, 1, Options{Store: s, Logger: zerolog.Nop(), NoStartup: true, Limits: lim})
	if err != nil {
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
	// order must hold.
	done := make(chan error, 1)
	go func() {
		_, err := w.DispatchEvent(ctx, g, proto.Event{Name: "Spin", Data: proto.Value(`{"n":1000000}`)})
		done <- err
	}()
	deadline := time.Now().Add(2 * time.Minute)
	for w.InFlight() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	busy := false
	for !busy && time.Now().Before(deadline) {
		select {
		case err := <-done:
			t.Fatalf("the spin call finished before the busy check (%v): raise n", err)
		default:
		}
		_, ran, _ := w.TryDispatchEvent(ctx, g, ping)
		busy = !ran
	}
	if !busy {
		t.Fatal("TryDispatchEvent ran while a queued call was running")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The worker goroutine finishes its bookkeeping just after replying.
	for ran := false; !ran; {
		if time.Now().After(deadline) {
			t.Fatal("the worker never became idle again")
		}
		var err error
		if _, ran, err = w.TryDispatchEvent(ctx, g, ping); ran && err != nil {
			t.Fatalf("idle again: %v", err)
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

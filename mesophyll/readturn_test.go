package mesophyll

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/templateworker/templateworker/proto"
)

// longInlineHandler runs events inline when idle; the event "long" hands
// the reading off (as the worker's VM does once a call has run long:
// InlineHandoff), blocks until hold is closed — a tenant's long Lua call —
// and then reads the key "count" through the Client.
type longInlineHandler struct {
	*inlineHandler
	hold    chan struct{}
	running chan struct{} // closed once "long" runs
}

func (h *longInlineHandler) TryDispatchEvent(ctx context.Context, id proto.Id, ev proto.Event) (proto.Value, bool, error) {
	if ev.Name != "long" {
		return h.inlineHandler.TryDispatchEvent(ctx, id, ev)
	}
	if !h.busy.CompareAndSwap(false, true) {
		return nil, false, nil
	}
	defer h.busy.Store(false)
	h.inlined.Add(1)
	InlineHandoff(ctx)()
	close(h.running)
	<-h.hold
	v, found, err := h.cl.Load().KvGet(ctx, id, "count")
	if err != nil {
		return nil, true, err
	}
	b, _ := json.Marshal(map[string]any{"found": found, "value": v})
	return b, true, nil
}

// TestLongInlineEventHandsOffTheReading: a tenant whose event runs inline
// and long does not hold up the worker's reading: its neighbours' calls are
// read and answered meanwhile, its own store call after the hand-off is
// answered, its answer arrives, and once the worker is idle again events
// run inline on the new reader.
func TestLongInlineEventHandsOffTheReading(t *testing.T) {
	h := newHarness(t, ServerOptions{Workers: 1})
	g, other := proto.GuildID(1), proto.GuildID(2)
	h.backend.kv[g.String()+"/count"] = json.RawMessage(`3`)
	hd := &longInlineHandler{inlineHandler: &inlineHandler{fakeHandler: newFakeHandler()},
		hold: make(chan struct{}), running: make(chan struct{})}
	cl, c, served := h.worker(0, hd)
	hd.cl.Store(cl)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	long := make(chan error, 1)
	var longRes atomic.Value
	go func() {
		res, err := c.DispatchEvent(ctx, g, proto.Event{Name: "long"})
		longRes.Store(string(res))
		long <- err
	}()
	<-hd.running
	// Without the hand-off nothing reads the connection now: these would
	// wait until the test's deadline.
	for i := range 3 {
		res, err := c.DispatchEvent(ctx, other, proto.Event{Name: "Ping"})
		if err != nil || string(res) != `{"ok":true}` {
			t.Fatalf("neighbour call %d while a long event runs inline: %s %v", i, res, err)
		}
	}
	if err := c.DispatchEventNoWait(other, proto.Event{Name: "Ping"}, 9); err != nil {
		t.Fatal(err)
	}
	select {
	case seq := <-h.acks:
		if seq != 9 {
			t.Fatalf("ack %d, want 9", seq)
		}
	case <-ctx.Done():
		t.Fatal("nowait event not acknowledged while a long event runs inline")
	}
	if q := hd.queued.Load(); q != 4 {
		t.Fatalf("%d events dispatched on goroutines of their own, want 4", q)
	}
	close(hd.hold)
	if err := <-long; err != nil || longRes.Load() != `{"found":true,"value":3}` {
		t.Fatalf("the long event: %v %v", longRes.Load(), err)
	}
	before := hd.inlined.Load()
	for hd.inlined.Load() == before {
		if ctx.Err() != nil {
			t.Fatal("events no longer run inline after a hand-off")
		}
		if _, err := c.DispatchEvent(ctx, g, proto.Event{Name: "Ping"}); err != nil {
			t.Fatal(err)
		}
	}
	// The connection still ends cleanly: Serve returns once it is closed.
	cl.Close()
	select {
	case <-served:
	case <-ctx.Done():
		t.Fatal("Serve did not return after the connection closed")
	}
}

// TestHandOffDuringAnInlineStoreCall: the hand-off comes due while a long
// inline event's store call reads the connection itself; the call keeps
// serving what it reads, and once its answer is in the reading moves, so
// the event's long run after it holds up nobody.
func TestHandOffDuringAnInlineStoreCall(t *testing.T) {
	h := newHarness(t, ServerOptions{Workers: 1})
	g, other := proto.GuildID(1), proto.GuildID(2)
	hd := &inlineHandler{fakeHandler: newFakeHandler()}
	hold, stored := make(chan struct{}), make(chan struct{})
	long := &storeThenHold{inlineHandler: hd, hold: hold, stored: stored, backend: h.backend}
	cl, c, _ := h.worker(0, long)
	hd.cl.Store(cl)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	done := make(chan error, 1)
	go func() {
		_, err := c.DispatchEvent(ctx, g, proto.Event{Name: "long"})
		done <- err
	}()
	// The store call ("slow" blocks in the backend) reads for itself: a
	// neighbour is served during it, after the hand-off came due.
	for h.backend.slow.Load() == 0 {
		if ctx.Err() != nil {
			t.Fatal("the store call never reached the backend")
		}
		time.Sleep(time.Millisecond)
	}
	for !cl.handoffDue() { // the hand-off comes due mid-read
		if ctx.Err() != nil {
			t.Fatal("no hand-off came due during the store call")
		}
		time.Sleep(time.Millisecond)
	}
	if res, err := c.DispatchEvent(ctx, other, proto.Event{Name: "Ping"}); err != nil || string(res) != `{"ok":true}` {
		t.Fatalf("neighbour during the store call: %s %v", res, err)
	}
	close(h.backend.release)
	<-stored
	// The event now runs on, holding hold: the new reader serves others.
	if res, err := c.DispatchEvent(ctx, other, proto.Event{Name: "Ping"}); err != nil || string(res) != `{"ok":true}` {
		t.Fatalf("neighbour after the store call: %s %v", res, err)
	}
	close(hold)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// storeThenHold runs "long" inline: a store call of the key "slow", during
// which (from another goroutine, as a coroutine's would) the call asks for
// the hand-off, then a wait on hold.
type storeThenHold struct {
	*inlineHandler
	hold, stored chan struct{}
	backend      *fakeBackend
}

func (h *storeThenHold) TryDispatchEvent(ctx context.Context, id proto.Id, ev proto.Event) (proto.Value, bool, error) {
	if ev.Name != "long" {
		return h.inlineHandler.TryDispatchEvent(ctx, id, ev)
	}
	if !h.busy.CompareAndSwap(false, true) {
		return nil, false, nil
	}
	defer h.busy.Store(false)
	handOff := InlineHandoff(ctx)
	go func() {
		for h.backend.slow.Load() == 0 { // the store call waits in the backend now
			time.Sleep(time.Millisecond)
		}
		handOff()
	}()
	_, _, err := h.cl.Load().KvGet(ctx, id, "slow")
	close(h.stored)
	<-h.hold
	return proto.Value(`true`), true, err
}

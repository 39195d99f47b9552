package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
)

func TestResultOverMaxResultIsResultTooLarge(t *testing.T) {
	s := newMemStore()
	limits := DefaultLimits
	limits.MaxResult = 64 << 10
	m := NewManager(0, 1, s, limits, zerolog.Nop())
	ctx := context.Background()
	for _, code := range []string{
		`return ("x"):rep(70000)`,
		`local t = {} for i = 1, 20000 do t[i] = "abcd" end return t`,
	} {
		_, err := m.RunScript(ctx, g1, "s", code, ev("RunScript", "null"))
		if proto.CodeOf(err) != proto.CodeResultTooLarge || !strings.Contains(err.Error(), "65536-byte limit (--max-result)") {
			t.Fatalf("%s: %v, want result_too_large naming the limit", code, err)
		}
	}
	// Under the limit: fine, and the VM still serves.
	v, err := m.RunScript(ctx, g1, "s", `return #("x"):rep(60000)`, ev("RunScript", "null"))
	if err != nil || string(v) != "60000" {
		t.Fatalf("after: %s %v", v, err)
	}
	// A dispatch whose templates' results are each under the limit but
	// together over it.
	s.put(g1, "a", `return ("a"):rep(40000)`, "Ping")
	s.put(g1, "b", `return ("b"):rep(40000)`, "Ping")
	s.put(g1, "c", `return 1`, "Ping")
	m.Drop(g1)
	_, err = m.Dispatch(ctx, g1, ev("Ping", "{}"))
	if proto.CodeOf(err) != proto.CodeResultTooLarge {
		t.Fatalf("dispatch: %v, want result_too_large", err)
	}
	// One template over the limit fails the dispatch with that code.
	s.put(g1, "a", `return ("a"):rep(70000)`, "Ping")
	s.put(g1, "b", `return 2`, "Ping")
	m.Drop(g1)
	_, err = m.Dispatch(ctx, g1, ev("Ping", "{}"))
	if proto.CodeOf(err) != proto.CodeResultTooLarge {
		t.Fatalf("dispatch with one oversized result: %v, want result_too_large", err)
	}
}

func TestFailureMessagesAreBounded(t *testing.T) {
	s := newMemStore()
	for i := 0; i < 200; i++ {
		s.put(g1, fmt.Sprintf("t%03d", i), `error(("e"):rep(4000))`, "Ping")
	}
	m := newTestManager(t, s)
	_, err := m.Dispatch(context.Background(), g1, ev("Ping", "{}"))
	pe := proto.AsError(err)
	if pe.Code != proto.CodeScriptError || len(pe.Message) > maxFailureText+100 || !strings.Contains(pe.Message, "more") {
		t.Fatalf("got %s with a %d-byte message, want script_error of at most ~%d bytes saying how many more", pe.Code, len(pe.Message), maxFailureText)
	}
}

// blockingStore blocks KvGet of "block" until release is closed.
type blockingStore struct {
	*memStore
	release chan struct{}
	blocked chan struct{}
}

func (s blockingStore) KvGet(ctx context.Context, id proto.Id, key string) (json.RawMessage, bool, error) {
	if key == "block" {
		s.blocked <- struct{}{}
		<-s.release
	}
	return s.memStore.KvGet(ctx, id, key)
}

func TestNowaitQueueBoundedInBytes(t *testing.T) {
	s := blockingStore{memStore: newMemStore(), release: make(chan struct{}), blocked: make(chan struct{}, 1)}
	wedge, other, neighbour := proto.GuildID(1), proto.GuildID(2), proto.GuildID(3)
	s.put(wedge, "w", `local e, ctx = ... ctx.kv.get("block") return 1`, "Wedge")
	s.put(other, "n", `local e, ctx = ... ctx.kv.set("seen" .. e.data.i, 1) return 1`, "N")
	s.put(neighbour, "n", `local e, ctx = ... ctx.kv.set("seen" .. e.data.i, 1) return 1`, "N")
	w, err := New(0, 1, Options{Store: s, Logger: zerolog.Nop(), NoStartup: true, QueueBytes: 1 << 20, Concurrency: 1}) // one slot: the wedge holds the worker
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t.Cleanup(func() { _ = w.Kill(ctx) })
	wedged := make(chan error, 1)
	go func() {
		_, err := w.DispatchEvent(ctx, wedge, ev("Wedge", "{}"))
		wedged <- err
	}()
	<-s.blocked // the worker is busy until release
	pad := strings.Repeat("p", 100<<10)
	accepted, full := 0, false
	for i := 0; i < 50 && !full; i++ {
		err := w.DispatchEventNoWait(other, ev("N", fmt.Sprintf(`{"i":%d,"pad":%q}`, i, pad)))
		switch proto.CodeOf(err) {
		case "":
			accepted++
		case proto.CodeBacklogFull:
			full = true
			if pe := proto.AsError(err); pe.RetryAfter == 0 || !strings.Contains(pe.Message, "262144") {
				t.Fatalf("backlog_full without Retry-After or the limit: %+v", pe)
			}
		default:
			t.Fatalf("event %d: %v", i, err)
		}
	}
	if !full || accepted != 2 {
		t.Fatalf("accepted %d events of 100 KiB against a tenant's 256 KiB share (full: %v), want 2", accepted, full)
	}
	// The flooding tenant's share is full; its neighbour's events are
	// still accepted, up to the worker's bound.
	nAccepted := 0
	for i := 0; i < 50; i++ {
		err := w.DispatchEventNoWait(neighbour, ev("N", fmt.Sprintf(`{"i":%d,"pad":%q}`, i, pad)))
		if proto.CodeOf(err) == proto.CodeBacklogFull {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		nAccepted++
	}
	if nAccepted != 2 {
		t.Fatalf("neighbour: %d accepted, want 2", nAccepted)
	}
	close(s.release)
	if err := <-wedged; err != nil {
		t.Fatal(err)
	}
	// Every accepted event runs; the bound frees as they do.
	deadline := time.Now().Add(30 * time.Second)
	for {
		items, _ := s.KvFind(ctx, other, "seen")
		nItems, _ := s.KvFind(ctx, neighbour, "seen")
		if len(items) == accepted && len(nItems) == nAccepted {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d accepted events ran, %d of the neighbour's %d", len(items), accepted, len(nItems), nAccepted)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for w.held.Bytes() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := w.held.Bytes(); n != 0 {
		t.Fatalf("%d bytes still counted after the queue emptied", n)
	}
	if err := w.DispatchEventNoWait(other, ev("N", `{"i":999}`)); err != nil {
		t.Fatalf("after the queue emptied: %v", err)
	}
}

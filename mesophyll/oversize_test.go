package mesophyll

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/templateworker/templateworker/proto"
)

// A message over the peer's frame limit is refused before it is sent, in
// either direction, with a coded error of that call alone: the connection
// and the calls after it are unharmed.

const smallFrame = 64 << 10

func TestResponseOverMastersFrameLimitIsResultTooLarge(t *testing.T) {
	h := newHarness(t, ServerOptions{MaxFrame: smallFrame})
	_, c, _ := h.worker(0, newFakeHandler())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The fake handler echoes the event's data as its result: the event
	// fits the worker's (default) limit, the response not the master's.
	bigger := proto.Value(`"` + strings.Repeat("y", smallFrame) + `"`)
	_, err := c.DispatchEvent(ctx, proto.GuildID(1), proto.Event{Name: "echo", Data: bigger})
	wantCode(t, err, proto.CodeResultTooLarge)
	if !strings.Contains(err.Error(), "65536-byte frame limit") {
		t.Fatalf("error does not name the limit: %v", err)
	}
	// The connection is up: the next call is answered.
	v, err := c.DispatchEvent(ctx, proto.GuildID(1), proto.Event{Name: "ping"})
	if err != nil || string(v) != `{"ok":true}` {
		t.Fatalf("call after the oversized one: %s %v", v, err)
	}
	select {
	case d := <-h.disconnected:
		t.Fatalf("worker disconnected: %v", d.err)
	default:
	}
}

func TestRequestOverWorkersFrameLimitIsRefusedBeforeSending(t *testing.T) {
	h := newHarness(t, ServerOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := Dial(ctx, h.url, 0, h.token(0), ClientOptions{MaxFrame: smallFrame})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = cl.Serve(context.Background(), newFakeHandler()) }()
	t.Cleanup(func() { cl.Close() })
	h.waitConnected(0)
	c := h.srv.Conn(0)
	// Go's encoding/json would write each '<' as six bytes: Mesophyll
	// writes one, so this fits.
	code := strings.Repeat("<", smallFrame/2)
	if _, err := c.RunScript(ctx, proto.GuildID(1), "s", code, proto.Event{Name: "RunScript"}); err != nil {
		t.Fatalf("RunScript of %d bytes of '<': %v", len(code), err)
	}
	_, err = c.RunScript(ctx, proto.GuildID(1), "s", strings.Repeat("a", smallFrame), proto.Event{Name: "RunScript"})
	wantCode(t, err, proto.CodeTooLarge)
	if err := c.DispatchEventNoWait(proto.GuildID(1), proto.Event{Name: "x", Data: proto.Value(`"` + strings.Repeat("a", smallFrame) + `"`)}, 1); proto.CodeOf(err) != proto.CodeTooLarge {
		t.Fatalf("oversized nowait event: %v, want request_too_large", err)
	}
	if v, err := c.DispatchEvent(ctx, proto.GuildID(1), proto.Event{Name: "ping"}); err != nil || string(v) != `{"ok":true}` {
		t.Fatalf("call after the oversized ones: %s %v", v, err)
	}
	if n := c.InFlight(); n != 0 {
		t.Fatalf("InFlight = %d after refused sends, want 0", n)
	}
}

func TestStoreAnswerOverWorkersFrameLimitIsAnError(t *testing.T) {
	h := newHarness(t, ServerOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := Dial(ctx, h.url, 0, h.token(0), ClientOptions{MaxFrame: smallFrame})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = cl.Serve(context.Background(), newFakeHandler()) }()
	t.Cleanup(func() { cl.Close() })
	h.waitConnected(0)
	id := proto.GuildID(1)
	value := json.RawMessage(`"` + strings.Repeat("v", 20<<10) + `"`)
	for _, k := range []string{"a", "b", "c", "d"} {
		if err := cl.KvSet(ctx, id, k, value); err != nil {
			t.Fatal(err)
		}
	}
	_, err = cl.KvFind(ctx, id, "")
	wantCode(t, err, proto.CodeKVResultTooLarge)
	h.backend.mu.Lock()
	h.backend.templates[id] = []proto.Template{{Name: "t", Code: strings.Repeat("-", smallFrame)}}
	h.backend.mu.Unlock()
	_, err = cl.Templates(ctx, id)
	wantCode(t, err, proto.CodeTemplateTooLarge)
	// Still connected: a smaller find is answered.
	items, err := cl.KvFind(ctx, id, "a")
	if err != nil || len(items) != 1 {
		t.Fatalf("find after the oversized one: %v %v", items, err)
	}
	// A request of the worker over the master's limit fails the same way.
	h2 := newHarness(t, ServerOptions{MaxFrame: smallFrame})
	cl2, err := Dial(ctx, h2.url, 0, h2.token(0), ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = cl2.Serve(context.Background(), newFakeHandler()) }()
	t.Cleanup(func() { cl2.Close() })
	h2.waitConnected(0)
	err = cl2.KvSet(ctx, id, "big", json.RawMessage(`"`+strings.Repeat("v", smallFrame)+`"`))
	wantCode(t, err, proto.CodeTooLarge)
	if err := cl2.KvSet(ctx, id, "small", json.RawMessage(`1`)); err != nil {
		t.Fatalf("set after the oversized one: %v", err)
	}
}

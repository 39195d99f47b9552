package worker

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/mesophyll"
	"github.com/templateworker/templateworker/proto"
)

// A worker serving pipelined windows over Mesophyll runs a tenant's
// window in order and, after an event that ended with a fatal limit,
// runs none of the window's later events (acknowledged not_run); the next
// window, another tenant's window and a window whose event raised a
// template error of its own run in full.
func TestWindowBarrier(t *testing.T) {
	s := newMemStore()
	a, b := proto.GuildID(1), proto.GuildID(2)
	count := `local event, ctx = ... ctx.kv.set("n", (ctx.kv.get("n") or 0) + 1)`
	for _, g := range []proto.Id{a, b} {
		s.put(g, "count", count, "Ping")
		s.put(g, "spin", `while true do end`, "Spin")
		s.put(g, "raise", `error("of its own")`, "Raise")
	}
	limits := DefaultLimits
	limits.Timeout = 0 // the instruction budget ends the spin, however slow the machine
	limits.MaxInstructions = 100000
	th, err := New(0, 1, Options{Store: s, Limits: limits, Logger: zerolog.Nop(), NoStartup: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = th.Kill(context.Background()) })

	acks := make(chan proto.Ack, 64)
	conns := make(chan *mesophyll.Conn, 1)
	srv := mesophyll.NewServer(mesophyll.ServerOptions{
		Workers:   1,
		Logger:    zerolog.Nop(),
		OnConnect: func(_ int, c *mesophyll.Conn) { conns <- c },
		OnAck:     func(_ int, ack proto.Ack) { acks <- ack },
	})
	mux := http.NewServeMux()
	mux.Handle("/ws", srv)
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	tok, err := mesophyll.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	srv.SetToken(0, tok)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cl, err := mesophyll.Dial(ctx, "ws"+strings.TrimPrefix(hs.URL, "http")+"/ws", 0, tok, mesophyll.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- cl.Serve(ctx, processHandler{th}) }()
	defer func() { cancel(); <-served }()
	c := <-conns

	ev := func(name string) proto.Event { return proto.Event{Name: name, Data: proto.Value(`{}`)} }
	counted := func(g proto.Id) int {
		v, _, _ := s.KvGet(ctx, g, "n")
		n := 0
		for _, ch := range string(v) {
			n = n*10 + int(ch-'0')
		}
		return n
	}
	// The tenants' VMs are warm: windowed events may run inline too.
	for _, g := range []proto.Id{a, b} {
		if _, err := c.DispatchEvent(ctx, g, ev("Ping")); err != nil {
			t.Fatal(err)
		}
	}
	seq := uint64(0)
	send := func(g proto.Id, win uint64, names ...string) []uint64 {
		var seqs []uint64
		for i, name := range names {
			seq++
			if err := c.DispatchEventWindow(g, ev(name), seq, win, i == len(names)-1); err != nil {
				t.Fatal(err)
			}
			seqs = append(seqs, seq)
		}
		return seqs
	}
	codes := map[uint64]string{}
	await := func(seqs ...uint64) {
		t.Helper()
		timeout := time.After(time.Minute)
		for {
			missing := false
			for _, s := range seqs {
				if _, ok := codes[s]; !ok {
					missing = true
				}
			}
			if !missing {
				return
			}
			select {
			case ack := <-acks:
				codes[ack.Seq] = ack.Code
			case <-timeout:
				t.Fatalf("acks %v missing (have %v)", seqs, codes)
			}
		}
	}
	expect := func(seqs []uint64, want ...string) {
		t.Helper()
		await(seqs...)
		for i, s := range seqs {
			if codes[s] != want[i] {
				t.Fatalf("ack of event %d (seq %d) = %q, want %q (all: %v)", i, s, codes[s], want[i], codes)
			}
		}
	}

	w1 := send(a, 1, "Ping", "Spin", "Ping", "Ping")
	w2 := send(b, 2, "Ping", "Ping") // another tenant, sent meanwhile
	expect(w1, "", proto.CodeCPULimit, proto.CodeNotRun, proto.CodeNotRun)
	expect(w2, "", "")
	if n := counted(a); n != 2 {
		t.Fatalf("tenant a ran Ping %d times, want 2 (warm-up, the window's first): the barrier let successors run", n)
	}
	if n := counted(b); n != 3 {
		t.Fatalf("tenant b ran Ping %d times, want 3", n)
	}
	// A new window of the failed tenant runs in full; a template's own
	// error does not stop its window.
	w3 := send(a, 3, "Ping", "Raise", "Ping")
	expect(w3, "", proto.CodeScriptError, "")
	if n := counted(a); n != 4 {
		t.Fatalf("tenant a ran Ping %d times, want 4", n)
	}
	// A window whose last frame never came (its master died) is replaced
	// by the tenant's next window, which runs.
	seq++
	if err := c.DispatchEventWindow(a, ev("Spin"), seq, 4, false); err != nil {
		t.Fatal(err)
	}
	expect([]uint64{seq}, proto.CodeCPULimit)
	w5 := send(a, 5, "Ping")
	expect(w5, "")
	if n := counted(a); n != 5 {
		t.Fatalf("tenant a ran Ping %d times, want 5", n)
	}
}

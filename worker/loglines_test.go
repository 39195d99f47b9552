package worker

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/internal/syncbuf"
	"github.com/templateworker/templateworker/internal/tenantlog"
	"github.com/templateworker/templateworker/proto"
)

// TestFailureLinesBoundedPerTenant: a tenant whose nowait events all fail
// with a 4 KiB error gets at most a burst of "nowait dispatch failed"
// lines, each with the error cut to tenantlog.MaxErrorText bytes, instead
// of one 4 KiB line per event; a neighbour's failure still gets its line.
func TestFailureLinesBoundedPerTenant(t *testing.T) {
	s := newMemStore()
	bad, good := proto.GuildID(1), proto.GuildID(2)
	s.put(bad, "fail", `error(("x"):rep(4000))`, "Fail")
	s.put(good, "fail", `error("plain")`, "Fail")
	s.put(bad, "ok", `return true`, "Ok")
	var sink syncbuf.Buffer
	w, err := New(0, 1, Options{Store: s, Limits: DefaultLimits, Concurrency: 1, Logger: zerolog.New(&sink), NoStartup: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t.Cleanup(func() { _ = w.Kill(ctx) })
	const events = 40
	start := time.Now()
	for i := range events {
		if err := w.DispatchEventNoWait(bad, proto.Event{Name: "Fail", Data: proto.Value(`{}`)}); err != nil {
			t.Fatalf("nowait %d: %v", i, err)
		}
	}
	if err := w.DispatchEventNoWait(good, proto.Event{Name: "Fail", Data: proto.Value(`{}`)}); err != nil {
		t.Fatal(err)
	}
	// One core runs its queue in order: once a waited call of each tenant
	// has run, so have their nowait events.
	for _, id := range []proto.Id{bad, good} {
		if _, err := w.DispatchEvent(ctx, id, proto.Event{Name: "Ok", Data: proto.Value(`{}`)}); err != nil {
			t.Fatal(err)
		}
	}
	// The bucket refills by a line a second while the events run.
	most := tenantlog.DefaultBurst + 1 + int(time.Since(start).Seconds())
	var badLines, goodLines int
	for _, line := range bytes.Split(sink.Take(), []byte("\n")) {
		if !bytes.Contains(line, []byte("nowait dispatch failed")) {
			continue
		}
		if len(line) > tenantlog.MaxErrorText+512 {
			t.Fatalf("a failure line of %d bytes: the error is not cut", len(line))
		}
		switch {
		case strings.Contains(string(line), `"tenant":"`+bad.String()+`"`):
			badLines++
		case strings.Contains(string(line), `"tenant":"`+good.String()+`"`):
			goodLines++
		}
	}
	if badLines == 0 || badLines > most || goodLines != 1 {
		t.Fatalf("%d lines for %d failed events of the failing tenant (want 1 to %d), %d for its neighbour (want 1)",
			badLines, events, most, goodLines)
	}
}

// TestAbortLinesBoundedPerTenant: "discarding tenant VM after an aborted
// call" is one line per aborted call only up to the tenant's burst.
func TestAbortLinesBoundedPerTenant(t *testing.T) {
	lim := DefaultLimits
	lim.MaxInstructions = 100_000
	var sink syncbuf.Buffer
	m := NewManager(0, 1, newMemStore(), lim, zerolog.New(&sink))
	m.lines.Now = func() time.Time { return time.Unix(1000, 0) } // no refill, however slow the calls
	ctx := context.Background()
	for i := range 30 {
		_, err := m.RunScript(ctx, proto.GuildID(1), "spin", `while true do end`, proto.Event{Name: "E"})
		if proto.CodeOf(err) != proto.CodeCPULimit {
			t.Fatalf("call %d: %v, want cpu_limit", i, err)
		}
	}
	_, err := m.RunScript(ctx, proto.GuildID(2), "spin", `while true do end`, proto.Event{Name: "E"})
	if proto.CodeOf(err) != proto.CodeCPULimit {
		t.Fatalf("neighbour: %v", err)
	}
	out := sink.String()
	n := strings.Count(out, "discarding tenant VM after an aborted call")
	if n != tenantlog.DefaultBurst+1 || !strings.Contains(out, `"tenant":"`+proto.GuildID(2).String()+`"`) {
		t.Fatalf("%d lines for 31 aborted calls of 2 tenants, want %d (a burst of the first, 1 of the second):\n%s", n, tenantlog.DefaultBurst+1, out)
	}
}

package main

import (
	"strings"
	"testing"
	"time"

	"github.com/templateworker/templateworker/proto"
)

// TestEventsPendingAndCancelCLI: `templateworker events pending` lists a
// tenant's delayed and scheduled events, `events cancel` deletes one before
// it runs (a later event of the tenant runs, the cancelled one never: a
// tenant's events run in order), and a second cancel of it, another
// tenant's id or a bad id fail with one line and exit 1.
func TestEventsPendingAndCancelCLI(t *testing.T) {
	m := startMaster(t, "", "--process-workers", "1")
	g, other := proto.GuildID(1234567890123456789), proto.GuildID(42)
	const tpl = `local event, ctx = ...
if event.name == "Plan" then return ctx.events.schedule(3600, "Later", {}) end
ctx.kv.set("ran:" .. event.data.what, true)`
	for _, id := range []proto.Id{g, other} {
		if out, errOut, code := m.cliStdin(tpl, "template", "put", "--tenant", id.String(), "--name", "t", "--events", "Plan,Run", "-"); code != 0 {
			t.Fatalf("template put: %s %s", out, errOut)
		}
	}
	accepted := func(id proto.Id, what, delay string) string {
		out, errOut, code := m.cli("dispatch", "--tenant", id.String(), "--event", "Run", "--data", `{"what":"`+what+`"}`, "--delay", delay)
		if code != 0 {
			t.Fatalf("dispatch --delay: %s %s", out, errOut)
		}
		_, rest, _ := strings.Cut(out, `"id": "`)
		evID, _, _ := strings.Cut(rest, `"`)
		if evID == "" {
			t.Fatalf("no id in %q", out)
		}
		return evID
	}
	cancelled := accepted(g, "cancelled", "1s")
	accepted(g, "marker", "2s")
	otherID := accepted(other, "other", "1h")
	out, errOut, code := m.cli("dispatch", "--tenant", g.String(), "--event", "Plan")
	if code != 0 {
		t.Fatalf("dispatch Plan: %s %s", out, errOut)
	}

	out, errOut, code = m.cli("events", "pending", "--tenant", g.String())
	if code != 0 || !strings.Contains(out, "ID  EVENT") || strings.Count(out, "delayed") != 2 || strings.Count(out, "scheduled") != 1 {
		t.Fatalf("events pending: %d %q %q", code, out, errOut)
	}
	if out, errOut, code = m.cli("events", "pending", "--tenant", g.String(), "--scheduled", "--json"); code != 0 || !strings.Contains(out, `"count": 1`) {
		t.Fatalf("events pending --scheduled --json: %d %q %q", code, out, errOut)
	}
	if out, errOut, code = m.cli("events", "cancel", "--tenant", g.String(), cancelled); code != 0 || out != "event "+cancelled+" cancelled\n" {
		t.Fatalf("events cancel: %d %q %q", code, out, errOut)
	}
	for _, c := range []struct{ args []string }{
		{[]string{"events", "cancel", "--tenant", g.String(), cancelled}},
		{[]string{"events", "cancel", "--tenant", g.String(), otherID}},
		{[]string{"events", "cancel", "--tenant", g.String(), "x1"}},
		{[]string{"events", "cancel", "--tenant", g.String()}},
		{[]string{"events", "pending"}},
	} {
		out, errOut, code := m.cli(c.args...)
		if code != 1 || strings.Count(strings.TrimSpace(errOut), "\n") != 0 || !strings.HasPrefix(errOut, "templateworker: ") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q: want exit 1 and one line", c.args, code, out, errOut)
		}
	}
	waitFor(t, time.Minute, func() bool { return kvValue(t, m, g, "ran:marker") != nil })
	if v := kvValue(t, m, g, "ran:cancelled"); v != nil {
		t.Fatalf("the cancelled event ran: %s", v)
	}
	out, _, _ = m.cli("events", "pending", "--tenant", other.String())
	if !strings.Contains(out, otherID) {
		t.Fatalf("the other tenant's event is gone: %q", out)
	}
}

// TestNowaitTooDeepIsRefusedAtAccept: event data nested deeper than the
// worker decodes is refused with 400 before a nowait call is answered 202
// (it used to be accepted and then fail at its delivery, counted as
// delivered without running), and the same for a waited call; data at the
// bound is accepted and runs.
func TestNowaitTooDeepIsRefusedAtAccept(t *testing.T) {
	m := startMaster(t, "", "--process-workers", "1")
	g := proto.GuildID(1234567890123456789)
	const tpl = `local event, ctx = ... ctx.kv.set("ran", (ctx.kv.get("ran") or 0) + 1) return type(event.data)`
	if out, errOut, code := m.cliStdin(tpl, "template", "put", "--tenant", g.String(), "--name", "t", "--events", "Deep", "-"); code != 0 {
		t.Fatalf("template put: %s %s", out, errOut)
	}
	deep := strings.Repeat("[", 202) + strings.Repeat("]", 202)
	for _, extra := range [][]string{{"--nowait"}, nil, {"--delay", "1s"}} {
		args := append([]string{"dispatch", "--tenant", g.String(), "--event", "Deep", "--data", deep}, extra...)
		out, errOut, code := m.cli(args...)
		if code != 1 || !strings.Contains(errOut, "bad_request") || !strings.Contains(errOut, "nested deeper than 200 levels") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q: want bad_request naming the bound", extra, code, out, errOut)
		}
	}
	ok := strings.Repeat("[", 201) + strings.Repeat("]", 201)
	if out, errOut, code := m.cli("dispatch", "--tenant", g.String(), "--event", "Deep", "--data", ok, "--nowait"); code != 0 {
		t.Fatalf("data at the bound: %d %s %s", code, out, errOut)
	}
	waitFor(t, time.Minute, func() bool { return string(kvValue(t, m, g, "ran")) == "1" })
}

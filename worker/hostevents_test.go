package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/internal/syncbuf"
	"github.com/templateworker/templateworker/proto"
)

// TestEventsScheduleListCancel: ctx.events.schedule stores {name, data,
// author = nil} for the VM's own tenant at now + seconds and returns the
// id; list shows it; cancel removes it once.
func TestEventsScheduleListCancel(t *testing.T) {
	s := newMemStore()
	m := newTestManager(t, s)
	before := time.Now()
	v, err := m.RunScript(context.Background(), g1, "s", `local e, ctx = ...
		local a = ctx.events.schedule(30, "Remind", {what = "tea", n = 2})
		local b = ctx.events.schedule(0.5, "Soon")
		return {a = a, b = b}`, ev("x", ""))
	if err != nil {
		t.Fatal(err)
	}
	var ids struct{ A, B string }
	if err := json.Unmarshal(v, &ids); err != nil || ids.A == "" || ids.B == "" || ids.A == ids.B {
		t.Fatalf("ids %s, %v", v, err)
	}
	list := s.events[g1]
	if len(list) != 2 || list[0].ID != ids.B || list[1].ID != ids.A {
		t.Fatalf("stored %+v, want %s then %s (delivery order)", list, ids.B, ids.A)
	}
	a := list[1]
	if a.Event.Name != "Remind" || a.Event.Author != nil || string(a.Event.Data) != `{"n":2,"what":"tea"}` {
		t.Fatalf("stored event %+v data %s", a.Event, a.Event.Data)
	}
	if d := a.DeliverAt.Sub(before); d < 30*time.Second || d > 30*time.Second+time.Minute {
		t.Fatalf("deliver at now + %v, want 30s", d)
	}
	if string(list[0].Event.Data) != "null" {
		t.Fatalf("data of an event without data: %s", list[0].Event.Data)
	}
	if other := s.events[proto.UserID(5)]; len(other) != 0 {
		t.Fatalf("another tenant got events: %+v", other)
	}

	v, err = m.RunScript(context.Background(), g1, "s", `local e, ctx = ...
		local l = ctx.events.list()
		return {n = #l, first = l[1].id, second = l[2].id, name = l[2].name, what = l[2].data.what,
			at = l[2].deliver_at - os.time(), nodata = l[1].data == nil}`, ev("x", ""))
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		N             int
		First, Second string
		Name, What    string
		At            float64
		NoData        bool
	}
	if err := json.Unmarshal(v, &got); err != nil {
		t.Fatal(err)
	}
	if got.N != 2 || got.First != ids.B || got.Second != ids.A || got.Name != "Remind" || got.What != "tea" || !got.NoData ||
		got.At < 25 || got.At > 31 {
		t.Fatalf("list: %s", v)
	}

	v, err = m.RunScript(context.Background(), g1, "s", `local e, ctx = ...
		local id = ...
		return {ctx.events.cancel("`+ids.A+`"), ctx.events.cancel("`+ids.A+`"), ctx.events.cancel("nope"), ctx.events.cancel(""), #ctx.events.list()}`, ev("x", ""))
	if err != nil || string(v) != `[true,false,false,false,1]` {
		t.Fatalf("cancel: %s, %v", v, err)
	}
	// Another tenant cannot cancel it.
	v, err = m.RunScript(context.Background(), proto.UserID(5), "s", `local e, ctx = ... return ctx.events.cancel("`+ids.B+`")`, ev("x", ""))
	if err != nil || string(v) != "false" {
		t.Fatalf("another tenant's cancel: %s, %v", v, err)
	}
	if len(s.events[g1]) != 1 {
		t.Fatalf("events left %+v", s.events[g1])
	}
}

// TestEventsBadArguments: every bad argument is a Lua error naming the
// problem (a script error the template may catch), and nothing is stored.
func TestEventsBadArguments(t *testing.T) {
	s := newMemStore()
	m := newTestManager(t, s)
	for code, want := range map[string]string{
		`ctx.events.schedule(-1, "A")`:                         "seconds must not be negative",
		`ctx.events.schedule(0/0, "A")`:                        "got NaN",
		`ctx.events.schedule(1/0, "A")`:                        "at most 31536000 (one year)",
		`ctx.events.schedule(366*86400, "A")`:                  "at most 31536000 (one year)",
		`ctx.events.schedule("10", "A")`:                       "seconds must be a number, got string",
		`ctx.events.schedule(nil, "A")`:                        "seconds must be a number, got nil",
		`ctx.events.schedule(1, "")`:                           "bad name: event name must not be empty",
		`ctx.events.schedule(1, 5)`:                            "name must be a string, got number",
		`ctx.events.schedule(1, string.rep("n", 129))`:         "at most 128 allowed",
		`ctx.events.schedule(1, "A", print)`:                   "data cannot be stored",
		`ctx.events.schedule(1, "A", string.rep("x", 262144))`: "data is larger than 262144 bytes encoded",
		`ctx.events.cancel(5)`:                                 "id must be a string",
	} {
		_, err := m.RunScript(context.Background(), g1, "s", `local e, ctx = ... `+code, ev("x", ""))
		if proto.CodeOf(err) != proto.CodeScriptError || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want script_error containing %q", code, err, want)
		}
	}
	if len(s.events[g1]) != 0 {
		t.Fatalf("bad calls stored %+v", s.events[g1])
	}
	// A year ahead exactly is fine, and so is data just under the bound.
	if _, err := m.RunScript(context.Background(), g1, "s", `local e, ctx = ...
		ctx.events.schedule(365*86400, "A", string.rep("x", 262142))`, ev("x", "")); err != nil {
		t.Fatal(err)
	}
}

// TestEventsBacklogFull: past the tenant's bound schedule fails with a Lua
// error whose code is backlog_full: the call ends with that code unless
// the template catches it.
func TestEventsBacklogFull(t *testing.T) {
	s := newMemStore()
	s.eventBound = 3
	m := newTestManager(t, s)
	_, err := m.RunScript(context.Background(), g1, "s", `local e, ctx = ...
		for i = 1, 10 do ctx.events.schedule(60, "Tick", i) end`, ev("x", ""))
	if proto.CodeOf(err) != proto.CodeBacklogFull || !strings.Contains(err.Error(), "ctx.events.schedule: backlog_full: ") ||
		!strings.Contains(err.Error(), "3 pending events") {
		t.Fatalf("got %v, want backlog_full", err)
	}
	if n := len(s.events[g1]); n != 3 {
		t.Fatalf("%d events stored, want 3", n)
	}
	v, err := m.RunScript(context.Background(), g1, "s", `local e, ctx = ...
		local ok, msg = pcall(ctx.events.schedule, 60, "Tick")
		return {ok = ok, full = msg:find("backlog_full", 1, true) ~= nil}`, ev("x", ""))
	if err != nil || string(v) != `{"full":true,"ok":false}` {
		t.Fatalf("caught: %s, %v", v, err)
	}
}

// TestEventsChargedToTheCall: every ctx.events call costs the call's
// instruction budget, so a loop of them ends with cpu_limit.
func TestEventsChargedToTheCall(t *testing.T) {
	s := newMemStore()
	limits := DefaultLimits
	limits.MaxInstructions = 200_000
	m := NewManager(0, 1, s, limits, zerolog.Nop())
	_, err := m.RunScript(context.Background(), g1, "s", `local e, ctx = ...
		for i = 1, 10000 do ctx.events.cancel("1") end`, ev("x", ""))
	if proto.CodeOf(err) != proto.CodeCPULimit {
		t.Fatalf("got %v, want cpu_limit", err)
	}
}

// TestReadmeReminderTemplate runs the README's reminder template as
// written there: set a reminder, list it, let it fire (twice, as a
// redelivery would), cancel another.
func TestReadmeReminderTemplate(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "A reminder template:")
	if !ok {
		t.Fatal("README has no reminder template")
	}
	_, rest, _ = strings.Cut(rest, "```lua\n")
	code, _, ok := strings.Cut(rest, "```")
	if !ok {
		t.Fatal("README's reminder template is not closed")
	}
	s := newMemStore()
	s.put(g1, "remind", code, "Remind", "Reminder", "Reminders")
	m := newTestManager(t, s)
	ctx := context.Background()
	v, err := m.Dispatch(ctx, g1, ev("Remind", `{"who":"42","text":"tea","in":600}`))
	if err != nil || string(v) != `{"remind":{"id":"1"}}` {
		t.Fatalf("Remind: %s, %v", v, err)
	}
	v, err = m.Dispatch(ctx, g1, ev("Reminders", `null`))
	if err != nil || !strings.HasPrefix(string(v), `{"remind":[{"at":"20`) || !strings.Contains(string(v), `"id":"1","text":"tea"}]}`) {
		t.Fatalf("Reminders: %s, %v", v, err)
	}
	fire := s.events[g1][0].Event
	fire.ID = "1"
	for i, want := range []string{`{"remind":{"notify":"42","text":"tea"}}`, `{"remind":"duplicate"}`} {
		if v, err := m.Dispatch(ctx, g1, fire); err != nil || string(v) != want {
			t.Fatalf("Reminder delivery %d: %s, %v; want %s", i, v, err, want)
		}
	}
	v, err = m.Dispatch(ctx, g1, ev("Reminders", `{"cancel":"1"}`))
	if err != nil || string(v) != `{"remind":{"cancelled":true}}` {
		t.Fatalf("cancel: %s, %v", v, err)
	}
	v, err = m.Dispatch(ctx, g1, ev("Reminders", `null`))
	if err != nil || string(v) != `{"remind":[]}` {
		t.Fatalf("empty list: %s, %v", v, err)
	}
}

// TestStoreTrafficCharged: the bytes a store call carries cost the call
// one step each (storeBytesPerStep), besides the JSON work: with a budget
// of 1,000,000 steps a loop of 250 KB ctx.kv.set, ctx.kv.get, ctx.kv.find,
// ctx.events.schedule or ctx.events.list calls ends with cpu_limit after
// 3 of them, not after the 23 (get, find, list) to 47 (set, schedule)
// the JSON charge alone (1 step per 16 bytes) allowed.
func TestStoreTrafficCharged(t *testing.T) {
	lim := DefaultLimits
	lim.MaxInstructions = 1_000_000
	for _, c := range []struct{ name, setup, op string }{
		{"set", ``, `ctx.kv.set("k", v)`},
		{"get", `ctx.kv.set("k", v)`, `local x = ctx.kv.get("k")`},
		{"find", `ctx.kv.set("k", v)`, `local x = ctx.kv.find("k")`},
		{"schedule", ``, `ctx.events.schedule(60, "E", v)`},
		{"list", `ctx.events.schedule(60, "E", v)`, `local x = ctx.events.list()`},
	} {
		t.Run(c.name, func(t *testing.T) {
			sink := &syncbuf.Buffer{}
			m := NewManager(0, 1, newMemStore(), lim, zerolog.New(sink))
			id := proto.GuildID(1 << 22)
			code := `local e, ctx = ... local v = ("v"):rep(250000) ` + c.setup + `
				while true do ` + c.op + ` ctx.log.info("done") end`
			_, err := m.RunScript(context.Background(), id, "s", code, proto.Event{Name: "E"})
			if proto.CodeOf(err) != proto.CodeCPULimit {
				t.Fatalf("a loop of 250 KB %s calls: %v, want cpu_limit", c.name, err)
			}
			if n := bytes.Count(sink.Take(), []byte(`"message":"done"`)); n > 4 {
				t.Fatalf("%d calls of 250 KB %s ran within 1,000,000 steps, want at most 4 (1 step per byte)", n, c.name)
			}
		})
	}
}

// TestStoreRoundTripsCharged: every store call costs storeCallSteps of the
// call's budget however little it carries (a round trip to the master
// costs both processes ~100 µs of CPU, ~3,000 VM instructions): 10,000
// ctx.kv.get calls of a missing key do not fit in 10,000,000 steps, nor
// 10,000 ctx.kv.delete or ctx.events.cancel calls.
func TestStoreRoundTripsCharged(t *testing.T) {
	lim := DefaultLimits
	lim.MaxInstructions = 10_000_000
	for _, op := range []string{`ctx.kv.get("missing")`, `ctx.kv.delete("missing")`, `ctx.events.cancel("12345")`} {
		m := NewManager(0, 1, newMemStore(), lim, zerolog.Nop())
		code := `local e, ctx = ... for i = 1, 10000 do ` + op + ` end return 1`
		if _, err := m.RunScript(context.Background(), proto.GuildID(1<<22), "s", code, proto.Event{Name: "E"}); proto.CodeOf(err) != proto.CodeCPULimit {
			t.Fatalf("10,000 calls of %s in 10,000,000 steps: %v, want cpu_limit", op, err)
		}
	}
}

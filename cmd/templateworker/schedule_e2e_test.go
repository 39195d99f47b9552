package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/templateworker/templateworker/internal/pgtest"
	"github.com/templateworker/templateworker/proto"
)

// kvValue returns the tenant's value of key (nil when absent).
func kvValue(t *testing.T, m *runningMaster, id proto.Id, key string) json.RawMessage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	items, err := m.api.KV(ctx, id, key)
	if err != nil {
		t.Fatalf("kv list: %v", err)
	}
	for _, it := range items {
		if it.Key == key {
			return it.Value
		}
	}
	return nil
}

const reminderTemplate = `local event, ctx = ...
if event.name == "Setup" then
  local id = ctx.events.schedule(2, "Remind", {what = "tea"})
  local other = ctx.events.schedule(2, "Remind", {what = "cancelled"})
  local cancelled = ctx.events.cancel(other)
  local list = ctx.events.list()
  return {id = id, cancelled = cancelled, again = ctx.events.cancel(other), n = #list, listed = list[1].id}
end
-- Remind: count the runs of each event id (a redelivery has the same id)
local key = "runs:" .. event.id
ctx.kv.set(key, (ctx.kv.get(key) or 0) + 1)
ctx.kv.set("fired:" .. event.data.what, {id = event.id, no_author = event.author == nil})
`

// TestScheduledEventFiresOnceAcrossMasterKill: an event scheduled 2 s ahead
// by ctx.events.schedule, with the master killed with -9 and started again
// on the same data dir in between, runs once, with author nil and its id;
// the one cancelled never runs.
func TestScheduledEventFiresOnceAcrossMasterKill(t *testing.T) {
	dir := t.TempDir()
	scheduledAcrossKill(t, func() *runningMaster { return startMaster(t, dir, "--process-workers", "1") })
}

// TestPostgresScheduledEventFiresOnceAcrossMasterKill is the same on
// PostgreSQL.
func TestPostgresScheduledEventFiresOnceAcrossMasterKill(t *testing.T) {
	base, _ := pgTestDatabase(t)
	dsn, _, _ := pgtest.Schema(t, base)
	scheduledAcrossKill(t, func() *runningMaster { return startPostgresMaster(t, dsn, "--process-workers", "1") })
}

// scheduledAcrossKill runs the scheduled-event test with masters that
// start must start on the same store.
func scheduledAcrossKill(t *testing.T, start func() *runningMaster) {
	m := start()
	g := proto.GuildID(1234567890123456789)
	if out, errOut, code := m.cliStdin(reminderTemplate, "template", "put", "--tenant", g.String(), "--name", "remind", "--events", "Setup,Remind", "-"); code != 0 {
		t.Fatalf("template put: %s %s", out, errOut)
	}
	out, errOut, code := m.cli("dispatch", "--tenant", g.String(), "--event", "Setup")
	if code != 0 {
		t.Fatalf("dispatch Setup: %s %s", out, errOut)
	}
	var res struct {
		Remind struct {
			ID, Listed       string
			Cancelled, Again bool
			N                int
		}
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("Setup result %q: %v", out, err)
	}
	r := res.Remind
	if r.ID == "" || !r.Cancelled || r.Again || r.N != 1 || r.Listed != r.ID {
		t.Fatalf("Setup result %s", out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pending, err := m.api.PendingEvents(ctx, g, true)
	if err != nil {
		t.Fatal(err)
	}
	var due time.Time
	if len(pending) == 1 && pending[0].ID == r.ID {
		due = pending[0].DeliverAt
		if !pending[0].Scheduled || pending[0].Event.Name != "Remind" {
			t.Fatalf("pending %+v", pending[0])
		}
	} else if kvValue(t, m, g, "fired:tea") == nil {
		t.Fatalf("the scheduled event is neither pending nor run: %+v", pending)
	} else {
		t.Log("the machine is slow: the event ran before the master was killed")
	}
	killedAt := time.Now()
	m.stop(syscall.SIGKILL)

	m2 := start()
	waitFor(t, time.Minute, func() bool { return kvValue(t, m2, g, "fired:tea") != nil })
	waitFor(t, time.Minute, func() bool {
		p, err := m2.api.PendingEvents(ctx, g, false)
		return err == nil && len(p) == 0
	})
	var fired struct {
		ID       string `json:"id"`
		NoAuthor bool   `json:"no_author"`
	}
	if err := json.Unmarshal(kvValue(t, m2, g, "fired:tea"), &fired); err != nil || fired.ID != r.ID || !fired.NoAuthor {
		t.Fatalf("fired %+v, %v (want id %s, author nil)", fired, err, r.ID)
	}
	runs := string(kvValue(t, m2, g, "runs:"+r.ID))
	switch {
	case killedAt.Before(due) && runs != "1":
		t.Fatalf("the event ran %s times, want 1", runs)
	case runs != "1" && runs != "2":
		t.Fatalf("the event ran %s times, want 1 (or 2 when the kill hit its delivery)", runs)
	case runs == "2":
		t.Log("the machine is slow: the kill hit the event's delivery, which ran again after the restart (at least once)")
	}
	if v := kvValue(t, m2, g, "fired:cancelled"); v != nil {
		t.Fatalf("the cancelled event ran: %s", v)
	}
}

// TestScheduleBoundAndDelayedHTTP: past --event-backlog-tenant,
// ctx.events.schedule raises a Lua error with code backlog_full (caught,
// or the call's 503), and ?delay= events are refused the same way; bad
// delays are 400 from the real binary.
func TestScheduleBoundAndDelayedHTTP(t *testing.T) {
	m := startMaster(t, "", "--thread-workers", "1", "--event-backlog-tenant", "3")
	g := proto.GuildID(1234567890123456789)
	tpl := `local event, ctx = ...
local ids, msg = {}, nil
for i = 1, 5 do
  local ok, id = pcall(ctx.events.schedule, 3600, "Later", i)
  if not ok then msg = id break end
  ids[#ids + 1] = id
end
if event.name == "Raise" then ctx.events.schedule(3600, "Later") end
return {n = #ids, msg = msg}
`
	if out, errOut, code := m.cliStdin(tpl, "template", "put", "--tenant", g.String(), "--name", "fill", "--events", "Fill,Raise", "-"); code != 0 {
		t.Fatalf("template put: %s %s", out, errOut)
	}
	out, errOut, code := m.cli("dispatch", "--tenant", g.String(), "--event", "Fill")
	if code != 0 || !strings.Contains(out, `"n":3`) || !strings.Contains(out, "ctx.events.schedule: backlog_full: ") ||
		!strings.Contains(out, "--event-backlog-tenant") {
		t.Fatalf("Fill: %d %s %s", code, out, errOut)
	}
	out, errOut, code = m.cli("dispatch", "--tenant", g.String(), "--event", "Raise")
	if code == 0 || !strings.HasPrefix(errOut, "templateworker: backlog_full: ") || !strings.Contains(errOut, "ctx.events.schedule") {
		t.Fatalf("Raise: %d %s %s", code, out, errOut)
	}

	post := func(query, body string) (int, string, http.Header) {
		req, _ := http.NewRequest("POST", m.addr+"/v1/tenants/guild/1234567890123456789/events"+query, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+m.token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	ev := `{"name":"Later","author":null,"data":1}`
	status, body, h := post("?wait=false&delay=30s", ev)
	if status != 503 || !strings.Contains(body, `"backlog_full"`) || h.Get("Retry-After") == "" {
		t.Fatalf("delayed past the bound: %d %s", status, body)
	}
	for _, c := range []struct{ query, body, want string }{
		{"?wait=false&delay=-1s", ev, "negative"},
		{"?delay=30s", ev, "need ?wait=false"},
		{"?wait=false", `{"name":"Later","deliver_at":"next week"}`, "RFC 3339"},
		{"?wait=false&delay=9000h", ev, "more than one year"},
	} {
		status, body, _ := post(c.query, c.body)
		if status != 400 || !strings.Contains(body, `"bad_request"`) || !strings.Contains(body, c.want) {
			t.Errorf("%s %s: %d %s, want 400 with %q", c.query, c.body, status, body, c.want)
		}
	}
	// The tenant's three scheduled events are listed, in delivery order.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := m.api.PendingEvents(ctx, g, false)
	if err != nil || len(p) != 3 || !p[0].Scheduled || string(p[2].Event.Data) != "3" {
		t.Fatalf("pending %+v, %v", p, err)
	}
	// The CLI's --delay is refused the same way, in one line.
	if out, errOut, code := m.cli("dispatch", "--tenant", g.String(), "--event", "Later", "--delay", "1m"); code != 1 ||
		!strings.HasPrefix(errOut, "templateworker: backlog_full: ") || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
		t.Fatalf("dispatch --delay past the bound: %d %q %q", code, out, errOut)
	}
	if out, errOut, code := m.cli("dispatch", "--tenant", g.String(), "--event", "Later", "--delay", "-1m"); code != 1 ||
		!strings.Contains(errOut, "bad_request: delay \"-1m0s\" is negative") {
		t.Fatalf("dispatch --delay -1m: %d %q %q", code, out, errOut)
	}
	// Another tenant is not affected by this one's full backlog.
	other := proto.GuildID(42 << 22)
	if a, err := m.api.DispatchAt(ctx, other, proto.Event{Name: "Later", Data: proto.Null}, time.Now().Add(time.Hour)); err != nil || a.ID == "" {
		t.Fatalf("another tenant's delayed event: %+v, %v", a, err)
	}
	out, errOut, code = m.cli("dispatch", "--tenant", other.String(), "--event", "Later", "--delay", "90s")
	var acc struct {
		Accepted  bool      `json:"accepted"`
		ID        string    `json:"id"`
		DeliverAt time.Time `json:"deliver_at"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &acc) != nil || !acc.Accepted || acc.ID == "" ||
		time.Until(acc.DeliverAt) < 30*time.Second || time.Until(acc.DeliverAt) > 90*time.Second {
		t.Fatalf("dispatch --delay 90s: %d %s %s", code, out, errOut)
	}
}

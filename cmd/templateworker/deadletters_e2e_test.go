package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/templateworker/templateworker/client"
	"github.com/templateworker/templateworker/proto"
)

// poisonTemplate spins into the instruction limit until the tenant's KV
// has "fixed"; then it records the run of each event id.
const poisonTemplate = `local event, ctx = ...
if not ctx.kv.get("fixed") then while true do end end
ctx.kv.set("ran:" .. event.id, true)
`

// TestDeadLettersThroughCLIAndHTTP: poison events reach the dead-letter
// table after --event-max-attempts tries; the CLI lists them (all or one
// tenant's), retries one (delivered once the template is fixed) and purges
// by id, by tenant and all; the HTTP routes answer 404 for what is gone.
func TestDeadLettersThroughCLIAndHTTP(t *testing.T) {
	m := startMaster(t, "", "--process-workers", "1", "--event-max-attempts", "2", "--event-retry-backoff", "10ms",
		"--event-retry-backoff-max", "20ms", "--lua-max-instructions", "200000", "--quarantine-after", "0")
	g1, g2 := proto.GuildID(1234567890123456789), proto.UserID(42)
	for _, id := range []proto.Id{g1, g2} {
		if out, errOut, code := m.cliStdin(poisonTemplate, "template", "put", "--tenant", id.String(), "--name", "poison", "--events", "Poison", "-"); code != 0 {
			t.Fatalf("template put: %s %s", out, errOut)
		}
	}
	for _, id := range []proto.Id{g1, g1, g2} {
		if out, errOut, code := m.cli("dispatch", "--tenant", id.String(), "--event", "Poison", "--nowait"); code != 0 {
			t.Fatalf("dispatch --nowait: %s %s", out, errOut)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var dead []client.Event
	waitFor(t, time.Minute, func() bool {
		var err error
		dead, _, err = m.api.DeadLetters(ctx, nil, "", 0)
		return err == nil && len(dead) == 3
	})
	for _, d := range dead {
		if d.Attempts != 2 || d.LastError == nil || d.LastError.Code != proto.CodeCPULimit || d.DeadAt == nil {
			t.Fatalf("dead letter %+v (last error %+v)", d, d.LastError)
		}
	}

	out, errOut, code := m.cli("dead-letters", "list")
	if code != 0 || !strings.HasPrefix(out, "ID ") || strings.Count(out, "Poison") != 3 || !strings.Contains(out, "cpu_limit: ") {
		t.Fatalf("list: %d %s %s", code, out, errOut)
	}
	out, errOut, code = m.cli("dead-letters", "list", "--tenant", g2.String(), "--json")
	var listed struct {
		DeadLetters []client.Event `json:"dead_letters"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &listed) != nil || len(listed.DeadLetters) != 1 || listed.DeadLetters[0].Tenant != g2 {
		t.Fatalf("list --tenant --json: %d %s %s", code, out, errOut)
	}
	// A page of two says where the next starts, which lists the third.
	out, errOut, code = m.cli("dead-letters", "list", "--limit", "2")
	if want := "more dead letters follow: list them with --after " + dead[1].ID + "\n"; code != 0 || strings.Count(out, "Poison") != 2 || !strings.HasSuffix(out, want) {
		t.Fatalf("list --limit 2: %d %q %q, want two and %q", code, out, errOut, want)
	}
	out, errOut, code = m.cli("dead-letters", "list", "--after", dead[1].ID, "--json")
	var page struct {
		DeadLetters []client.Event `json:"dead_letters"`
		More        *bool          `json:"more"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &page) != nil || len(page.DeadLetters) != 1 || page.DeadLetters[0].ID != dead[2].ID || page.More == nil || *page.More {
		t.Fatalf("list --after %s --json: %d %s %s, want only %s and more false", dead[1].ID, code, out, errOut, dead[2].ID)
	}
	for _, args := range [][]string{
		{"dead-letters", "list", "--after", "x"},
		{"dead-letters", "purge"},
		{"dead-letters", "purge", "--all", "1"},
		{"dead-letters", "retry", "--tenant", g1.String(), "--all"},
		{"dead-letters", "list", "--tenant", "nobody"},
		{"dead-letters", "list", "--limit", "0"},
	} {
		out, errOut, code := m.cli(args...)
		if code == 0 || strings.Count(strings.TrimSpace(errOut), "\n") != 0 || !strings.HasPrefix(errOut, "templateworker: ") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 1 with one line", args, code, out, errOut)
		}
	}

	// Fix g1's template's data, retry one of its dead letters: it runs.
	if out, errOut, code := m.cliStdin(`local e, ctx = ... ctx.kv.set("fixed", true)`, "run", "--tenant", g1.String(), "-"); code != 0 {
		t.Fatalf("run: %s %s", out, errOut)
	}
	first := dead[0]
	if first.Tenant != g1 {
		t.Fatalf("oldest dead letter is %s's, want %s's", first.Tenant, g1)
	}
	out, errOut, code = m.cli("dead-letters", "retry", first.ID)
	if code != 0 || !strings.Contains(out, "dead letter "+first.ID+" requeued ("+g1.String()+" Poison)") {
		t.Fatalf("retry: %d %s %s", code, out, errOut)
	}
	waitFor(t, time.Minute, func() bool { return kvValue(t, m, g1, "ran:"+first.ID) != nil })
	if out, errOut, code = m.cli("dead-letters", "retry", first.ID); code == 0 || !strings.HasPrefix(errOut, "templateworker: not_found: ") {
		t.Fatalf("second retry: %d %s %s", code, out, errOut)
	}

	// Purge by tenant, then by id, then all.
	out, errOut, code = m.cli("dead-letters", "purge", "--tenant", g2.String())
	if code != 0 || strings.Count(out, " purged") != 1 {
		t.Fatalf("purge --tenant: %d %s %s", code, out, errOut)
	}
	left, _, err := m.api.DeadLetters(ctx, nil, "", 0)
	if err != nil || len(left) != 1 || left[0].Tenant != g1 {
		t.Fatalf("left after purge --tenant: %+v %v", left, err)
	}
	// Several ids: the ones that exist are purged, the rest named; exit 1.
	out, errOut, code = m.cli("dead-letters", "purge", left[0].ID, "999999")
	if code != 1 || !strings.Contains(out, "dead letter "+left[0].ID+" purged\n") || !strings.Contains(out, "dead letter 999999 not purged: not_found: ") ||
		strings.TrimSpace(errOut) != "templateworker: 1 of 2 dead letters not purged (last: not_found: dead letter 999999 not found)" {
		t.Fatalf("purge ids: %d %q %q", code, out, errOut)
	}
	if err := m.api.DeleteDeadLetter(ctx, left[0].ID); proto.CodeOf(err) != proto.CodeNotFound {
		t.Fatalf("DELETE of a purged dead letter: %v", err)
	}
	out, errOut, code = m.cli("dead-letters", "purge", "--all")
	if code != 0 || strings.TrimSpace(out) != "no dead letters" {
		t.Fatalf("purge --all of none: %d %s %s", code, out, errOut)
	}
	out, _, _ = m.cli("dead-letters", "list")
	if strings.TrimSpace(out) != "no dead letters" {
		t.Fatalf("list after purges: %s", out)
	}
	// A workers table has the PENDING column.
	out, errOut, code = m.cli("workers")
	if code != 0 || !strings.Contains(out, "PENDING") {
		t.Fatalf("workers: %d %s %s", code, out, errOut)
	}
}

// TestReadyzStaysUpWhileBacklogDrains: a tenant's backlog held behind a
// failing event shows as pending in /v1/workers and the workers table,
// /readyz stays 200 before and while it drains, and it drains to zero once
// the template is fixed.
func TestReadyzStaysUpWhileBacklogDrains(t *testing.T) {
	m := startMaster(t, "", "--process-workers", "2", "--event-retry-backoff", "200ms", "--event-retry-backoff-max", "200ms",
		"--event-max-attempts", "1000", "--lua-max-instructions", "200000", "--quarantine-after", "0")
	g := proto.GuildID(1 << 22) // routed to worker 1 of 2
	if out, errOut, code := m.cliStdin(poisonTemplate, "template", "put", "--tenant", g.String(), "--name", "poison", "--events", "Poison", "-"); code != 0 {
		t.Fatalf("template put: %s %s", out, errOut)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const n = 50
	for i := 0; i < n; i++ {
		if err := m.api.DispatchNoWait(ctx, g, proto.Event{Name: "Poison", Data: proto.Null}); err != nil {
			t.Fatal(err)
		}
	}
	ready := func() {
		t.Helper()
		resp, err := httpGet(m.addr + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("/readyz answered %d with a backlog", resp.StatusCode)
		}
	}
	pendingOf := func(worker int) int {
		t.Helper()
		raw, err := m.api.Workers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out struct {
			Workers []struct {
				ID      int `json:"id"`
				Pending int `json:"pending"`
			} `json:"workers"`
		}
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatal(err)
		}
		for _, w := range out.Workers {
			if w.ID == worker {
				return w.Pending
			}
		}
		t.Fatalf("no worker %d in %s", worker, raw)
		return 0
	}
	// The first event fails and is retried; the others wait behind it.
	if p0, p1 := pendingOf(0), pendingOf(1); p0 != 0 || p1 != n {
		t.Fatalf("pending by worker: 0 → %d, 1 → %d; want 0 and %d", p0, p1, n)
	}
	ready()
	out, errOut, code := m.cli("workers")
	if code != 0 || !strings.Contains(out, "PENDING") {
		t.Fatalf("workers: %d %s %s", code, out, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || strings.Fields(lines[2])[8] != "50" {
		t.Fatalf("workers table, want PENDING 50 for worker 1:\n%s", out)
	}
	if out, errOut, code := m.cliStdin(`local e, ctx = ... ctx.kv.set("fixed", true)`, "run", "--tenant", g.String(), "-"); code != 0 {
		t.Fatalf("run: %s %s", out, errOut)
	}
	waitFor(t, time.Minute, func() bool {
		ready()
		return pendingOf(1) == 0
	})
	items, err := m.api.KV(ctx, g, "ran:")
	if err != nil || len(items) != n {
		t.Fatalf("%d events ran, want %d (%v)", len(items), n, err)
	}
}

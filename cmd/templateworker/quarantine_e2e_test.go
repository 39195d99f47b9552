package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/templateworker/templateworker/proto"
)

// TestQuarantineAfterWorkerCrashes kills a worker three times while one
// tenant's slow call is in flight: exactly that tenant is quarantined, its
// neighbour on the same worker is not.
func TestQuarantineAfterWorkerCrashes(t *testing.T) {
	// The slow call says it started, then spins until its process is
	// killed: no Lua budget may end it first, however slow the machine.
	m := startMaster(t, "", "--process-workers", "2", "--restart-backoff", "50ms", "--quarantine-after", "3",
		"--lua-timeout", "10m", "--lua-max-instructions", "1000000000000000")
	m.waitReady(t)
	ctx := context.Background()
	hostile, neighbour := tenantOn(0, 2, 11), tenantOn(0, 2, 13)
	slow := `local event, ctx = ... ctx.kv.set("started:" .. event.data.i, true) while true do end`
	if err := m.api.PutTemplate(ctx, hostile, "slow", slow, []string{"Ping"}); err != nil {
		t.Fatal(err)
	}
	if err := m.api.PutTemplate(ctx, neighbour, "quick", `return "ok"`, []string{"Ping"}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		pid := m.waitReady(t)[0].PID
		done := make(chan error, 1)
		go func(i int) {
			_, err := m.api.Dispatch(ctx, hostile, proto.Event{Name: "Ping", Data: proto.Value(fmt.Sprintf(`{"i":%d}`, i))})
			done <- err
		}(i)
		// The call runs in the worker (it wrote its key), and the worker's
		// progress record shows it running (a strike goes to the tenant a
		// worker was running when it died, not to calls merely sent to it).
		waitFor(t, time.Minute, func() bool {
			items, err := m.api.KV(ctx, hostile, fmt.Sprintf("started:%d", i))
			return err == nil && len(items) == 1 &&
				strings.Contains(string(mustRaw(m.api.Workers(ctx))), `"running":{"tenant":{"type":"Guild","id":"`+strconv.FormatUint(hostile.ID, 10)+`"}`)
		})
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if err := <-done; proto.CodeOf(err) != proto.CodeWorkerUnavailable {
			t.Fatalf("kill %d: slow call ended with %v, want worker_unavailable", i+1, err)
		}
		// The call fails as soon as the connection drops; the supervisor
		// reaps the process and records the strike after that. Wait for
		// the replacement, so that the next kill is not of the dead pid.
		waitFor(t, time.Minute, func() bool {
			rows := m.workers(t)
			return len(rows) > 0 && rows[0].PID != 0 && rows[0].PID != pid && rows[0].State == "ready"
		})
	}
	m.waitReady(t)
	_, err := m.api.Dispatch(ctx, hostile, proto.Event{Name: "Ping"})
	pe := proto.AsError(err)
	if pe.Code != proto.CodeTenantQuarantined || !strings.Contains(pe.Message, "until") || !strings.Contains(pe.Message, "died") {
		t.Fatalf("hostile tenant: %v, want tenant_quarantined saying until when and why", err)
	}
	r := m.do(t, "POST", "/v1/tenants/"+hostile.Path()+"/events", `{"name":"Ping"}`)
	if r.status != 423 || r.header.Get("Retry-After") == "" {
		t.Fatalf("HTTP status %d (Retry-After %q), want 423", r.status, r.header.Get("Retry-After"))
	}
	if v, err := m.api.Dispatch(ctx, neighbour, proto.Event{Name: "Ping"}); err != nil || string(v) != `{"quick":"ok"}` {
		t.Fatalf("neighbour: %s %v", v, err)
	}
	out, _, code := m.cli("quarantine", "list")
	if code != 0 || !strings.Contains(out, hostile.String()[len("guild:"):]) || strings.Contains(out, neighbour.String()[len("guild:"):]) {
		t.Fatalf("quarantine list: %d %s", code, out)
	}
	if _, errOut, code := m.cli("quarantine", "lift", "--tenant", hostile.String()); code != 0 {
		t.Fatalf("lift: %s", errOut)
	}
	if v, err := m.api.RunScript(ctx, hostile, "s", `return 1`, nil); err != nil || string(v) != "1" {
		t.Fatalf("after lift: %s %v", v, err)
	}
	if _, errOut, code := m.cli("quarantine", "lift", "--tenant", hostile.String()); code != 1 || !strings.Contains(errOut, "not_found") {
		t.Fatalf("second lift: %d %s", code, errOut)
	}
}

// TestQuarantineAfterLimitHits: three cpu_limit hits quarantine a tenant in
// thread mode too.
func TestQuarantineAfterLimitHits(t *testing.T) {
	m := startMaster(t, "", "--thread-workers", "1", "--lua-max-instructions", "100000")
	ctx := context.Background()
	id := proto.GuildID(42)
	for i := 0; i < 3; i++ {
		_, err := m.api.RunScript(ctx, id, "spin", `while true do end`, nil)
		if pe := proto.AsError(err); pe.Code != proto.CodeCPULimit || !strings.Contains(pe.Message, "100000") {
			t.Fatalf("spin %d: %v", i, err)
		}
	}
	if _, err := m.api.RunScript(ctx, id, "s", `return 1`, nil); proto.CodeOf(err) != proto.CodeTenantQuarantined {
		t.Fatalf("after 3 limit hits: %v", err)
	}
	if v, err := m.api.RunScript(ctx, proto.GuildID(43), "s", `return 1`, nil); err != nil || string(v) != "1" {
		t.Fatalf("other tenant: %s %v", v, err)
	}

	// A restart of the master does not lift the quarantine; a lift is kept
	// across a restart too.
	m.stop(syscall.SIGTERM)
	m = startMaster(t, m.dataDir, "--thread-workers", "1", "--lua-max-instructions", "100000")
	if _, err := m.api.RunScript(ctx, id, "s", `return 1`, nil); proto.CodeOf(err) != proto.CodeTenantQuarantined ||
		!strings.Contains(err.Error(), "cpu_limit") {
		t.Fatalf("after a restart: %v, want tenant_quarantined for cpu_limit", err)
	}
	if _, errOut, code := m.cli("quarantine", "lift", "--tenant", id.String()); code != 0 {
		t.Fatalf("lift: %s", errOut)
	}
	m.stop(syscall.SIGTERM)
	m = startMaster(t, m.dataDir, "--thread-workers", "1", "--lua-max-instructions", "100000")
	if v, err := m.api.RunScript(ctx, id, "s", `return 1`, nil); err != nil || string(v) != "1" {
		t.Fatalf("lifted, then restarted: %s %v", v, err)
	}
}

func mustRaw(b []byte, err error) []byte {
	if err != nil {
		return nil
	}
	return b
}

// TestQuarantineAfterNowaitLimitHits: limit hits of nowait events count
// too, in both topologies.
func TestQuarantineAfterNowaitLimitHits(t *testing.T) {
	for _, topo := range [][]string{{"--thread-workers", "1"}, {"--process-workers", "1"}} {
		t.Run(topo[0], func(t *testing.T) {
			m := startMaster(t, "", append(topo, "--lua-max-instructions", "100000")...)
			if topo[0] == "--process-workers" {
				m.waitReady(t)
			}
			ctx := context.Background()
			id, other := proto.GuildID(7), proto.GuildID(8)
			if err := m.api.PutTemplate(ctx, id, "spin", `while true do end`, []string{"Ping"}); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 3; i++ {
				if err := m.api.DispatchNoWait(ctx, id, proto.Event{Name: "Ping"}); err != nil {
					t.Fatalf("nowait %d: %v", i, err)
				}
			}
			waitFor(t, 20*time.Second, func() bool {
				_, err := m.api.RunScript(ctx, id, "s", `return 1`, nil)
				return proto.CodeOf(err) == proto.CodeTenantQuarantined
			})
			if err := m.api.DispatchNoWait(ctx, id, proto.Event{Name: "Ping"}); proto.CodeOf(err) != proto.CodeTenantQuarantined {
				t.Fatalf("nowait while quarantined: %v", err)
			}
			if v, err := m.api.RunScript(ctx, other, "s", `return 2`, nil); err != nil || string(v) != "2" {
				t.Fatalf("other tenant: %s %v", v, err)
			}
		})
	}
}

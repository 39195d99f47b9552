package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/templateworker/templateworker/client"
	"github.com/templateworker/templateworker/master"
	"github.com/templateworker/templateworker/proto"
)

// wedgeFn is the name the tests give the watchdog's test hook (a global
// function that blocks in Go, so the VM's count hook never runs: a VM that
// misbehaves). Only the master's environment can install it.
const wedgeFn = "__tw_test_wedge"

// startWedgeMaster starts a master whose tenant VMs get the wedge hook,
// with short Lua limits so the watchdog fires quickly.
func startWedgeMaster(t *testing.T, args ...string) *runningMaster {
	t.Helper()
	t.Setenv("TEMPLATEWORKER_TEST_WEDGE_FUNCTION", wedgeFn)
	base := []string{"--lua-timeout", "1s", "--watchdog-grace", "500ms",
		// Calls must not expire while they wait: the watchdog, not the
		// caller's deadline, is what ends them here.
		"--dispatch-timeout", "60s", "--restart-backoff", "50ms"}
	return startMaster(t, "", append(base, args...)...)
}

type superWorker struct {
	ID                  int    `json:"id"`
	PID                 int    `json:"pid"`
	State               string `json:"state"`
	Restarts            int    `json:"restarts"`
	ConsecutiveFailures int    `json:"consecutive_failures"`
	InFlight            int    `json:"inflight"`
	Running             *struct {
		Tenant  proto.Id `json:"tenant"`
		Seconds float64  `json:"seconds"`
	} `json:"running"`
	RunningCalls []struct {
		Tenant proto.Id `json:"tenant"`
	} `json:"running_calls"`
}

func (m *runningMaster) superWorkers(t *testing.T) []superWorker {
	t.Helper()
	var out struct {
		Workers []superWorker `json:"workers"`
	}
	if err := json.Unmarshal(mustRaw(m.api.Workers(context.Background())), &out); err != nil {
		t.Fatalf("workers: %v", err)
	}
	return out.Workers
}

// quarantined returns the tenants GET /v1/quarantine lists.
func (m *runningMaster) quarantined(t *testing.T) map[string]bool {
	t.Helper()
	var out struct {
		Quarantined []struct {
			Tenant proto.Id `json:"tenant"`
		} `json:"quarantined"`
	}
	raw, err := m.api.Quarantined(context.Background())
	if err != nil {
		t.Fatalf("quarantine list: %v", err)
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("quarantine list %s: %v", raw, err)
	}
	set := map[string]bool{}
	for _, q := range out.Quarantined {
		set[q.Tenant.String()] = true
	}
	return set
}

// wedgeWithNeighbour starts a wedging call of attacker, waits until its
// worker runs it, queues a call of neighbour behind it on the same worker,
// and returns both outcomes once they end, and the pid of the worker that
// ran it (0 in thread mode).
func wedgeWithNeighbour(t *testing.T, m *runningMaster, attacker, neighbour proto.Id) (attackErr, neighbourErr error, pid int) {
	t.Helper()
	ctx := context.Background()
	a := make(chan error, 1)
	go func() {
		_, err := m.api.RunScript(ctx, attacker, "wedge", wedgeFn+`() while true do end`, nil)
		a <- err
	}()
	waitFor(t, time.Minute, func() bool {
		select {
		case err := <-a:
			t.Fatalf("the wedging call of %s ended before it ran: %v", attacker, err)
		default:
		}
		for _, w := range m.superWorkers(t) {
			if w.Running != nil && w.Running.Tenant == attacker {
				pid = w.PID
				return true
			}
		}
		return false
	})
	n := make(chan error, 1)
	go func() {
		_, err := m.api.Dispatch(ctx, neighbour, proto.Event{Name: "Ping"})
		n <- err
	}()
	for _, ch := range []chan error{a, n} {
		select {
		case err := <-ch:
			if ch == a {
				attackErr = err
			} else {
				neighbourErr = err
			}
		case <-time.After(2 * time.Minute):
			t.Fatal("a call on the wedged worker never ended")
		}
	}
	return attackErr, neighbourErr, pid
}

// TestSuperWatchdogWedgedWorker: a call wedged in Go (the count hook never
// runs) is cut by the watchdog at --lua-timeout + --watchdog-grace: the
// attacker's call and the neighbour's call queued behind it fail fast
// with 503 worker_unavailable (not 504), only the attacker is blamed
// (quarantined after one strike here), the neighbour is served right
// after, and the master logs why.
func TestSuperWatchdogWedgedWorker(t *testing.T) {
	for _, topo := range []string{"process", "thread"} {
		t.Run(topo, func(t *testing.T) {
			m := startWedgeMaster(t, "--"+topo+"-workers", "1", "--quarantine-after", "1")
			ctx := context.Background()
			attacker, neighbour := proto.GuildID(1<<22|7), proto.GuildID(2<<22|9)
			if err := m.api.PutTemplate(ctx, neighbour, "quick", `return "ok"`, []string{"Ping"}); err != nil {
				t.Fatal(err)
			}
			var oldPID int
			if topo == "process" {
				oldPID = m.waitReady(t)[0].PID
			}
			if v, err := m.api.Dispatch(ctx, neighbour, proto.Event{Name: "Ping"}); err != nil || string(v) != `{"quick":"ok"}` {
				t.Fatalf("neighbour before: %s %v", v, err)
			}
			aErr, nErr, _ := wedgeWithNeighbour(t, m, attacker, neighbour)
			if proto.CodeOf(aErr) != proto.CodeWorkerUnavailable {
				t.Fatalf("attacker: %v, want worker_unavailable", aErr)
			}
			// On a serial worker the neighbour's call waits behind the wedge
			// and fails with it; with more slots it runs beside it (unless
			// the machine is so slow that the watchdog came first).
			if c := proto.CodeOf(nErr); c != proto.CodeWorkerUnavailable && (testConcurrency() == 1 || nErr != nil) {
				t.Fatalf("neighbour on the wedged worker (concurrency %d): %v", testConcurrency(), nErr)
			}
			if topo == "process" {
				waitFor(t, time.Minute, func() bool {
					w := m.superWorkers(t)[0]
					return w.State == "ready" && w.PID != 0 && w.PID != oldPID
				})
				if alive(oldPID) {
					t.Fatalf("wedged worker %d still alive", oldPID)
				}
			}
			if v, err := m.api.Dispatch(ctx, neighbour, proto.Event{Name: "Ping"}); err != nil || string(v) != `{"quick":"ok"}` {
				t.Fatalf("neighbour after: %s %v", v, err)
			}
			q := m.quarantined(t)
			if !q[attacker.String()] || q[neighbour.String()] {
				t.Fatalf("quarantined %v: want the attacker %s only", q, attacker)
			}
			if _, err := m.api.RunScript(ctx, attacker, "again", `return 1`, nil); proto.CodeOf(err) != proto.CodeTenantQuarantined {
				t.Fatalf("attacker after its strike: %v, want tenant_quarantined", err)
			}
			out := m.out.String()
			found := false
			for _, line := range strings.Split(out, "\n") {
				if strings.Contains(line, "watchdog") && strings.Contains(line, attacker.String()) &&
					strings.Contains(line, `"worker_id":0`) && (topo == "thread" || strings.Contains(line, `"pid":`)) {
					found = true
				}
			}
			if !found {
				t.Fatalf("no watchdog log line naming the worker, its pid and the tenant:\n%s", tail(out, 4000))
			}
			if w := m.superWorkers(t)[0]; w.Restarts < 1 {
				t.Fatalf("restarts %d, want ≥ 1", w.Restarts)
			}
		})
	}
}

// TestSuperRollingRestartWedgedWorker: POST /v1/workers/restart does not
// hang on a wedged worker: it answers 200 once a new process serves.
func TestSuperRollingRestartWedgedWorker(t *testing.T) {
	m := startWedgeMaster(t, "--process-workers", "1")
	ctx := context.Background()
	attacker, neighbour := proto.GuildID(5<<22|1), proto.GuildID(6<<22|1)
	if err := m.api.PutTemplate(ctx, neighbour, "quick", `return "ok"`, []string{"Ping"}); err != nil {
		t.Fatal(err)
	}
	old := m.waitReady(t)[0].PID
	wedged := make(chan error, 1)
	go func() {
		_, err := m.api.RunScript(ctx, attacker, "wedge", wedgeFn+`()`, nil)
		wedged <- err
	}()
	// /v1/workers shows the call the worker runs (its progress record).
	waitFor(t, time.Minute, func() bool {
		r := m.superWorkers(t)[0].Running
		return r != nil && r.Tenant == attacker
	})
	restarted := make(chan error, 1)
	go func() { restarted <- m.api.RestartWorkers(ctx) }()
	select {
	case err := <-restarted:
		if err != nil {
			t.Fatalf("rolling restart: %v", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("rolling restart hung on a wedged worker")
	}
	if err := <-wedged; proto.CodeOf(err) != proto.CodeWorkerUnavailable {
		t.Fatalf("wedged call: %v, want worker_unavailable", err)
	}
	w := m.superWorkers(t)[0]
	if w.State != "ready" || w.PID == old || alive(old) {
		t.Fatalf("after the rolling restart: %+v (old pid %d alive %v)", w, old, alive(old))
	}
	if v, err := m.api.Dispatch(ctx, neighbour, proto.Event{Name: "Ping"}); err != nil || string(v) != `{"quick":"ok"}` {
		t.Fatalf("neighbour after: %s %v", v, err)
	}
}

// TestSuperCrashLoopIgnoresTenantKills: 50 fresh tenants in a row each get
// the worker process killed (the watchdog cuts their wedged call) while a
// neighbour's call waits behind them. Those restarts are the tenants',
// not a worker that cannot run: the master stays up (the crash-loop abort
// would fire after 10), the neighbour is served and never quarantined
// although its calls failed with them.
func TestSuperCrashLoopIgnoresTenantKills(t *testing.T) {
	m := startWedgeMaster(t, "--process-workers", "1", "--lua-timeout", "300ms", "--watchdog-grace", "200ms",
		"--min-uptime", "1m", "--restart-backoff", "2s", "--quarantine-after", "3")
	ctx := context.Background()
	neighbour := proto.GuildID(77<<22 | 1)
	if err := m.api.PutTemplate(ctx, neighbour, "quick", `return "ok"`, []string{"Ping"}); err != nil {
		t.Fatal(err)
	}
	const attacks = 50
	attacked := 0 // the pid of the last worker killed
	for i := 0; i < attacks; i++ {
		// The next spawn serves (not the one just killed, which may still
		// look ready for a moment).
		waitFor(t, time.Minute, func() bool {
			w := m.superWorkers(t)[0]
			return w.State == "ready" && w.PID != 0 && w.PID != attacked
		})
		select {
		case <-m.exited:
			t.Fatalf("master exited after %d attacks", i)
		default:
		}
		attacker := proto.GuildID(uint64(1000+i)<<22 | 3)
		aErr, nErr, pid := wedgeWithNeighbour(t, m, attacker, neighbour)
		attacked = pid
		if proto.CodeOf(aErr) != proto.CodeWorkerUnavailable {
			t.Fatalf("attack %d: %v, want worker_unavailable", i, aErr)
		}
		// The neighbour's call failed with the worker, or ran first.
		if nErr != nil && proto.CodeOf(nErr) != proto.CodeWorkerUnavailable {
			t.Fatalf("attack %d: neighbour %v", i, nErr)
		}
	}
	m.waitReady(t)
	if v, err := m.api.Dispatch(ctx, neighbour, proto.Event{Name: "Ping"}); err != nil || string(v) != `{"quick":"ok"}` {
		t.Fatalf("neighbour after %d attacks: %s %v", attacks, v, err)
	}
	if q := m.quarantined(t); q[neighbour.String()] {
		t.Fatalf("neighbour quarantined: %v", q)
	}
	w := m.superWorkers(t)[0]
	if w.Restarts < attacks || w.ConsecutiveFailures != 0 {
		t.Fatalf("worker %+v: want ≥ %d restarts, none counted as failures", w, attacks)
	}
	select {
	case <-m.exited:
		t.Fatal("master exited")
	default:
	}
}

// TestSuperLongWorkerOutputLine: a tenant logs a 2 MiB line and then
// ~300 KB more; the master keeps reading the worker's output (it is not
// blocked on the pipe), cuts the line and marks it, and everyone is
// served.
func TestSuperLongWorkerOutputLine(t *testing.T) {
	m := startMaster(t, "", "--process-workers", "1", "--lua-timeout", "30s")
	ctx := context.Background()
	attacker, neighbour := proto.GuildID(9<<22|1), proto.GuildID(10<<22|1)
	if err := m.api.PutTemplate(ctx, neighbour, "quick", `return "ok"`, []string{"Ping"}); err != nil {
		t.Fatal(err)
	}
	pid := m.waitReady(t)[0].PID
	code := `local event, ctx = ...
ctx.log.info(("x"):rep(2 * 1024 * 1024))
local line = ("y"):rep(1000)
for i = 1, 300 do ctx.log.info(line) end
return "logged"`
	done := make(chan error, 1)
	go func() {
		_, err := m.api.RunScript(ctx, attacker, "loud", code, nil)
		done <- err
	}()
	select {
	case err := <-done:
		// Served, or refused with a coded limit of its own; never a
		// timeout of a worker blocked on its output.
		if c := proto.CodeOf(err); err != nil && (c == proto.CodeTimeout || c == proto.CodeWorkerUnavailable) {
			t.Fatalf("loud tenant: %v", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("the loud call never ended: the worker is blocked on its output")
	}
	if v, err := m.api.Dispatch(ctx, neighbour, proto.Event{Name: "Ping"}); err != nil || string(v) != `{"quick":"ok"}` {
		t.Fatalf("neighbour: %s %v", v, err)
	}
	if w := m.superWorkers(t)[0]; w.PID != pid {
		t.Fatalf("worker restarted: %+v", w)
	}
	if q := m.quarantined(t); q[neighbour.String()] {
		t.Fatalf("neighbour quarantined: %v", q)
	}
	// The worker bounds what a tenant logs (a message is cut, a call's
	// volume capped, the rest counted in one line), and the master reads
	// whatever arrives without stalling: both marks reach the master's log.
	waitFor(t, time.Minute, func() bool {
		out := m.out.String()
		return strings.Contains(out, "message cut") && strings.Contains(out, "log messages") &&
			strings.Contains(out, "dropped: a call may log")
	})
}

// TestSuperBlameOnlyTheRunningTenant: a worker killed from outside while
// one tenant's call runs and two others wait behind it (a waited call and
// a nowait event) blames the running tenant alone (quarantined after one
// strike here); the waiting ones get 503 and no strike. One slot
// (--worker-concurrency 1) makes the others wait; see
// TestSuperBlameEveryRunningTenant for several slots.
func TestSuperBlameOnlyTheRunningTenant(t *testing.T) {
	m := startMaster(t, "", "--process-workers", "1", "--quarantine-after", "1", "--restart-backoff", "50ms",
		"--lua-timeout", "60s", "--lua-max-instructions", "100000000000", "--worker-concurrency", "1")
	ctx := context.Background()
	runner, waiter, queued := proto.GuildID(21<<22|1), proto.GuildID(22<<22|1), proto.GuildID(23<<22|1)
	spin := `local t = os.clock() while os.clock() - t < 50 do end return "done"`
	if err := m.api.PutTemplate(ctx, runner, "spin", spin, []string{"Ping"}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []proto.Id{waiter, queued} {
		if err := m.api.PutTemplate(ctx, id, "quick", `local event, ctx = ... ctx.kv.set("ran", true) return "ok"`, []string{"Ping"}); err != nil {
			t.Fatal(err)
		}
	}
	pid := m.waitReady(t)[0].PID
	run := make(chan error, 1)
	go func() {
		_, err := m.api.Dispatch(ctx, runner, proto.Event{Name: "Ping"})
		run <- err
	}()
	waitFor(t, time.Minute, func() bool {
		r := m.superWorkers(t)[0].Running
		return r != nil && r.Tenant == runner
	})
	wait := make(chan error, 1)
	go func() {
		_, err := m.api.Dispatch(ctx, waiter, proto.Event{Name: "Ping"})
		wait <- err
	}()
	if err := m.api.DispatchNoWait(ctx, queued, proto.Event{Name: "Ping"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, func() bool { return m.superWorkers(t)[0].InFlight >= 2 })
	m.killWorkerMidCalls(t, pid, queued, run, wait)
	q := m.quarantined(t)
	if !q[runner.String()] || q[waiter.String()] || q[queued.String()] || len(q) != 1 {
		t.Fatalf("quarantined %v: want only the running tenant %s", q, runner)
	}
	if v, err := m.api.Dispatch(ctx, waiter, proto.Event{Name: "Ping"}); err != nil || string(v) != `{"quick":"ok"}` {
		t.Fatalf("waiting tenant after: %s %v", v, err)
	}
}

// TestSuperBlameEveryRunningTenant: on a worker running 2 calls at once,
// a kill from outside while two tenants' calls run and two more tenants
// wait (a waited call and a nowait event: both slots are taken) makes the
// two running tenants the suspects — each gets a strike — and the waiting
// ones get 503 or a redelivery and no strike. /v1/workers lists both
// running calls.
func TestSuperBlameEveryRunningTenant(t *testing.T) {
	m := startMaster(t, "", "--process-workers", "1", "--quarantine-after", "1", "--restart-backoff", "50ms",
		"--lua-timeout", "60s", "--lua-max-instructions", "100000000000", "--worker-concurrency", "2")
	ctx := context.Background()
	runners := []proto.Id{proto.GuildID(31<<22 | 1), proto.GuildID(32<<22 | 1)}
	waiter, queued := proto.GuildID(33<<22|1), proto.GuildID(34<<22|1)
	spin := `local t = os.clock() while os.clock() - t < 50 do end return "done"`
	for _, id := range runners {
		if err := m.api.PutTemplate(ctx, id, "spin", spin, []string{"Ping"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []proto.Id{waiter, queued} {
		if err := m.api.PutTemplate(ctx, id, "quick", `local event, ctx = ... ctx.kv.set("ran", true) return "ok"`, []string{"Ping"}); err != nil {
			t.Fatal(err)
		}
	}
	pid := m.waitReady(t)[0].PID
	run := make(chan error, len(runners))
	for _, id := range runners {
		go func() {
			_, err := m.api.Dispatch(ctx, id, proto.Event{Name: "Ping"})
			run <- err
		}()
	}
	waitFor(t, time.Minute, func() bool { return len(m.superWorkers(t)[0].RunningCalls) == 2 })
	wait := make(chan error, 1)
	go func() {
		_, err := m.api.Dispatch(ctx, waiter, proto.Event{Name: "Ping"})
		wait <- err
	}()
	if err := m.api.DispatchNoWait(ctx, queued, proto.Event{Name: "Ping"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, func() bool { return m.superWorkers(t)[0].InFlight >= 3 })
	if got := m.superWorkers(t)[0].RunningCalls; len(got) != 2 {
		t.Fatalf("running calls %+v, want the 2 spinners", got)
	}
	m.killWorkerMidCalls(t, pid, queued, run, run, wait)
	q := m.quarantined(t)
	if !q[runners[0].String()] || !q[runners[1].String()] || q[waiter.String()] || q[queued.String()] || len(q) != 2 {
		t.Fatalf("quarantined %v: want the 2 running tenants %v", q, runners)
	}
}

// TestSuperWedgeHookAbsentByDefault: without the operator's environment
// variable no VM has the watchdog's test hook, so no tenant can reach it.
func TestSuperWedgeHookAbsentByDefault(t *testing.T) {
	for _, topo := range []string{"process", "thread"} {
		t.Run(topo, func(t *testing.T) {
			m := startMaster(t, "", "--"+topo+"-workers", "1")
			v, err := m.api.RunScript(context.Background(), proto.GuildID(31<<22|1), "probe",
				`return type(`+wedgeFn+`) .. "," .. type(_G["`+wedgeFn+`"])`, nil)
			if err != nil || string(v) != `"nil,nil"` {
				t.Fatalf("probe: %s %v, want the hook absent", v, err)
			}
			if strings.Contains(m.out.String(), "TEST HOOK") {
				t.Fatal("the test hook's warning appears without the variable")
			}
		})
	}
}

// TestSuperCrashLoopStillAbortsWithHeldEvents: a worker that cannot start
// still trips the crash-loop abort when nowait events are held for it
// (work waiting is not work that ran).
func TestSuperCrashLoopStillAbortsWithHeldEvents(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "crash.sh")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\necho crashing >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	m := startMasterNoWait(t, "--process-workers", "1", "--worker-exe", exe,
		"--restart-backoff", "500ms", "--restart-backoff-max", "500ms")
	var addr string
	waitFor(t, time.Minute, func() bool {
		b, err := os.ReadFile(filepath.Join(m.dataDir, master.AddrFile))
		addr = strings.TrimSpace(string(b))
		return err == nil && addr != ""
	})
	tok, err := os.ReadFile(filepath.Join(m.dataDir, master.TokenFile))
	if err != nil {
		t.Fatal(err)
	}
	api := client.New(addr, strings.TrimSpace(string(tok)))
	if err := api.DispatchNoWait(context.Background(), proto.GuildID(1), proto.Event{Name: "Ping"}); err != nil {
		t.Fatalf("nowait event: %v", err)
	}
	select {
	case <-m.exited:
	case <-time.After(2 * time.Minute):
		t.Fatal("master did not give up on a worker that cannot start")
	}
	if !strings.Contains(m.out.String(), "failed 10 times in a row") {
		t.Fatalf("fatal line missing:\n%s", tail(m.out.String(), 3000))
	}
}

// killWorkerMidCalls SIGKILLs worker process pid, checks that each call
// whose outcome arrives on chs (one receive each) fails with
// worker_unavailable, waits for the replacement, and for the nowait event
// of tenant queued to run there (its template sets the key "ran").
func (m *runningMaster) killWorkerMidCalls(t *testing.T, pid int, queued proto.Id, chs ...chan error) {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for i, ch := range chs {
		select {
		case err := <-ch:
			if proto.CodeOf(err) != proto.CodeWorkerUnavailable {
				t.Fatalf("call %d: %v, want worker_unavailable", i, err)
			}
		case <-time.After(time.Minute):
			t.Fatalf("call %d did not fail with its worker", i)
		}
	}
	m.waitReady(t)
	// The nowait event is redelivered to the next process and runs.
	waitFor(t, time.Minute, func() bool {
		items, err := m.api.KV(context.Background(), queued, "ran")
		return err == nil && len(items) == 1
	})
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/templateworker/templateworker/internal/syncbuf"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/store"
)

type workerRow struct {
	ID       int    `json:"id"`
	PID      int    `json:"pid"`
	State    string `json:"state"`
	Restarts int    `json:"restarts"`
}

func (m *runningMaster) workers(t *testing.T) []workerRow {
	t.Helper()
	raw, err := m.api.Workers(context.Background())
	if err != nil {
		t.Fatalf("workers: %v", err)
	}
	var out struct {
		Workers []workerRow `json:"workers"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("decode workers: %v", err)
	}
	return out.Workers
}

// waitReady waits until every worker is ready and returns the rows.
func (m *runningMaster) waitReady(t *testing.T) []workerRow {
	t.Helper()
	var rows []workerRow
	waitFor(t, time.Minute, func() bool {
		rows = m.workers(t)
		for _, r := range rows {
			if r.State != "ready" || r.PID == 0 {
				return false
			}
		}
		return len(rows) > 0
	})
	return rows
}

func procCmdline(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return nil
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

func procEnv(pid int, key string) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return ""
	}
	for _, kv := range strings.Split(string(b), "\x00") {
		if v, ok := strings.CutPrefix(kv, key+"="); ok {
			return v
		}
	}
	return ""
}

func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	// A zombie is dead for our purposes.
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	return len(f) < 3 || f[2] != "Z"
}

func mesophyllURL(pid int) string {
	args := procCmdline(pid)
	for i, a := range args {
		if a == "--mesophyll-url" && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// tenantOn returns a guild id that routes to worker w of n.
func tenantOn(w, n int, salt uint64) proto.Id {
	return proto.GuildID((uint64(w)+uint64(n)*salt)<<22 | 12345)
}

func TestProcessWorkersSpawnWithFlagsAndTokenInEnv(t *testing.T) {
	m := startMaster(t, "", "--process-workers", "2")
	rows := m.waitReady(t)
	if len(rows) != 2 {
		t.Fatalf("want 2 workers, got %+v", rows)
	}
	for _, r := range rows {
		args := procCmdline(r.PID)
		want := []string{"--worker-type", "processpoolworker", "--worker-id", strconv.Itoa(r.ID), "--process-workers", "2"}
		if len(args) < 7 || strings.Join(args[1:7], " ") != strings.Join(want, " ") {
			t.Fatalf("worker %d argv %q, want %q first", r.ID, args, want)
		}
		token := procEnv(r.PID, "MESOPHYLL_CLIENT_TOKEN")
		if len(token) != 64 {
			t.Fatalf("worker %d token in env has %d chars, want 64", r.ID, len(token))
		}
		if strings.Contains(strings.Join(args, " "), token) {
			t.Fatalf("token visible in argv of worker %d", r.ID)
		}
		if strings.Contains(m.out.String(), token) {
			t.Fatalf("token appears in the master's log")
		}
	}
	// The same contract as thread mode, end to end.
	id := tenantOn(1, 2, 7)
	if err := m.api.PutTemplate(context.Background(), id, "greet", greetLua, []string{"Ping"}); err != nil {
		t.Fatal(err)
	}
	v, err := m.api.Dispatch(context.Background(), id, proto.Event{Name: "Ping", Data: proto.Value(`{"who":"proc"}`)})
	if err != nil || string(v) != `{"greet":{"count":1,"hello":"proc"}}` {
		t.Fatalf("dispatch: %s %v", v, err)
	}
	// A template change reaches the worker: the next dispatch runs new code.
	if err := m.api.PutTemplate(context.Background(), id, "greet", `return "v2"`, []string{"Ping"}); err != nil {
		t.Fatal(err)
	}
	v, err = m.api.Dispatch(context.Background(), id, proto.Event{Name: "Ping"})
	if err != nil || string(v) != `{"greet":"v2"}` {
		t.Fatalf("after put: %s %v", v, err)
	}
}

// TestProcessKillWorkerUnderLoad kills a worker with SIGKILL while both
// workers serve waited and nowait calls, and a call of the killed worker's
// tenant is running in it.
func TestProcessKillWorkerUnderLoad(t *testing.T) {
	// The slow call spins until the process dies: no Lua budget may end
	// it first, however slow the machine.
	m := startMaster(t, "", "--process-workers", "2", "--restart-backoff", "100ms",
		"--lua-timeout", "10m", "--lua-max-instructions", "1000000000000000")
	rows := m.waitReady(t)
	ctx := context.Background()
	victim, other := tenantOn(0, 2, 3), tenantOn(1, 2, 5)
	count := `local event, ctx = ...
if event.data.slow then ctx.kv.set("slow:started", true) while true do end end
ctx.kv.set("ev:" .. event.data.n, true)
return event.data.n`
	for _, id := range []proto.Id{victim, other} {
		if err := m.api.PutTemplate(ctx, id, "count", count, []string{"Ping"}); err != nil {
			t.Fatal(err)
		}
	}
	oldPID := rows[0].PID
	oldToken := procEnv(oldPID, "MESOPHYLL_CLIENT_TOKEN")
	mesoURL := mesophyllURL(oldPID)

	var (
		wg                     sync.WaitGroup
		stop                   atomic.Bool
		otherFailed, victimBad atomic.Int64
		victimOK, otherOK      atomic.Int64 // waited calls served
		accepted               sync.Map     // tenant/n → true
		n                      atomic.Int64
	)
	load := func(id proto.Id, failed, served *atomic.Int64, victimSide bool) {
		defer wg.Done()
		for i := 0; !stop.Load(); i++ {
			k := n.Add(1)
			ev := proto.Event{Name: "Ping", Data: proto.Value(fmt.Sprintf(`{"n":%d}`, k))}
			if i%2 == 0 {
				if err := m.api.DispatchNoWait(ctx, id, ev); err == nil {
					accepted.Store(fmt.Sprintf("%d/%d", id.ID, k), id)
				} else if !victimSide {
					failed.Add(1)
				}
				continue
			}
			_, err := m.api.Dispatch(ctx, id, ev)
			switch {
			case err == nil:
				served.Add(1)
			case !victimSide:
				failed.Add(1)
				t.Logf("call on the healthy worker failed: %v", err)
			case proto.CodeOf(err) != proto.CodeWorkerUnavailable:
				victimBad.Add(1)
				t.Logf("call on the killed worker failed with %v, want worker_unavailable", err)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	wg.Add(2)
	go load(victim, &victimBad, &victimOK, true)
	go load(other, &otherFailed, &otherOK, false)
	t.Cleanup(func() { stop.Store(true); wg.Wait() })

	// A waited call that never ends on its own is running in the victim
	// when it is killed: it fails with 503 worker_unavailable, and only the
	// kill can have ended it.
	slowErr := make(chan error, 1)
	go func() {
		_, err := m.api.Dispatch(ctx, victim, proto.Event{Name: "Ping", Data: proto.Value(`{"n":-1,"slow":true}`)})
		slowErr <- err
	}()
	waitFor(t, time.Minute, func() bool {
		items, err := m.api.KV(ctx, victim, "slow:")
		return err == nil && len(items) == 1
	})
	waitFor(t, time.Minute, func() bool { return otherOK.Load() > 0 })
	if err := syscall.Kill(oldPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-slowErr:
		if proto.CodeOf(err) != proto.CodeWorkerUnavailable {
			t.Fatalf("in-flight call on the killed worker: %v, want worker_unavailable", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("in-flight call on the killed worker never failed")
	}
	var newPID int
	waitFor(t, time.Minute, func() bool {
		r := m.workers(t)[0]
		newPID = r.PID
		return r.State == "ready" && r.PID != oldPID && r.PID != 0
	})
	// Both workers serve the load after the restart: calls served by the
	// new process and by the one that was not killed.
	victimThen, otherThen := victimOK.Load(), otherOK.Load()
	waitFor(t, time.Minute, func() bool { return victimOK.Load() > victimThen && otherOK.Load() > otherThen })
	stop.Store(true)
	wg.Wait()
	nAccepted := 0
	accepted.Range(func(k, v any) bool { nAccepted++; return true })
	t.Logf("calls sent %d, nowait accepted %d", n.Load(), nAccepted)
	if nAccepted < 10 {
		t.Fatalf("the load did not run: only %d nowait events accepted", nAccepted)
	}
	if otherFailed.Load() != 0 {
		t.Fatalf("%d calls failed on the worker that was not killed", otherFailed.Load())
	}
	if victimBad.Load() != 0 {
		t.Fatalf("%d calls on the killed worker failed with the wrong code", victimBad.Load())
	}
	// A new token, and the old one is refused.
	if tok := procEnv(newPID, "MESOPHYLL_CLIENT_TOKEN"); tok == "" || tok == oldToken {
		t.Fatalf("respawned worker did not get a fresh token")
	}
	if code := wsUpgradeStatus(t, mesoURL, 0, oldToken); code != http.StatusUnauthorized {
		t.Fatalf("old token: HTTP %d, want 401", code)
	}
	// Every accepted nowait event ran (at least once).
	waitFor(t, time.Minute, func() bool {
		missing := 0
		keys := map[uint64]map[string]bool{}
		for _, id := range []proto.Id{victim, other} {
			items, err := m.api.KV(ctx, id, "ev:")
			if err != nil {
				return false
			}
			keys[id.ID] = map[string]bool{}
			for _, it := range items {
				keys[id.ID][it.Key] = true
			}
		}
		accepted.Range(func(k, v any) bool {
			id := v.(proto.Id)
			_, num, _ := strings.Cut(k.(string), "/")
			if !keys[id.ID]["ev:"+num] {
				missing++
			}
			return true
		})
		if missing > 0 {
			t.Logf("%d accepted nowait events not executed yet", missing)
		}
		return missing == 0
	})
}

// wsUpgradeStatus attempts a Mesophyll WebSocket upgrade and returns the
// HTTP status.
func wsUpgradeStatus(t *testing.T, wsURL string, workerID int, token string) int {
	t.Helper()
	u, hc := strings.Replace(wsURL, "ws://", "http://", 1), http.DefaultClient
	if path, ok := strings.CutPrefix(wsURL, "unix:"); ok {
		u, hc = "http://mesophyll/ws", &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", path)
			},
		}}
	}
	req, _ := http.NewRequest("GET", u, nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("X-Worker-Id", strconv.Itoa(workerID))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestProcessMesophyllRefusesStrangers(t *testing.T) {
	t.Run("unix socket", func(t *testing.T) { testMesophyllRefusesStrangers(t, "unix") })
	t.Run("tcp", func(t *testing.T) { testMesophyllRefusesStrangers(t, "127.0.0.1:0") })
}

func testMesophyllRefusesStrangers(t *testing.T, listen string) {
	m := startMaster(t, "", "--process-workers", "2", "--mesophyll-listen", listen)
	rows := m.waitReady(t)
	url := mesophyllURL(rows[0].PID)
	if listen == "unix" {
		// A private socket: mode 0600 in a directory of mode 0700.
		path, ok := strings.CutPrefix(url, "unix:")
		if !ok {
			t.Fatalf("--mesophyll-url %q, want unix:PATH", url)
		}
		for p, want := range map[string]os.FileMode{path: 0o600, filepath.Dir(path): 0o700} {
			fi, err := os.Stat(p)
			if err != nil || fi.Mode().Perm() != want {
				t.Fatalf("%s: mode %v (%v), want %v", p, fi.Mode().Perm(), err, want)
			}
		}
		t.Cleanup(func() {
			if _, err := os.Stat(filepath.Dir(path)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("socket directory %s left after SIGTERM (%v)", filepath.Dir(path), err)
			}
		})
		defer m.stop(syscall.SIGTERM)
	} else if !strings.HasPrefix(url, "ws://127.0.0.1:") {
		t.Fatalf("--mesophyll-url %q, want ws://127.0.0.1:port/ws", url)
	}
	token := procEnv(rows[0].PID, "MESOPHYLL_CLIENT_TOKEN")
	if c := wsUpgradeStatus(t, url, 0, strings.Repeat("x", 64)); c != 401 {
		t.Errorf("bad token: %d, want 401", c)
	}
	if c := wsUpgradeStatus(t, url, 7, token); c != 404 {
		t.Errorf("unknown worker: %d, want 404", c)
	}
	if c := wsUpgradeStatus(t, url, 0, token); c != http.StatusConflict {
		t.Errorf("second connection: %d, want 409", c)
	}
	if strings.Contains(m.out.String(), token) {
		t.Errorf("token logged")
	}
	// Serving is undisturbed.
	id := tenantOn(0, 2, 1)
	if err := m.api.PutTemplate(context.Background(), id, "t", `return 1`, []string{"Ping"}); err != nil {
		t.Fatal(err)
	}
	if v, err := m.api.Dispatch(context.Background(), id, proto.Event{Name: "Ping"}); err != nil || string(v) != `{"t":1}` {
		t.Fatalf("dispatch after strangers: %s %v", v, err)
	}
	if r := m.workers(t)[0]; r.PID != rows[0].PID || r.Restarts != 0 {
		t.Fatalf("worker disturbed: %+v", r)
	}
}

func TestProcessCrashLoopAbortsMaster(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "crash.sh")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\necho crashing >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	m := startMasterNoWait(t, "--process-workers", "1", "--worker-exe", exe,
		"--restart-backoff", "10ms", "--restart-backoff-max", "30ms")
	select {
	case <-m.exited:
	case <-time.After(60 * time.Second):
		t.Fatal("master did not give up on a crash-looping worker")
	}
	if code := m.cmd.ProcessState.ExitCode(); code == 0 {
		t.Fatalf("master exited 0 after a crash loop")
	}
	out := m.out.String()
	starts := regexp.MustCompile(`"worker started"`).FindAllString(out, -1)
	if len(starts) != 10 {
		t.Fatalf("worker started %d times, want exactly 10", len(starts))
	}
	if !strings.Contains(out, "failed 10 times in a row") || !strings.Contains(out, "exit status 1") {
		t.Fatalf("fatal line missing:\n%s", tail(out, 3000))
	}
}

func TestProcessHungWorkerReplaced(t *testing.T) {
	// The default 1 s heartbeat: a stopped worker is found after 3 s of
	// silence, a healthy one on a busy machine is not taken for hung.
	m := startMaster(t, "", "--process-workers", "1")
	rows := m.waitReady(t)
	old := rows[0].PID
	if err := syscall.Kill(old, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, func() bool {
		r := m.workers(t)[0]
		return r.State == "ready" && r.PID != old && r.PID != 0
	})
	waitFor(t, time.Minute, func() bool { return !alive(old) })
	// The replacement serves.
	id := tenantOn(0, 1, 4)
	if err := m.api.PutTemplate(context.Background(), id, "t", `return 1`, []string{"Ping"}); err != nil {
		t.Fatal(err)
	}
	if v, err := m.api.Dispatch(context.Background(), id, proto.Event{Name: "Ping"}); err != nil || string(v) != `{"t":1}` {
		t.Fatalf("dispatch to the replacement: %s %v", v, err)
	}
}

func TestProcessMasterLeavesNoChildren(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			m := startMaster(t, "", "--process-workers", "2")
			rows := m.waitReady(t)
			m.stop(sig)
			if sig == syscall.SIGTERM {
				if code := m.cmd.ProcessState.ExitCode(); code != 0 {
					t.Fatalf("SIGTERM: master exit code %d, want 0", code)
				}
			}
			waitFor(t, 10*time.Second, func() bool {
				for _, r := range rows {
					if alive(r.PID) {
						return false
					}
				}
				return true
			})
		})
	}
}

// startMasterNoWait starts a master without waiting for it to serve.
func startMasterNoWait(t *testing.T, args ...string) *runningMaster {
	t.Helper()
	dataDir := t.TempDir()
	full := append([]string{"master", "--listen", "127.0.0.1:0", "--data-dir", dataDir, "--log-format", "json"}, args...)
	cmd := exec.Command(binPath, full...)
	cmd.Env = append(os.Environ(), "TMPDIR="+shortTempDir(t))
	out := &syncbuf.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	m := &runningMaster{t: t, cmd: cmd, dataDir: dataDir, out: out, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(m.exited) }()
	t.Cleanup(func() {
		m.stop(cleanupSignal())
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	})
	return m
}

// TestProcessSIGTERMWithCallsInFlight: on SIGTERM the master lets the
// waited calls in flight on every worker finish and answer, then exits 0
// and leaves no worker behind. Each call runs until the test, writing to
// the store behind the master's back, tells it to end: it is in flight
// for certain when the signal arrives, however slow the machine.
func TestProcessSIGTERMWithCallsInFlight(t *testing.T) {
	m := startMaster(t, "", "--process-workers", "2", "--shutdown-timeout", "5m",
		"--lua-timeout", "10m", "--lua-max-instructions", "1000000000000000")
	rows := m.waitReady(t)
	ctx := context.Background()
	ids := []proto.Id{tenantOn(0, 2, 21), tenantOn(1, 2, 21)}
	code := `local event, ctx = ... ctx.kv.set("started", true) while not ctx.kv.get("go") do end return "finished"`
	for _, id := range ids {
		if err := m.api.PutTemplate(ctx, id, "hold", code, []string{"Ping"}); err != nil {
			t.Fatal(err)
		}
	}
	type answer struct {
		v   proto.Value
		err error
	}
	answers := make(chan answer, len(ids))
	for _, id := range ids {
		go func() {
			v, err := m.api.Dispatch(ctx, id, proto.Event{Name: "Ping"})
			answers <- answer{v, err}
		}()
	}
	for _, id := range ids {
		waitFor(t, time.Minute, func() bool {
			items, err := m.api.KV(ctx, id, "started")
			return err == nil && len(items) == 1
		})
	}
	if err := m.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, func() bool { return strings.Contains(m.out.String(), `"shutting down"`) })
	select {
	case a := <-answers:
		t.Fatalf("a call in flight ended before it was told to, at SIGTERM: %s %v", a.v, a.err)
	case <-m.exited:
		t.Fatal("the master exited with calls in flight")
	default:
	}
	st, err := store.Open(ctx, store.Config{DataDir: m.dataDir, Options: store.Options{Quota: store.DefaultQuota}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, id := range ids {
		if err := st.KvSet(ctx, id, "go", json.RawMessage(`true`)); err != nil {
			t.Fatal(err)
		}
	}
	for range ids {
		select {
		case a := <-answers:
			if a.err != nil || string(a.v) != `{"hold":"finished"}` {
				t.Fatalf("a call in flight at SIGTERM: %s %v, want it to finish", a.v, a.err)
			}
		case <-time.After(2 * time.Minute):
			t.Fatal("a call in flight at SIGTERM never answered")
		}
	}
	select {
	case <-m.exited:
	case <-time.After(2 * time.Minute):
		t.Fatal("the master did not exit after its calls finished")
	}
	if code := m.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("master exit code %d after SIGTERM, want 0", code)
	}
	waitFor(t, time.Minute, func() bool { return !alive(rows[0].PID) && !alive(rows[1].PID) })
}

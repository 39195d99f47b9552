package master

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/mesophyll"
	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/store"
)

// The supervisor's less travelled paths, through the process pool's own
// API (Status, Restart, RollingRestart, Kill, the dispatch methods): a
// restart whose drain or readiness runs out of time, two rolling restarts
// at once, a worker that never connects, a stop during backoff, a full
// nowait queue, the held events of a tenant that gets quarantined.

// gatedStore is a store whose KvGet of the key "gate" blocks until open
// is closed: a template that reads it is a call in flight for exactly as
// long as the test wants, with no CPU-bound loop and no time budget. (The
// store calls of a process worker give up after 10 s, on both sides: the
// tests hold the gate only for a few quick checks.)
type gatedStore struct {
	store.Store
	entered chan proto.Id // one receive per call that reached the gate
	open    chan struct{}
	once    sync.Once
}

func newGatedStore(tb testing.TB) *gatedStore {
	s := &gatedStore{Store: openTestStore(tb), entered: make(chan proto.Id, 16), open: make(chan struct{})}
	tb.Cleanup(s.release)
	return s
}

func (s *gatedStore) release() { s.once.Do(func() { close(s.open) }) }

func (s *gatedStore) KvGet(ctx context.Context, id proto.Id, key string) (json.RawMessage, bool, error) {
	if key != "gate" {
		return s.Store.KvGet(ctx, id, key)
	}
	s.entered <- id
	select {
	case <-s.open:
		return json.RawMessage(`"open"`), true, nil
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
}

// gateTemplate waits at the gate, then returns what it read there.
const gateTemplate = `local event, ctx = ... return ctx.kv.get("gate")`

// pathsConfig is a process topology with generous limits: nothing here
// may depend on how fast the machine is.
func pathsConfig(tb testing.TB) ProcessConfig {
	return ProcessConfig{
		Exe: workerBinary(tb), MinUptime: time.Millisecond, Backoff: 50 * time.Millisecond, BackoffMax: time.Second,
		MaxFailures: 10, ReadyTimeout: time.Minute, DispatchTimeout: time.Minute,
		QueueSize: 10000, HeartbeatInterval: time.Second, MaxFrame: 4 << 20,
		Args: []string{"--log-level", "warn"},
	}
}

// waitUntil polls cond for up to a minute.
func waitUntil(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("%s: not within a minute", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// entered waits until a call of some tenant is at the gate.
func (s *gatedStore) waitEntered(tb testing.TB) proto.Id {
	tb.Helper()
	select {
	case id := <-s.entered:
		return id
	case <-time.After(time.Minute):
		tb.Fatal("no call reached the gate")
		return proto.Id{}
	}
}

// holdGate dispatches a Gate event of tenant g on pp and waits until the
// call reached st's gate; the channel gets the call's error once the gate
// opens.
func holdGate(t *testing.T, pp *processPool, st *gatedStore, g proto.Id) <-chan error {
	t.Helper()
	callErr := make(chan error, 1)
	go func() {
		_, err := pp.DispatchEvent(context.Background(), g, eventOf("Gate", `{}`))
		callErr <- err
	}()
	st.waitEntered(t)
	return callErr
}

// replacedAndServing waits until worker w runs a process other than old
// and serves tenant id.
func replacedAndServing(tb testing.TB, pp *processPool, w int, old int, id proto.Id) {
	tb.Helper()
	waitUntil(tb, "worker replaced", func() bool {
		st := pp.workers[w].Status()
		return st.State == StateReady && st.PID != 0 && st.PID != old
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := pp.DispatchEvent(ctx, id, eventOf("Other", `{}`)); err != nil {
		tb.Fatalf("worker %d after the restart: %v", w, err)
	}
}

func TestRestartDrainTimeout(t *testing.T) {
	st := newGatedStore(t)
	g := proto.GuildID(1 << 22) // worker 0 of 1
	put(t, st, g, "gate", gateTemplate, "Gate")
	pp := startTestProcessPool(t, 1, st, pathsConfig(t))
	w := pp.workers[0]
	old := w.Status().PID

	callErr := holdGate(t, pp, st, g)
	// The call stays in flight past the restart's deadline: the drain
	// gives up, and the deadline is gone before a new process can be
	// ready.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	err := w.Restart(ctx)
	cancel()
	if pe := proto.AsError(err); pe == nil || pe.Code != proto.CodeTimeout || !strings.Contains(pe.Message, "not ready again in time") {
		t.Fatalf("Restart with a call held past its deadline: %v, want timeout: not ready again in time", err)
	}
	if s := w.Status(); s.State != StateDraining || s.PID != old {
		t.Fatalf("after the drain timed out: %+v, want the old process %d draining", s, old)
	}
	// The held call still finishes on the old process (it was asked to
	// shut down after its in-flight work), then the worker is replaced.
	st.release()
	if err := <-callErr; err != nil {
		t.Fatalf("the call in flight during the restart: %v", err)
	}
	replacedAndServing(t, pp, 0, old, g)
	if s := w.Status(); s.Restarts != 1 || s.ConsecutiveFailures != 0 {
		t.Fatalf("after a planned restart: %+v, want 1 restart and no failure", s)
	}
}

func TestRestartNotReadyAgainInTime(t *testing.T) {
	st := openTestStore(t)
	g := proto.GuildID(1 << 22)
	put(t, st, g, "t", `return 1`, "Ping")
	pp := startTestProcessPool(t, 1, st, pathsConfig(t))
	w := pp.workers[0]
	old := w.Status().PID
	// Nothing to drain, but the deadline passes before the replacement can
	// have started and connected.
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	<-ctx.Done()
	err := w.Restart(ctx)
	if pe := proto.AsError(err); pe == nil || pe.Code != proto.CodeTimeout || !strings.Contains(pe.Message, "worker 0 was not ready again in time") {
		t.Fatalf("Restart with an expired deadline: %v", err)
	}
	// The replacement comes anyway.
	replacedAndServing(t, pp, 0, old, g)
	// A restart of a worker that is not connected is refused.
	if err := pp.Kill(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := w.Restart(context.Background()); proto.CodeOf(err) != proto.CodeWorkerUnavailable {
		t.Fatalf("Restart of a stopped worker: %v, want worker_unavailable", err)
	}
}

func TestRollingRestartConflict(t *testing.T) {
	st := newGatedStore(t)
	g := proto.GuildID(2 << 22) // worker 0, the first one restarted
	put(t, st, g, "gate", gateTemplate, "Gate")
	pp := startTestProcessPool(t, 2, st, pathsConfig(t))
	before := []int{pp.workers[0].Status().PID, pp.workers[1].Status().PID}

	callErr := holdGate(t, pp, st, g)
	// The first rolling restart replaces worker 0 (g's): its new process
	// serves while the old one drains, which waits for the held call. (A
	// held call may wait 10 s for its store answer: the test keeps it held
	// only for the checks below.)
	first := make(chan error, 1)
	go func() { first <- pp.RollingRestart(context.Background(), time.Minute) }()
	waitUntil(t, "worker 0's new process serving", func() bool {
		s := pp.workers[0].Status()
		return s.State == StateReady && s.PID != before[0] && s.LastRestartReason == ReasonRolling
	})
	if !alivePID(before[0]) {
		t.Fatal("worker 0's old process exited before its held call finished")
	}
	if err := pp.RollingRestart(context.Background(), time.Minute); proto.CodeOf(err) != proto.CodeConflict ||
		!strings.Contains(err.Error(), "already running") {
		t.Fatalf("a second rolling restart during the first: %v, want conflict", err)
	}
	st.release()
	if err := <-callErr; err != nil {
		t.Fatalf("the held call: %v", err)
	}
	if err := <-first; err != nil {
		t.Fatalf("the first rolling restart: %v", err)
	}
	for i, w := range pp.workers {
		if s := w.Status(); s.State != StateReady || s.PID == before[i] || s.Restarts != 1 {
			t.Fatalf("worker %d after the rolling restart: %+v (was pid %d)", i, s, before[i])
		}
	}
	// Once it is over, another may run.
	if err := pp.RollingRestart(context.Background(), time.Minute); err != nil {
		t.Fatalf("a rolling restart after the first: %v", err)
	}
}

// writeScript writes an executable shell script standing in for the
// worker binary.
func writeScript(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "worker.sh")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// startUnready starts a 1-worker process pool without waiting for it to
// be ready; fatal errors are sent on the returned channel.
func startUnready(t *testing.T, cfg ProcessConfig, q *Quarantine) (*processPool, chan error) {
	t.Helper()
	fatal := make(chan error, 4)
	if q == nil {
		q = NewQuarantine(3, time.Minute)
	}
	pp, err := startProcessPool(1, "unix", cfg, openTestStore(t), q, zerolog.Nop(), func(err error) { fatal <- err })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = pp.Kill(ctx)
	})
	return pp, fatal
}

func alivePID(pid int) bool {
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile("/proc/" + itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	return len(f) < 3 || f[2] != "Z"
}

func TestWorkerThatNeverConnectsIsKilled(t *testing.T) {
	cfg := pathsConfig(t)
	cfg.Exe = writeScript(t, "exec sleep 600")
	cfg.ReadyTimeout = 200 * time.Millisecond // waiting on a process that never connects: no race
	cfg.Backoff, cfg.BackoffMax = time.Millisecond, time.Millisecond
	cfg.MaxFailures = 2
	pp, fatal := startUnready(t, cfg, nil)
	var first int
	waitUntil(t, "first spawn", func() bool { first = pp.workers[0].Status().PID; return first != 0 })
	select {
	case err := <-fatal:
		if !strings.Contains(err.Error(), "worker 0 failed 2 times in a row") || !strings.Contains(err.Error(), "signal: killed") {
			t.Fatalf("fatal: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatalf("a worker that never connects was not given up on: %+v", pp.workers[0].Status())
	}
	s := pp.workers[0].Status()
	if s.State != StateStopped || s.ConsecutiveFailures != 2 || s.LastExit != "signal: killed" {
		t.Fatalf("after 2 spawns that never connected: %+v", s)
	}
	if alivePID(first) {
		t.Fatalf("the spawn that never connected (pid %d) is still alive", first)
	}
}

func TestStopDuringBackoff(t *testing.T) {
	cfg := pathsConfig(t)
	cfg.Exe = writeScript(t, "exit 3")
	cfg.Backoff, cfg.BackoffMax = time.Hour, time.Hour
	pp, fatal := startUnready(t, cfg, nil)
	waitUntil(t, "backoff after the first failure", func() bool { return pp.workers[0].Status().State == StateBackoff })
	s := pp.workers[0].Status()
	if s.ConsecutiveFailures != 1 || s.LastExit != "exit status 3" || s.PID != 0 {
		t.Fatalf("in backoff: %+v", s)
	}
	// Kill ends the hour of backoff at once; a Kill that waited it out
	// would hit this test's deadline.
	done := make(chan error, 1)
	go func() { done <- pp.Kill(context.Background()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Kill waited for the backoff")
	}
	if s := pp.workers[0].Status(); s.State != StateStopped || s.Restarts != 1 {
		t.Fatalf("stopped during backoff: %+v, want stopped after 1 restart", s)
	}
	select {
	case err := <-fatal:
		t.Fatalf("a stop during backoff was taken for a crash loop: %v", err)
	default:
	}
	if err := pp.DispatchEventNoWait(proto.GuildID(1), eventOf("Ping", `{}`)); proto.CodeOf(err) != proto.CodeShuttingDown {
		t.Fatalf("nowait to a stopped worker: %v, want shutting_down", err)
	}
}

// TestNowaitQueueFullAndQuarantineDropsHeldEvents holds nowait events
// while the only worker drains for a restart: the queue's bound answers
// worker_overloaded, and a tenant quarantined meanwhile loses its held
// events while its neighbour's are delivered to the new process.
func TestNowaitQueueFullAndQuarantineDropsHeldEvents(t *testing.T) {
	st := newGatedStore(t)
	gate, bad, good := proto.GuildID(1<<22), proto.GuildID(2<<22), proto.GuildID(3<<22)
	put(t, st, gate, "gate", gateTemplate, "Gate")
	mark := `local event, ctx = ... ctx.kv.set("ran:" .. event.data.n, true) return true`
	put(t, st, bad, "mark", mark, "Mark")
	put(t, st, good, "mark", mark, "Mark")
	cfg := pathsConfig(t)
	cfg.QueueSize = 8 // a tenant may hold a quarter: 2
	q := NewQuarantine(1, time.Hour)
	fatal := func(err error) { t.Errorf("process pool: %v", err) }
	pp, err := startProcessPool(1, "unix", cfg, st, q, zerolog.Nop(), fatal)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = pp.Kill(ctx)
	})
	waitUntil(t, "ready", pp.Ready)
	w := pp.workers[0]

	callErr := holdGate(t, pp, st, gate)
	restarted := make(chan error, 1)
	go func() { restarted <- w.Restart(context.Background()) }()
	waitUntil(t, "draining", func() bool { return w.Status().State == StateDraining })
	// Held for the next process, in this order: bad's first.
	third, fourth := proto.GuildID(4<<22), proto.GuildID(5<<22)
	for i, id := range []proto.Id{bad, bad, good, good, third, third, fourth, fourth} {
		if err := pp.DispatchEventNoWait(id, eventOf("Mark", `{"n":`+itoa(i)+`}`)); err != nil {
			t.Fatalf("nowait %d: %v", i, err)
		}
	}
	err = pp.DispatchEventNoWait(proto.GuildID(6<<22), eventOf("Mark", `{"n":99}`))
	if pe := proto.AsError(err); pe == nil || pe.Code != proto.CodeWorkerOverloaded || pe.RetryAfter == 0 || !strings.Contains(pe.Message, "8 unacknowledged events") {
		t.Fatalf("nowait beyond the queue: %v, want worker_overloaded with Retry-After", err)
	}
	if s := w.Status(); s.Queued != 8 {
		t.Fatalf("queued %d, want 8", s.Queued)
	}
	if !q.Strike(bad, "test") {
		t.Fatal("one strike did not quarantine with after=1")
	}
	if s := w.Status(); s.Queued != 6 {
		t.Fatalf("after bad's quarantine %d events held, want the other tenants' 6", s.Queued)
	}
	st.release()
	if err := <-callErr; err != nil {
		t.Fatal(err)
	}
	if err := <-restarted; err != nil {
		t.Fatal(err)
	}
	// The new process runs the held events in order: once good's last ran,
	// bad's (held before them) would have run too, had they been kept.
	ctx := context.Background()
	waitUntil(t, "good's held events delivered", func() bool {
		items, _ := st.KvFind(ctx, good, "ran:")
		return len(items) == 2
	})
	if items, err := st.KvFind(ctx, bad, "ran:"); err != nil || len(items) != 0 {
		t.Fatalf("the quarantined tenant's held events ran: %v %v", items, err)
	}
	waitUntil(t, "acknowledged", func() bool { return w.Status().Queued == 0 })
}

// nopHandler is a stand-in worker's handler: it serves nothing.
type nopHandler struct{}

func (nopHandler) DispatchEvent(context.Context, proto.Id, proto.Event) (proto.Value, error) {
	return proto.Value("null"), nil
}
func (nopHandler) RunScript(context.Context, proto.Id, string, string, proto.Event) (proto.Value, error) {
	return proto.Value("null"), nil
}
func (nopHandler) DropTenant(context.Context, proto.Id) error { return nil }
func (nopHandler) DropAll(context.Context) error              { return nil }
func (nopHandler) Tenants() int                               { return 0 }

// TestSecondConnectionOfOneSpawnIsRefused plays the worker of a spawned
// process that never dials itself: the test connects with the spawn's
// token, leaves on the master's Shutdown (a rolling restart), and while
// that process is still running connects again with the same token. The
// server admits it — the token is the live spawn's — but the supervisor
// closes it: one spawn, one connection.
func TestSecondConnectionOfOneSpawnIsRefused(t *testing.T) {
	cfg := pathsConfig(t)
	cfg.Exe = writeScript(t, "exec sleep 600")
	pp, _ := startUnready(t, cfg, nil)
	w := pp.workers[0]
	var pid int
	waitUntil(t, "spawn", func() bool { pid = w.Status().PID; return pid != 0 })
	var token string
	waitUntil(t, "the spawn's token", func() bool {
		b, _ := os.ReadFile("/proc/" + itoa(pid) + "/environ")
		for _, kv := range strings.Split(string(b), "\x00") {
			if v, ok := strings.CutPrefix(kv, TokenEnv+"="); ok {
				token = v
			}
		}
		return token != ""
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	first, err := mesophyll.Dial(ctx, pp.addr, 0, token, mesophyll.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	firstDone := make(chan error, 1)
	go func() { firstDone <- first.Serve(ctx, nopHandler{}) }()
	waitUntil(t, "ready on the first connection", func() bool { return w.Status().State == StateReady })

	rctx, rcancel := context.WithCancel(context.Background())
	restarted := make(chan error, 1)
	go func() { restarted <- w.Restart(rctx) }()
	select {
	case err := <-firstDone:
		if err != nil {
			t.Fatalf("the first connection did not end with the master's Shutdown: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("no Shutdown on the first connection")
	}
	if !alivePID(pid) {
		t.Fatal("the spawn died with its connection; the test needs it running")
	}
	// The master refuses it (409 at the upgrade) or closes it at once
	// (Serve returns; it would serve for the minute of ctx otherwise),
	// without taking it for the worker's.
	second, err := mesophyll.Dial(ctx, pp.addr, 0, token, mesophyll.ClientOptions{})
	if err == nil {
		if err := second.Serve(ctx, nopHandler{}); err == nil || ctx.Err() != nil {
			t.Fatalf("second connection of one spawn: Serve returned %v (ctx %v), want it closed by the master", err, ctx.Err())
		}
	} else if !strings.Contains(err.Error(), "409") {
		t.Fatalf("second dial with the live spawn's token: %v, want it refused (409) or closed", err)
	}
	if s := w.Status(); s.State != StateDraining || s.PID != pid {
		t.Fatalf("after the refused connection: %+v, want pid %d still draining", s, pid)
	}
	waitUntil(t, "the refused connection released", func() bool { return pp.meso.Conn(0) == nil })
	rcancel()
	if err := <-restarted; proto.CodeOf(err) != proto.CodeTimeout {
		t.Fatalf("Restart of a spawn that never came back: %v, want timeout", err)
	}
	if err := pp.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the spawn killed", func() bool { return !alivePID(pid) })
}

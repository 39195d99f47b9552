package master

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/mesophyll"
	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/worker"
)

// ProcessConfig configures the process topology: how workers are spawned
// and supervised.
type ProcessConfig struct {
	// Exe is the worker binary (default: this executable).
	Exe string
	// Args are the non-secret options appended after the worker flags
	// (Mesophyll URL, log format, limits).
	Args []string
	// MinUptime is how long a run must last to count as healthy.
	MinUptime time.Duration
	// Backoff and BackoffMax shape the restart delay: after the n-th
	// consecutive failure the next start waits min(Backoff·n, BackoffMax).
	Backoff, BackoffMax time.Duration
	// MaxFailures consecutive failures of one worker abort the master.
	MaxFailures int
	// ReadyTimeout bounds how long a spawned worker may take to connect.
	ReadyTimeout time.Duration
	// DispatchTimeout bounds how long a call waits for a restarting worker.
	DispatchTimeout time.Duration
	// QueueSize bounds the unacknowledged nowait events kept per worker.
	QueueSize int
	// QueueBytes bounds their bytes (0: no bound).
	QueueBytes int64
	// HeartbeatInterval is the workers' heartbeat period; 3 missed beats
	// mean hung.
	HeartbeatInterval time.Duration
	// MaxFrame is the largest Mesophyll frame accepted.
	MaxFrame int64
	// MemoryMax, when positive, is a worker's memory budget
	// (--worker-memory-max): a worker whose RSS stays above it for
	// memoryStrikes heartbeats is replaced by a planned restart.
	MemoryMax int64
	// MaxDispatches, when positive, recycles a worker after about that
	// many calls (±10%) with a planned restart (--worker-max-dispatches).
	MaxDispatches int64
}

// TokenEnv is the environment variable that carries a worker's Mesophyll
// token; it is never put in argv.
const TokenEnv = "MESOPHYLL_CLIENT_TOKEN"

// Worker states shown by /v1/workers.
const (
	StateStarting = "starting"
	StateReady    = "ready"
	StateBackoff  = "backoff"
	StateDraining = "draining"
	StateStopped  = "stopped"
)

// procWorker is the master's handle on one supervised worker process.
type procWorker struct {
	id, total int
	cfg       *ProcessConfig
	server    *mesophyll.Server
	log       zerolog.Logger
	fatal     func(error)

	mu       sync.Mutex
	state    string
	pid      int
	proc     *os.Process
	started  time.Time
	readyAt  time.Time
	restarts int
	failures int
	lastExit string
	conn     *mesophyll.Conn // the connection calls use; nil while draining or down
	live     *mesophyll.Conn // the current spawn's connection, even while draining
	readyCh  chan struct{}   // closed when the current spawn is connected
	planned  bool            // the current spawn is being replaced on purpose (rolling restart)
	// plannedReason is why (ReasonRolling when empty).
	plannedReason string
	// restartMu serialises planned restarts of this worker (rolling,
	// memory, recycle).
	restartMu sync.Mutex
	replacing atomic.Bool // a memory or recycle replacement is under way
	// dispatches counts calls sent to the current spawn; recycleAt is the
	// count that recycles it (0: never). overMemory counts consecutive
	// heartbeats with RSS above the budget.
	dispatches, recycleAt int64
	overMemory            int
	hung                  bool           // the current spawn was killed for missing heartbeats
	reasons               map[string]int // restarts by reason, for metrics
	stopping              bool
	stopCh                chan struct{}
	doneCh                chan struct{}
	tenants               int
	// cache, heapBytes and rssBytes are the last heartbeat's figures.
	cache               *proto.CacheStats
	heapBytes, rssBytes int64
	nowait              map[uint64]nowaitEvent // unacknowledged nowait events by seq
	held                worker.Backlog         // what the events in nowait hold, per tenant
	seq                 uint64
	inflight            map[proto.Id]int // tenants with waited calls in flight
	// cutOff are the tenants whose calls failed because this spawn's
	// connection ended: they were in flight when the process died.
	cutOff map[proto.Id]bool
	// crashed is told which tenants were in flight when the process died
	// unexpectedly, so the quarantine can count it against them.
	crashed func(suspects []proto.Id, exit string)
	// failed is told when a nowait event of a tenant ended with a fatal
	// limit, which counts against its quarantine like a waited call's.
	failed func(id proto.Id, code string)
}

type nowaitEvent struct {
	id   proto.Id
	ev   proto.Event
	size int64 // worker.EventSize(ev)
}

func newProcWorker(id, total int, cfg *ProcessConfig, server *mesophyll.Server, log zerolog.Logger, fatal func(error)) *procWorker {
	w := &procWorker{
		id: id, total: total, cfg: cfg, server: server, fatal: fatal,
		log:      log.With().Int("worker_id", id).Logger(),
		state:    StateStarting,
		readyCh:  make(chan struct{}),
		stopCh:   make(chan struct{}),
		doneCh:   make(chan struct{}),
		nowait:   make(map[uint64]nowaitEvent),
		inflight: make(map[proto.Id]int),
		reasons:  make(map[string]int),
	}
	return w
}

// start begins supervising: the first spawn happens at once.
func (w *procWorker) start() { go w.supervise() }

// ID returns the worker's index.
func (w *procWorker) ID() int { return w.id }

// Len returns 1.
func (w *procWorker) Len() int { return 1 }

// supervise spawns the worker and restarts it until stopped.
func (w *procWorker) supervise() {
	defer close(w.doneCh)
	for {
		healthy, exit := w.runOnce()
		w.mu.Lock()
		var suspects []proto.Id
		reason := "crash"
		switch {
		case w.planned:
			reason, healthy = ReasonRolling, true
			if w.plannedReason != "" {
				reason = w.plannedReason
			}
		case w.hung:
			reason = "hung"
		case exit == "exit status 0":
			reason = "exit"
		}
		if !w.stopping && !w.planned {
			suspects = w.suspectsLocked()
		}
		w.planned, w.hung, w.plannedReason = false, false, ""
		w.lastExit = exit
		w.conn, w.live = nil, nil
		w.pid = 0
		w.cache, w.heapBytes, w.rssBytes = nil, 0, 0
		w.proc = nil
		if w.stopping {
			w.state = StateStopped
			w.mu.Unlock()
			return
		}
		if healthy {
			w.failures = 0
		} else {
			w.failures++
		}
		n := w.failures
		w.restarts++
		w.reasons[reason]++
		w.resetReadyLocked()
		if n >= w.cfg.MaxFailures {
			w.state = StateStopped
			w.mu.Unlock()
			w.fatal(fmt.Errorf("worker %d failed %d times in a row (last exit: %s)", w.id, n, exit))
			return
		}
		delay := time.Duration(0)
		if n > 0 {
			delay = min(w.cfg.Backoff*time.Duration(n), w.cfg.BackoffMax)
			w.state = StateBackoff
		} else {
			w.state = StateStarting
		}
		w.mu.Unlock()
		if len(suspects) > 0 && w.crashed != nil {
			w.crashed(suspects, exit)
		}
		w.log.Warn().Str("exit", exit).Int("consecutive_failures", n).Dur("restart_in", delay).Msg("worker exited; restarting")
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-w.stopCh:
				w.mu.Lock()
				w.state = StateStopped
				w.mu.Unlock()
				return
			}
		}
	}
}

// suspectsLocked returns the tenants whose work may have taken the process
// down: those with waited calls in flight, and the tenant of the oldest
// unacknowledged nowait event (the worker runs its queue in order, so that
// is the one it was running).
func (w *procWorker) suspectsLocked() []proto.Id {
	out := make([]proto.Id, 0, len(w.inflight)+len(w.cutOff)+1)
	seen := make(map[proto.Id]bool)
	for id := range w.inflight {
		seen[id] = true
		out = append(out, id)
	}
	for id := range w.cutOff {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	w.cutOff = nil
	var oldest uint64
	for s := range w.nowait {
		if oldest == 0 || s < oldest {
			oldest = s
		}
	}
	if oldest != 0 {
		id := w.nowait[oldest].id
		if !seen[id] {
			out = append(out, id)
		}
	}
	return out
}

// dropNowait discards the held nowait events of a quarantined tenant, so a
// poisonous event is not redelivered forever. It returns how many.
func (w *procWorker) dropNowait(id proto.Id) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for s, e := range w.nowait {
		if e.id == id {
			w.forgetNowaitLocked(s)
			n++
		}
	}
	return n
}

// track counts a waited call of tenant id in flight until untrack.
func (w *procWorker) track(id proto.Id) {
	w.mu.Lock()
	w.inflight[id]++
	w.mu.Unlock()
}

// untrack ends a call of tenant id that track started; err is how it
// ended. A call cut off by the connection's end is remembered as a suspect
// of the crash.
func (w *procWorker) untrack(id proto.Id, err error) {
	w.mu.Lock()
	if w.inflight[id]--; w.inflight[id] <= 0 {
		delete(w.inflight, id)
	}
	if proto.CodeOf(err) == proto.CodeWorkerUnavailable {
		if w.cutOff == nil {
			w.cutOff = make(map[proto.Id]bool)
		}
		w.cutOff[id] = true
	}
	w.mu.Unlock()
}

// runOnce spawns one worker process and waits for it to end. healthy is
// true when it got ready and ran at least MinUptime.
func (w *procWorker) runOnce() (healthy bool, exit string) {
	token, err := mesophyll.NewToken()
	if err != nil {
		return false, "token: " + err.Error()
	}
	w.server.SetToken(w.id, token)
	cmd := exec.Command(w.cfg.Exe, append([]string{
		"--worker-type", "processpoolworker",
		"--worker-id", strconv.Itoa(w.id),
		"--process-workers", strconv.Itoa(w.total),
	}, w.cfg.Args...)...)
	cmd.Env = append(workerEnv(), TokenEnv+"="+token)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdout, _ := cmd.StdoutPipe()
	stderr, _ := cmd.StderrPipe()
	w.mu.Lock()
	if w.stopping {
		w.mu.Unlock()
		return true, "stopped before start"
	}
	w.state = StateStarting
	if err := cmd.Start(); err != nil {
		w.mu.Unlock()
		return false, "start: " + err.Error()
	}
	start := time.Now()
	w.pid, w.proc, w.started, w.readyAt = cmd.Process.Pid, cmd.Process, start, time.Time{}
	w.dispatches, w.recycleAt, w.overMemory = 0, w.nextRecycleAt(), 0
	w.mu.Unlock()
	log := w.log.With().Int("pid", cmd.Process.Pid).Logger()
	log.Info().Msg("worker started")
	var relog sync.WaitGroup
	relog.Add(2)
	go relogLines(&relog, stdout, log)
	go relogLines(&relog, stderr, log)

	exited := make(chan struct{})
	var waitErr error
	go func() {
		relog.Wait()
		waitErr = cmd.Wait()
		close(exited)
	}()
	readyTimer := time.NewTimer(w.cfg.ReadyTimeout)
	defer readyTimer.Stop()
	ready := w.readyChan()
	for {
		select {
		case <-exited:
			w.server.SetToken(w.id, "") // the old token stops working at once
			status := exitText(cmd.ProcessState, waitErr)
			w.mu.Lock()
			wasReady := !w.readyAt.IsZero()
			w.mu.Unlock()
			return wasReady && time.Since(start) >= w.cfg.MinUptime, status
		case <-ready:
			ready = nil
			readyTimer.Stop()
		case <-readyTimer.C:
			w.mu.Lock()
			notReady := w.readyAt.IsZero()
			w.mu.Unlock()
			if notReady {
				log.Error().Dur("timeout", w.cfg.ReadyTimeout).Msg("worker did not connect in time; killing it")
				killGroup(cmd.Process.Pid)
			}
		}
	}
}

// resetReadyLocked gives the next spawn an open ready channel, keeping the
// current one if nobody closed it yet (callers may be waiting on it).
func (w *procWorker) resetReadyLocked() {
	select {
	case <-w.readyCh:
		w.readyCh = make(chan struct{})
	default:
	}
}

func (w *procWorker) readyChan() chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.readyCh
}

// workerEnv is the master's environment without secrets a worker must not
// inherit.
func workerEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case TokenEnv, "TEMPLATEWORKER_API_TOKEN", "TEMPLATEWORKER_DATABASE_URL", "NOTIFY_SOCKET":
			continue
		}
		env = append(env, kv)
	}
	return env
}

// relogLines copies a worker's output into the master's log line by line,
// with the master's worker_id and pid fields. A JSON log record keeps its
// level, message and fields; any other line is logged as its text.
func relogLines(wg *sync.WaitGroup, r io.Reader, log zerolog.Logger) {
	defer wg.Done()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var rec map[string]any
		if len(line) > 1 && line[0] == '{' && json.Unmarshal(line, &rec) == nil {
			level, _ := rec["level"].(string)
			lvl, err := zerolog.ParseLevel(level)
			if err != nil {
				lvl = zerolog.InfoLevel
			}
			msg, _ := rec["message"].(string)
			for _, k := range []string{"level", "message", "time", "worker_id", "pid"} {
				delete(rec, k)
			}
			log.WithLevel(lvl).Fields(rec).Msg(msg)
			continue
		}
		log.Info().Msg(string(line))
	}
}

func exitText(ps *os.ProcessState, err error) string {
	if ps == nil {
		if err != nil {
			return err.Error()
		}
		return "unknown"
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return "signal: " + ws.Signal().String()
	}
	return "exit status " + strconv.Itoa(ps.ExitCode())
}

// killGroup SIGKILLs a worker's whole process group.
func killGroup(pid int) {
	if pid > 0 {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
}

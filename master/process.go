package master

import (
	"context"
	"fmt"
	"os"
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
	// Watchdog is how long one call may run on its own account (the Lua
	// time limit plus --watchdog-grace) before the master SIGKILLs the
	// worker process running it; it also bounds the drain of a rolling
	// restart. Zero disables it.
	Watchdog time.Duration

	// events answers the workers' ctx.events calls once set (nil: they
	// fail with store_unavailable).
	events *lateQueue
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
	// cache, heapBytes and rssBytes are the last heartbeat's figures.
	cache               *proto.CacheStats
	heapBytes, rssBytes int64
	held                worker.Backlog // what the events in nowait hold, per tenant
	hung                bool           // the current spawn was killed for missing heartbeats
	// progress is the current spawn's shared progress record (nil while
	// none runs); cut is set when the watchdog killed the spawn.
	progress *worker.Progress
	cut      *watchdogCut
	stalled  bool // the watchdog killed the spawn for starting no call
	// lostCalls says a waited call failed because this spawn's
	// connection ended: the spawn died with work in flight.
	lostCalls bool
	reasons   map[string]int // restarts by reason, for metrics
	// lastReason is why the worker was last restarted.
	lastReason string
	// slot is the Mesophyll slot of the current spawn (id or id+total,
	// see slotWorker); cur is that spawn. next is a planned successor being
	// started on the other slot, old the replaced spawn being drained.
	slot int
	cur  *spawn
	next *successor
	old  *oldSpawn
	// swapCh hands a ready successor to the loop watching cur.
	swapCh chan *swapReq
	// callsOn counts the waited calls in flight per connection and tenant.
	callsOn map[*mesophyll.Conn]map[proto.Id]int
	// spareOn is an emptied callsOn map kept for the next connection's
	// first call: one caller's calls empty and refill it on every call,
	// which would allocate a map each time.
	spareOn map[proto.Id]int
	// bg counts planned replacements under way (Kill waits for them).
	bg       sync.WaitGroup
	stopping bool
	stopCh   chan struct{}
	doneCh   chan struct{}
	tenants  int
	nowait   map[uint64]nowaitEvent // unacknowledged nowait events by seq
	seq      uint64
	pipe     map[uint64]*pipeCall // events of pipelined windows sent and not acknowledged, by seq
	// pipeBytes is what the events in pipe hold (worker.EventSize).
	pipeBytes int64
	windows   uint64           // the last window id sent
	inflight  map[proto.Id]int // tenants with waited calls in flight
	// crashed is told which tenant was running when the process died
	// unexpectedly (or was cut by the watchdog), so the quarantine counts
	// it against that tenant alone.
	crashed func(guilty proto.Id, reason string)
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
		slot:     id,
		swapCh:   make(chan *swapReq),
		callsOn:  make(map[*mesophyll.Conn]map[proto.Id]int),
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
//
// Blame and the crash-loop rule: a spawn that dies while its progress
// record shows a call running (or that the watchdog cut) is charged to
// that call's tenant alone, and its restart does not count toward
// MaxFailures; neither does a planned restart, nor a death while calls
// were in flight (it ran; the tenant may simply not be known). Only a
// spawn that died with no work, before it was healthy — one that cannot
// start or run at all — counts.
func (w *procWorker) supervise() {
	defer close(w.doneCh)
	for {
		healthy, ready, exit, last := w.runOnce()
		w.mu.Lock()
		reason := "crash"
		var guilty []proto.Id // the suspects: the tenants whose calls were running
		var why string
		// The spawn ran and work was cut: calls failed with the connection,
		// calls are still being failed, or nowait events wait for
		// redelivery. A spawn that never got ready ran nothing.
		work := ready && (w.lostCalls || len(w.inflight) > 0 || len(w.nowait) > 0)
		switch {
		case w.planned:
			reason, healthy = ReasonRolling, true
			if w.plannedReason != "" {
				reason = w.plannedReason
			}
		case w.stopping:
		case w.cut != nil:
			reason = "watchdog"
			guilty = []proto.Id{w.cut.tenant}
			why = "watchdog: its call ran " + w.cut.ran.Round(time.Millisecond).String() + " (limit " + w.cfg.Watchdog.String() + "); worker process killed"
		case len(last) > 0:
			if w.hung {
				reason = "hung"
			}
			for _, s := range last {
				guilty = append(guilty, s.Tenant)
			}
			why = "worker process died (" + exit + ") while running its call"
			if len(last) > 1 {
				why += " (one of " + strconv.Itoa(len(last)) + " calls running)"
			}
		case w.hung:
			reason = "hung"
		case w.stalled:
			reason = "stalled"
		case exit == "exit status 0":
			reason = "exit"
		}
		counts := !healthy && guilty == nil && !work && !w.planned
		w.planned, w.hung, w.cut, w.stalled, w.lostCalls, w.plannedReason = false, false, nil, false, false, ""
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
		switch {
		case healthy:
			w.failures = 0
		case counts:
			w.failures++
		}
		n := w.failures
		w.restarts++
		w.reasons[reason]++
		w.lastReason = reason
		w.resetReadyLocked()
		if n >= w.cfg.MaxFailures {
			w.state = StateStopped
			w.mu.Unlock()
			w.fatal(fmt.Errorf("worker %d failed %d times in a row (last exit: %s)", w.id, n, exit))
			return
		}
		delay := time.Duration(0)
		if n > 0 && counts {
			delay = min(w.cfg.Backoff*time.Duration(n), w.cfg.BackoffMax)
			w.state = StateBackoff
		} else {
			w.state = StateStarting
		}
		w.mu.Unlock()
		ev := w.log.Warn().Str("exit", exit).Str("reason", reason).Int("consecutive_failures", n).Dur("restart_in", delay)
		if len(guilty) > 0 {
			ev = ev.Str("tenant", guilty[0].String())
			if len(guilty) > 1 {
				ids := make([]string, len(guilty))
				for i, g := range guilty {
					ids[i] = g.String()
				}
				ev = ev.Strs("tenants", ids)
			}
			if w.crashed != nil {
				for _, g := range guilty {
					w.crashed(g, why)
				}
			}
		}
		ev.Bool("counts_as_failure", counts).Msg("worker exited; restarting")
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

// track counts a waited call of tenant id in flight on c until untrack,
// and returns the connection to send it on: the successor's when a
// planned replacement took c out of service since c was picked — once
// the tenant's calls still running on the old process have finished, so
// that a tenant's calls never run in two processes at once.
func (w *procWorker) track(ctx context.Context, id proto.Id, c *mesophyll.Conn) (*mesophyll.Conn, error) {
	w.mu.Lock()
	for o := w.old; o != nil && w.conn != nil && w.callsOn[o.conn][id] > 0; o = w.old {
		ch := o.changed
		w.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, &proto.Error{Code: proto.CodeWorkerUnavailable, RetryAfter: 1,
				Message: "worker " + itoa(w.id) + " is restarting; try again"}
		}
		w.mu.Lock()
	}
	if c != w.live && w.conn != nil {
		c = w.conn
	}
	w.inflight[id]++
	on := w.callsOn[c]
	if on == nil {
		if on, w.spareOn = w.spareOn, nil; on == nil {
			on = make(map[proto.Id]int)
		}
		w.callsOn[c] = on
	}
	on[id]++
	w.mu.Unlock()
	return c, nil
}

// untrack ends a call of tenant id that track started; err is how it
// ended. A call cut off by the connection's end means the spawn died with
// work in flight (which is not a failure to start or run), but blames
// nobody: the progress record names the tenant that was running.
func (w *procWorker) untrack(id proto.Id, c *mesophyll.Conn, err error) {
	w.mu.Lock()
	if w.inflight[id]--; w.inflight[id] <= 0 {
		delete(w.inflight, id)
	}
	if on := w.callsOn[c]; on != nil {
		if on[id]--; on[id] <= 0 {
			delete(on, id)
		}
		if len(on) == 0 {
			delete(w.callsOn, c)
			w.spareOn = on
		}
	}
	if w.old != nil && c == w.old.conn {
		w.old.callEndedLocked()
	}
	if proto.CodeOf(err) == proto.CodeWorkerUnavailable && (w.old == nil || c != w.old.conn) {
		w.lostCalls = true
	}
	w.mu.Unlock()
}

// runOnce spawns one worker process and waits for it to end. ready is true
// when it connected, healthy when it also ran at least MinUptime; last is
// the calls its progress record shows running as the process left it. A planned replacement
// (swap) hands the current spawn over to its drain and makes its ready
// successor the spawn this loop watches: runOnce returns only when the
// spawn it watches last has exited.
func (w *procWorker) runOnce() (healthy, ready bool, exit string, last []worker.ProgressSnapshot) {
	w.mu.Lock()
	slot := w.slot
	w.mu.Unlock()
	sp, why := w.startSpawn(slot, true)
	if sp == nil {
		return why == stoppedBeforeStart, false, why, last
	}
	defer func() { sp.progress.Close() }()
	readyTimer := time.NewTimer(w.cfg.ReadyTimeout)
	defer readyTimer.Stop()
	readyCh := w.readyChan()
	dog := newWatchdog(w.cfg.Watchdog)
	defer func() { dog.stop() }()
	for {
		select {
		case <-sp.exited:
			w.mu.Lock()
			wasReady := !w.readyAt.IsZero()
			w.progress, w.cur = nil, nil
			w.mu.Unlock()
			return wasReady && time.Since(sp.started) >= w.cfg.MinUptime, wasReady, sp.status, sp.progress.Running()
		case <-readyCh:
			readyCh = nil
			readyTimer.Stop()
		case <-readyTimer.C:
			w.mu.Lock()
			notReady := w.readyAt.IsZero()
			w.mu.Unlock()
			if notReady {
				sp.log.Error().Dur("timeout", w.cfg.ReadyTimeout).Msg("worker did not connect in time; killing it")
				killGroup(sp.pid)
			}
		case now := <-dog.tick():
			w.checkProgress(dog, sp.progress, now, sp.pid, sp.log)
		case req := <-w.swapCh:
			if req.old != sp || !w.handOver(req) {
				req.done <- false
				continue
			}
			// The old spawn is the drain's now (its progress record too).
			sp = req.next
			dog.stop()
			dog = newWatchdog(w.cfg.Watchdog)
			readyCh = nil
			readyTimer.Stop()
			req.done <- true
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

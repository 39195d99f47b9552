package master

import (
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/mesophyll"
	"github.com/templateworker/templateworker/worker"
)

// Mesophyll slots: the server has two connection slots per worker, so
// that a planned successor connects while the process it replaces is
// still connected. Worker id's slots are id and id+total; the worker
// process dials with its slot (--mesophyll-slot) and the master maps every
// slot back to its worker id.

// slotWorker is the worker id of Mesophyll slot slot.
func slotWorker(slot, total int) int { return slot % total }

// otherSlot is the slot a successor of the spawn on slot uses.
func otherSlot(slot, total int) int {
	if slot < total {
		return slot + total
	}
	return slot - total
}

// stoppedBeforeStart is the exit text of a spawn the stopping worker
// never started.
const stoppedBeforeStart = "stopped before start"

// spawn is one started worker process.
type spawn struct {
	slot     int
	pid      int
	proc     *os.Process
	progress *worker.Progress // its shared progress record; its owner closes it
	started  time.Time
	log      zerolog.Logger // with its pid
	exited   chan struct{}  // closed when the process has exited
	status   string         // exit text, set before exited is closed
}

// startSpawn starts a worker process that connects on Mesophyll slot
// slot, and returns it, or nil and why it could not start. With current
// it becomes the worker's current spawn at once (w.pid, w.progress, ...);
// otherwise it is a planned successor, adopted later by handOver.
//
// Pdeathsig is sent when the *thread* that started the child exits, not
// the process: the child is started by a goroutine of its own that holds
// its OS thread locked until the child has exited, so the thread cannot
// exit (or be the one a goroutine that locked it ends on) while the child
// lives, and the child is killed only with the master. Two spawns of one
// worker (a successor and the process it replaces) each have their own.
func (w *procWorker) startSpawn(slot int, current bool) (*spawn, string) {
	type result struct {
		sp  *spawn
		why string
	}
	res := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		token, err := mesophyll.NewToken()
		if err != nil {
			res <- result{why: "token: " + err.Error()}
			return
		}
		pf, progress, err := worker.ProgressFile()
		if err != nil {
			res <- result{why: err.Error()}
			return
		}
		w.server.SetToken(slot, token)
		cmd := exec.Command(w.cfg.Exe, append([]string{
			"--worker-type", "processpoolworker",
			"--worker-id", strconv.Itoa(w.id),
			"--process-workers", strconv.Itoa(w.total),
			"--mesophyll-slot", strconv.Itoa(slot),
			"--progress-fd", "3",
		}, w.cfg.Args...)...)
		cmd.Env = append(workerEnv(), TokenEnv+"="+token)
		cmd.ExtraFiles = []*os.File{pf} // descriptor 3
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		stdout, _ := cmd.StdoutPipe()
		stderr, _ := cmd.StderrPipe()
		w.mu.Lock()
		if w.stopping {
			w.mu.Unlock()
			pf.Close()
			progress.Close()
			res <- result{why: stoppedBeforeStart}
			return
		}
		if current {
			w.state = StateStarting
		}
		err = cmd.Start()
		pf.Close() // the child has its own descriptor; the mapping stays
		if err != nil {
			w.mu.Unlock()
			progress.Close()
			res <- result{why: "start: " + err.Error()}
			return
		}
		sp := &spawn{slot: slot, pid: cmd.Process.Pid, proc: cmd.Process, progress: progress,
			started: time.Now(), exited: make(chan struct{})}
		sp.log = w.log.With().Int("pid", sp.pid).Logger()
		if current {
			w.adoptLocked(sp)
		}
		w.mu.Unlock()
		sp.log.Info().Int("slot", slot).Bool("successor", !current).Msg("worker started")
		var relog sync.WaitGroup
		relog.Add(2)
		go relogLines(&relog, stdout, sp.log)
		go relogLines(&relog, stderr, sp.log)
		res <- result{sp: sp}
		relog.Wait()
		waitErr := cmd.Wait()
		w.server.SetToken(slot, "") // the old token stops working at once
		sp.status = exitText(cmd.ProcessState, waitErr)
		close(sp.exited)
	}()
	r := <-res
	return r.sp, r.why
}

// adoptLocked makes sp the worker's current spawn (not yet connected).
func (w *procWorker) adoptLocked(sp *spawn) {
	w.cur, w.slot = sp, sp.slot
	w.pid, w.proc, w.started, w.readyAt = sp.pid, sp.proc, sp.started, time.Time{}
	w.dispatches, w.recycleAt, w.overMemory = 0, w.nextRecycleAt(), 0
	w.progress = sp.progress
}

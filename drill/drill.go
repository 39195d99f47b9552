// Package drill runs the kill-and-watch drill against a running master:
// it puts a light dispatch load on every worker, signals one worker
// process (KILL, TERM or STOP), watches the master replace it, and checks
// that only calls on that worker failed and that every accepted nowait
// event still ran.
//
// The drill uses fresh tenants of a dedicated range (see TenantBase) and a
// random run id per run. It removes its template and VMs afterwards; the
// KV keys drill:<run-id>:<n> it wrote stay (the API cannot delete keys).
package drill

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"syscall"
	"time"

	"github.com/templateworker/templateworker/client"
	"github.com/templateworker/templateworker/proto"
)

// Config configures one drill.
type Config struct {
	// Addr is the master's API address (URL or host:port); it must be a
	// loopback address.
	Addr string
	// Token is the API bearer token.
	Token string
	// Worker is the worker to signal; ignored when Random is set.
	Worker int
	// Random picks the worker at random.
	Random bool
	// Signal is SIGKILL, SIGTERM or SIGSTOP.
	Signal syscall.Signal
	// RPS is the dispatch load in calls per second, over all workers.
	RPS int
	// Timeout bounds each phase: waiting for a ready pool, the worker's
	// recovery, and the execution of the accepted nowait events.
	Timeout time.Duration
	// Progress receives one line per step; nil discards them.
	Progress io.Writer
}

// MaxRPS is the highest load a drill sends: it is a drill, not a load test.
const MaxRPS = 1000

// Result is the drill's summary.
type Result struct {
	RunID           string   `json:"run_id"`
	Worker          int      `json:"worker"`
	OldPID          int      `json:"old_pid"`
	NewPID          int      `json:"new_pid"`
	Signal          string   `json:"signal"`
	RecoverySeconds float64  `json:"recovery_seconds"`
	CallsSent       int      `json:"calls_sent"`
	CallsFailed     int      `json:"calls_failed"`
	FailedOnOthers  int      `json:"failed_on_other_workers"`
	NowaitAccepted  int      `json:"nowait_accepted"`
	NowaitExecuted  int      `json:"nowait_executed"`
	Failures        []string `json:"failures"`
	Tenants         []string `json:"tenants"`
	OK              bool     `json:"ok"`
	Reason          string   `json:"reason,omitempty"`
	// unexpected counts calls on the signalled worker that failed with
	// another code than worker_unavailable (reported, not fatal).
	unexpected int
}

// Run runs one drill. It returns an error when the drill could not start
// (bad config, unreachable master, pool not ready, template refused) and
// nothing was signalled; otherwise a Result whose OK and Reason tell
// whether the pool passed.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	progress := cfg.Progress
	if progress == nil {
		progress = io.Discard
	}
	say := func(format string, args ...any) { fmt.Fprintf(progress, "drill: "+format+"\n", args...) }
	api := client.New(cfg.Addr, cfg.Token)

	pool, err := waitAllReady(ctx, api, cfg.Timeout)
	if err != nil {
		return nil, err
	}
	n := len(pool)
	target := cfg.Worker
	if cfg.Random {
		target = rand.IntN(n)
	}
	if target < 0 || target >= n {
		return nil, fmt.Errorf("no worker %d: the master has workers 0..%d", target, n-1)
	}
	runID, start, err := newRunID()
	if err != nil {
		return nil, err
	}
	maxCalls := cfg.RPS * (int(cfg.Timeout/time.Second) + 5)
	// Keep each tenant far below the default quota of 10000 KV keys.
	perWorker := max(1, (maxCalls/n+1999)/2000)
	tenants := drillTenants(start, n, perWorker)
	res := &Result{RunID: runID, Worker: target, Signal: signalName(cfg.Signal)}
	for _, ts := range tenants {
		for _, id := range ts {
			res.Tenants = append(res.Tenants, id.String())
		}
	}
	say("run %s: %d workers, signalling worker %d with SIG%s; tenants %v (one KV key drill:%s:<n> per event is left in each)",
		runID, n, target, res.Signal, res.Tenants, runID)
	defer cleanup(context.WithoutCancel(ctx), api, tenants, say)
	if err := install(ctx, api, tenants, runID); err != nil {
		return nil, err
	}

	l := newLoad(api, tenants, runID, target, cfg.RPS, maxCalls)
	stop := make(chan struct{})
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		l.run(ctx, stop)
	}()
	stopLoad := func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		<-loadDone
	}
	defer stopLoad()
	say("load: %d calls/s, half waited, half nowait, over all workers", cfg.RPS)
	if !sleep(ctx, time.Second) {
		return nil, ctx.Err()
	}

	// Read the pid just before signalling: it is the process to kill.
	pool, err = workers(ctx, api)
	if err != nil {
		return nil, err
	}
	w := pool[target]
	if w.PID <= 0 {
		return nil, fmt.Errorf("worker %d shows no pid (state %s): the drill needs process workers (--process-workers)", target, w.State)
	}
	if w.State != stateReady {
		return nil, fmt.Errorf("worker %d is %s, not ready, just before the signal; try again on a healthy pool", target, w.State)
	}
	res.OldPID = w.PID
	sent := time.Now()
	if err := syscall.Kill(w.PID, cfg.Signal); err != nil {
		return nil, fmt.Errorf("send SIG%s to worker %d (pid %d): %w", res.Signal, target, w.PID, err)
	}
	say("sent SIG%s to worker %d (pid %d); watching /v1/workers", res.Signal, target, w.PID)

	newPID, err := waitReplaced(ctx, api, target, w.PID, cfg.Timeout)
	if err != nil {
		if cfg.Signal == syscall.SIGSTOP {
			// Leave the process as it was found rather than stopped.
			_ = syscall.Kill(w.PID, syscall.SIGCONT)
		}
		stopLoad()
		res.fill(l.stats())
		res.Reason = err.Error()
		return res, nil
	}
	res.NewPID = newPID
	res.RecoverySeconds = roundMillis(time.Since(sent))
	say("worker %d is ready again as pid %d after %.3fs", target, newPID, res.RecoverySeconds)

	// A little more load, so the new process serves calls too.
	sleep(ctx, time.Second)
	stopLoad()
	st := l.stats()
	res.fill(st)
	say("load stopped: %d calls, %d failed; waiting up to %s for %d accepted nowait events to run",
		st.sent, st.failed, cfg.Timeout, st.accepted)
	wctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	res.NowaitExecuted, err = l.executed(wctx)
	cancel()
	if err != nil {
		res.Reason = err.Error()
		return res, nil
	}
	res.judge()
	return res, nil
}

func (c *Config) check() error {
	if err := CheckLoopback(c.Addr); err != nil {
		return err
	}
	if c.Token == "" {
		return fmt.Errorf("no API token")
	}
	switch c.Signal {
	case syscall.SIGKILL, syscall.SIGTERM, syscall.SIGSTOP:
	default:
		return fmt.Errorf("bad signal %v: want KILL, TERM or STOP", c.Signal)
	}
	if c.RPS < 1 || c.RPS > MaxRPS {
		return fmt.Errorf("bad load %d calls/s: want 1..%d", c.RPS, MaxRPS)
	}
	if c.Timeout <= 0 {
		return fmt.Errorf("bad timeout %s: want a positive duration", c.Timeout)
	}
	return nil
}

// fill copies the load's counters into the result.
func (r *Result) fill(s stats) {
	r.CallsSent, r.CallsFailed, r.FailedOnOthers = s.sent, s.failed, s.failedOther
	r.NowaitAccepted, r.Failures, r.unexpected = s.accepted, s.codes, s.unexpectedOnTarget
	if r.Failures == nil {
		r.Failures = []string{}
	}
}

// judge sets OK and Reason once the worker has recovered.
func (r *Result) judge() {
	switch {
	case r.FailedOnOthers > 0:
		r.Reason = strconv.Itoa(r.FailedOnOthers) + " calls failed on workers that were not signalled"
	case r.NowaitExecuted < r.NowaitAccepted:
		r.Reason = fmt.Sprintf("only %d of %d accepted nowait events ran", r.NowaitExecuted, r.NowaitAccepted)
	default:
		r.OK = true
	}
}

// install puts the drill template on every drill tenant and checks with
// one waited call each that it runs, before anything is signalled.
func install(ctx context.Context, api *client.Client, tenants [][]proto.Id, runID string) error {
	for w, ts := range tenants {
		for _, id := range ts {
			if err := api.PutTemplate(ctx, id, TemplateName, templateCode, []string{EventName}); err != nil {
				return fmt.Errorf("install the drill template on %s: %w", id, err)
			}
			key := keyPrefix(runID) + "check"
			v, err := api.Dispatch(ctx, id, proto.Event{Name: EventName, Data: proto.Value(`{"key":"` + key + `","mode":"check"}`)})
			if err == nil {
				err = checkResult(v, key)
			}
			if err != nil {
				return fmt.Errorf("check call on worker %d (tenant %s) before the drill: %w", w, id, err)
			}
		}
	}
	return nil
}

// cleanup removes the drill's templates, VMs and quarantines (a killed
// worker's in-flight tenants get a strike); the KV keys stay.
func cleanup(ctx context.Context, api *client.Client, tenants [][]proto.Id, say func(string, ...any)) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	failed := 0
	for _, ts := range tenants {
		for _, id := range ts {
			if err := api.DeleteTemplate(ctx, id, TemplateName); err != nil && proto.CodeOf(err) != proto.CodeNotFound {
				failed++
			}
			if err := api.DropTenant(ctx, id); err != nil {
				failed++
			}
			_ = api.LiftQuarantine(ctx, id) // not_found unless a strike quarantined it
		}
	}
	if failed > 0 {
		say("cleanup: %d steps failed; the drill tenants may keep their template", failed)
	}
}

// waitAllReady waits until every worker is ready, for at most timeout.
func waitAllReady(ctx context.Context, api *client.Client, timeout time.Duration) ([]workerStatus, error) {
	deadline := time.Now().Add(timeout)
	for {
		pool, err := workers(ctx, api)
		if err != nil {
			return nil, err
		}
		notReady := -1
		for _, w := range pool {
			if w.State == stateThread {
				return nil, fmt.Errorf("worker %d is a thread worker without a process of its own: the drill needs a master with --process-workers", w.ID)
			}
			if w.State != stateReady {
				notReady = w.ID
				break
			}
		}
		if notReady < 0 {
			return pool, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("worker %d is %s, not ready, after %s: the drill needs a healthy pool to start", notReady, pool[notReady].State, timeout)
		}
		if !sleep(ctx, 100*time.Millisecond) {
			return nil, ctx.Err()
		}
	}
}

// waitReplaced watches worker id until it is ready with another pid than
// old, for at most timeout, and returns the new pid.
func waitReplaced(ctx context.Context, api *client.Client, id, old int, timeout time.Duration) (int, error) {
	deadline := time.Now().Add(timeout)
	last := workerStatus{ID: id, PID: old, State: "unknown"}
	for time.Now().Before(deadline) {
		qctx, cancel := context.WithTimeout(ctx, time.Second)
		pool, err := workers(qctx, api)
		cancel()
		if err == nil {
			last = pool[id]
			if last.State == stateReady && last.PID > 0 && last.PID != old {
				return last.PID, nil
			}
		}
		if !sleep(ctx, 50*time.Millisecond) {
			return 0, ctx.Err()
		}
	}
	return 0, fmt.Errorf("worker %d did not recover within %s (last seen: state %s, pid %d, last exit %q)",
		id, timeout, last.State, last.PID, last.LastExit)
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func roundMillis(d time.Duration) float64 {
	return float64(d.Round(time.Millisecond)) / float64(time.Second)
}

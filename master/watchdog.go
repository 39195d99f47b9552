package master

import (
	"time"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/worker"
)

// watchdogCut records why the watchdog killed a spawn.
type watchdogCut struct {
	tenant proto.Id
	ran    time.Duration
}

// watchdog is the per-spawn state of the master's progress watchdog. It
// reads the worker's progress record, whose slots the goroutines running
// calls write at the start and end of every call: a heartbeat from
// another goroutine proves nothing about the Lua work, the record does.
type watchdog struct {
	limit  time.Duration
	period time.Duration
	ticker *time.Ticker
	watch  []worker.ProgressWatch // each slot's running call's own time, on this clock
	// lastCalls is the record's call count when last seen changing (or
	// when the worker last had nothing to do); since is when.
	lastCalls uint64
	since     time.Time
}

func newWatchdog(limit time.Duration) *watchdog {
	d := &watchdog{limit: limit, since: time.Now()}
	if limit > 0 {
		period := max(min(limit/20, 250*time.Millisecond), 10*time.Millisecond)
		d.ticker = time.NewTicker(period)
		d.period = period
	}
	return d
}

// tick is the watchdog's clock; nil (never ready) when it is disabled.
func (d *watchdog) tick() <-chan time.Time {
	if d.ticker == nil {
		return nil
	}
	return d.ticker.C
}

func (d *watchdog) stop() {
	if d.ticker != nil {
		d.ticker.Stop()
	}
}

// observe reads every slot of p and returns the calls running, the one
// that has run longest on its own account among them (store waits
// excluded) and how long.
func (d *watchdog) observe(p *worker.Progress, now time.Time) (running int, longest worker.ProgressSnapshot, ran time.Duration) {
	slots := p.Slots()
	for len(d.watch) < len(slots) {
		d.watch = append(d.watch, worker.ProgressWatch{Period: d.period})
	}
	for i, s := range slots {
		own := d.watch[i].Observe(s, now)
		if s.Running {
			running++
			if own >= ran {
				longest, ran = s, own
			}
		}
	}
	return running, longest, ran
}

// checkProgress kills the spawn pid when one of its running calls has
// executed on its own account (store waits excluded) longer than the
// limit, blaming that call's tenant alone; or when calls wait for it while
// it has started none for longer than the limit (stalled outside any
// call: nobody is blamed). The connection's end then fails the calls in
// flight at once.
func (w *procWorker) checkProgress(d *watchdog, p *worker.Progress, now time.Time, pid int, log zerolog.Logger) {
	running, s, ran := d.observe(p, time.Now())
	calls := p.Snapshot().Calls
	w.mu.Lock()
	if w.cut != nil || w.stalled || w.stopping {
		w.mu.Unlock()
		return
	}
	if running > 0 {
		d.lastCalls, d.since = calls, now
		if ran > d.limit {
			w.cut = &watchdogCut{tenant: s.Tenant, ran: ran}
			w.mu.Unlock()
			log.Error().Str("tenant", s.Tenant.String()).Dur("ran", ran.Round(time.Millisecond)).Dur("limit", d.limit).Int("running", running).
				Msg("watchdog: a call overran the time limit and its grace; killing the worker process")
			killGroup(pid)
			return
		}
		w.mu.Unlock()
		return
	}
	waiting := w.waitingLocked()
	if calls != d.lastCalls || !waiting {
		d.lastCalls, d.since = calls, now
		w.mu.Unlock()
		return
	}
	if idle := now.Sub(d.since); idle > d.limit {
		w.stalled = true
		w.mu.Unlock()
		log.Error().Dur("stalled", idle.Round(time.Millisecond)).Int("inflight", len(w.inflight)).
			Msg("watchdog: calls wait but the worker has started none; killing the worker process")
		killGroup(pid)
		return
	}
	w.mu.Unlock()
}

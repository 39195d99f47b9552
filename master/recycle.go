package master

import (
	"context"
	"math/rand/v2"
	"time"
)

// Reasons of planned replacements, as in
// templateworker_worker_restarts_total{reason}. A planned replacement never
// counts as a failure toward the crash-loop abort.
const (
	ReasonRolling = "rolling"
	ReasonMemory  = "memory"
	ReasonRecycle = "recycle"
)

// memoryStrikes is how many consecutive heartbeats a worker's RSS may stay
// above ProcessConfig.MemoryMax before it is replaced: the worker evicts
// idle VMs first, and the eviction gets that long to bring it down.
const memoryStrikes = 5

// recycleJitter is the ± spread of ProcessConfig.MaxDispatches, so that
// workers started together do not recycle together.
const recycleJitter = 0.10

// nextRecycleAt draws the dispatch count after which the current spawn is
// recycled: MaxDispatches ± 10%, or 0 (never).
func (w *procWorker) nextRecycleAt() int64 {
	n := w.cfg.MaxDispatches
	if n <= 0 {
		return 0
	}
	f := 1 + recycleJitter*(2*rand.Float64()-1)
	return max(1, int64(float64(n)*f))
}

// countDispatch counts one call sent to the current spawn and starts a
// planned replacement when the spawn has served its share.
func (w *procWorker) countDispatch() {
	if w.cfg.MaxDispatches <= 0 {
		return
	}
	w.mu.Lock()
	w.dispatches++
	// Not while a replacement is under way (the new process may serve
	// its share during the old one's drain): the next call after it.
	due := w.recycleAt > 0 && w.dispatches >= w.recycleAt && !w.replacing.Load()
	if due {
		w.recycleAt = 0 // once per spawn
	}
	n := w.dispatches
	w.mu.Unlock()
	if due {
		w.log.Info().Int64("dispatches", n).Int64("max_dispatches", w.cfg.MaxDispatches).
			Msg("worker served its share of dispatches: recycling it")
		w.replace(ReasonRecycle)
	}
}

// checkRSS counts heartbeats whose RSS is above the memory budget and
// starts a planned replacement after memoryStrikes of them in a row.
func (w *procWorker) checkRSS(rss int64) {
	max := w.cfg.MemoryMax
	if max <= 0 {
		return
	}
	w.mu.Lock()
	if rss <= max {
		w.overMemory = 0
		w.mu.Unlock()
		return
	}
	w.overMemory++
	due := w.overMemory >= memoryStrikes && !w.replacing.Load()
	if due {
		w.overMemory = 0 // another memoryStrikes if this replacement fails
	}
	w.mu.Unlock()
	if due {
		w.log.Warn().Int64("rss_bytes", rss).Int64("memory_max", max).Int("heartbeats", memoryStrikes).
			Msg("worker RSS stayed above --worker-memory-max after evicting idle VMs: replacing it")
		w.replace(ReasonMemory)
	}
}

// replace starts a planned replacement of the worker process for reason,
// unless one is already running: the new process is started and ready
// before the old one is drained (swap); no call fails and no call waits.
func (w *procWorker) replace(reason string) {
	if !w.replacing.CompareAndSwap(false, true) {
		w.retryLater(reason)
		return
	}
	w.mu.Lock()
	if w.stopping { // Kill waits for bg: no Add after it stopped
		w.mu.Unlock()
		w.replacing.Store(false)
		return
	}
	w.bg.Add(1)
	w.mu.Unlock()
	go func() {
		defer w.bg.Done()
		defer w.replacing.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), w.replaceTimeout())
		defer cancel()
		if err := w.swap(ctx, reason); err != nil {
			w.log.Warn().Err(err).Str("reason", reason).Msg("planned replacement of the worker failed; the old process keeps serving")
			w.retryLater(reason)
		}
	}()
}

// replaceTimeout bounds the start of a planned replacement's new process
// (the old one's drain has the watchdog's bounds).
func (w *procWorker) replaceTimeout() time.Duration {
	return 2*w.cfg.DispatchTimeout + w.cfg.ReadyTimeout
}

// retryLater re-arms a replacement of reason that failed or could not
// start: memory after another memoryStrikes heartbeats over the budget,
// recycle after another share of dispatches.
func (w *procWorker) retryLater(reason string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch reason {
	case ReasonMemory:
		w.overMemory = 0
	case ReasonRecycle:
		if n := w.nextRecycleAt(); n > 0 {
			w.recycleAt = w.dispatches + n
		}
	}
}

package master

import (
	"context"
	"encoding/json"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/templateworker/templateworker/proto"
)

// recoveryChunk counts the calls its tenant VM has served. A worker
// process builds the VM on the tenant's first call there, so 1 means the
// call was served by a process that had not run this tenant before — not
// by the killed one, which had.
const recoveryChunk = `calls = (calls or 0) + 1 return calls`

// The supervisor's defaults (the master's --min-uptime, --restart-backoff
// and --restart-backoff-max).
const (
	defaultMinUptime  = 10 * time.Second
	defaultBackoff    = 3 * time.Second
	defaultBackoffMax = 15 * time.Second
)

// BenchmarkRecovery SIGKILLs a worker process (alternating between the
// two workers) once per iteration and measures the time from the kill to
// the first successful dispatch to a tenant of the killed worker. Each
// timed dispatch is checked to have been served by the replacement
// process: its tenant VM is new (recoveryChunk counts 1), exactly one
// restart happened since the kill, and the worker's pid changed. It
// reports p50, p90 and max over the kills.
//
// MinUptime is 1 ms, so every restart takes the supervisor's
// immediate-restart path however soon the kills follow each other;
// BenchmarkRecoveryDefaultMinUptime measures the supervisor's defaults.
func BenchmarkRecovery(b *testing.B) {
	cfg := benchProcessConfig(b)
	cfg.MinUptime = time.Millisecond
	benchRecovery(b, cfg)
}

// BenchmarkRecoveryDefaultMinUptime is BenchmarkRecovery with the
// supervisor's default --min-uptime and backoff: each worker is killed
// only once it has run for MinUptime, as a long-running worker is in
// production, so each kill is a first failure and takes the path an
// operator gets (a worker killed sooner than MinUptime after its start
// counts as failing and waits --restart-backoff, by design). Every kill
// costs up to MinUptime of waiting, so it runs few iterations.
func BenchmarkRecoveryDefaultMinUptime(b *testing.B) {
	cfg := benchProcessConfig(b)
	cfg.MinUptime, cfg.Backoff, cfg.BackoffMax = defaultMinUptime, defaultBackoff, defaultBackoffMax
	benchRecovery(b, cfg)
}

func benchRecovery(b *testing.B, cfg ProcessConfig) {
	st := openTestStore(b)
	for _, id := range benchIDs {
		put(b, st, id, "loop", recoveryChunk, "Ping")
	}
	pp := startBenchPool(b, st, cfg)
	ctx := context.Background()
	ev := eventOf("Ping", `{}`)
	// tenantOf[w] is a tenant routed to worker w.
	tenantOf := make([]proto.Id, len(pp.workers))
	for _, id := range benchIDs {
		tenantOf[id.WorkerID(len(pp.workers))] = id
	}
	for w, id := range tenantOf {
		if pp.For(id) != WorkerLike(pp.workers[w]) {
			b.Fatalf("no bench tenant routed to worker %d", w)
		}
	}
	var took []time.Duration
	for i := 0; b.Loop(); i++ {
		w := pp.workers[i%len(pp.workers)]
		id := tenantOf[w.id]
		// The process to kill has served the tenant, so a call it
		// answered would count more than 1.
		if _, err := pp.DispatchEvent(ctx, id, ev); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		for cfg.MinUptime > time.Millisecond && w.Status().UptimeSeconds < cfg.MinUptime.Seconds()+0.2 {
			time.Sleep(10 * time.Millisecond)
		}
		b.StartTimer()
		st := w.Status()
		start := time.Now()
		if err := syscall.Kill(st.PID, syscall.SIGKILL); err != nil {
			b.Fatal(err)
		}
		var got proto.Value
		for {
			if time.Since(start) > time.Minute {
				b.Fatalf("worker %d not back after a minute: %+v", w.id, w.Status())
			}
			// A killed process may still answer for a moment; only once
			// the supervisor has reaped it can a success come from the new
			// one.
			if w.Status().Restarts == st.Restarts {
				time.Sleep(100 * time.Microsecond)
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			v, err := pp.DispatchEvent(cctx, id, ev)
			cancel()
			if err == nil {
				got = v
				break
			}
			time.Sleep(100 * time.Microsecond)
		}
		took = append(took, time.Since(start))
		now := w.Status()
		var calls map[string]int
		if err := json.Unmarshal(got, &calls); err != nil || calls["loop"] != 1 {
			b.Fatalf("kill %d: the first dispatch after the kill was not served by a new process: %s (%v)", i, got, err)
		}
		if now.Restarts != st.Restarts+1 || now.PID == 0 || now.PID == st.PID {
			b.Fatalf("kill %d of pid %d: answered, but the worker is now %+v (want one restart and a new pid)", i, st.PID, now)
		}
	}
	slices.Sort(took)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	// Nearest-rank percentiles.
	rank := func(p int) time.Duration { return took[max(0, (len(took)*p+99)/100-1)] }
	// Restarts beyond one per kill: a replacement process that was itself
	// killed (e.g. by a late disconnect of the killed process's connection).
	restarts := 0
	for _, w := range pp.workers {
		restarts += w.Status().Restarts
	}
	b.ReportMetric(float64(restarts-len(took)), "extra-restarts")
	b.ReportMetric(ms(rank(50)), "p50-ms")
	b.ReportMetric(ms(rank(90)), "p90-ms")
	b.ReportMetric(ms(took[len(took)-1]), "max-ms")
	b.ReportMetric(0, "ns/op")
}

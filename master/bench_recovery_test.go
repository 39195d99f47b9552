package master

import (
	"context"
	"slices"
	"syscall"
	"testing"
	"time"
)

// BenchmarkRecovery SIGKILLs a worker process (alternating between the
// two workers) once per iteration and measures the time from the kill to
// the first successful dispatch to a tenant of that worker, served by its
// new process. It reports p50, p90 and max over the kills. MinUptime is
// 1 ms, so every restart takes the supervisor's immediate-restart path (a
// worker that got ready and served counts as healthy; no backoff).
func BenchmarkRecovery(b *testing.B) {
	cfg := benchProcessConfig(b)
	cfg.MinUptime = time.Millisecond
	pp := benchProcessPool(b, emptyChunk, cfg)
	ctx := context.Background()
	ev := eventOf("Ping", `{}`)
	var took []time.Duration
	for i := 0; b.Loop(); i++ {
		w := pp.workers[i%2]
		id := benchIDs[i%2]
		if _, err := pp.DispatchEvent(ctx, id, ev); err != nil {
			b.Fatal(err)
		}
		st := w.Status()
		start := time.Now()
		if err := syscall.Kill(st.PID, syscall.SIGKILL); err != nil {
			b.Fatal(err)
		}
		for {
			if time.Since(start) > 30*time.Second {
				b.Fatalf("worker %d not back after 30s: %+v", w.id, w.Status())
			}
			// A killed process may still answer for a moment; only once
			// the supervisor has reaped it can a success come from the new
			// one.
			if w.Status().Restarts == st.Restarts {
				time.Sleep(100 * time.Microsecond)
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := pp.DispatchEvent(cctx, id, ev)
			cancel()
			if err == nil {
				break
			}
			time.Sleep(100 * time.Microsecond)
		}
		took = append(took, time.Since(start))
	}
	slices.Sort(took)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	// Nearest-rank percentiles.
	rank := func(p int) time.Duration { return took[max(0, (len(took)*p+99)/100-1)] }
	// Restarts beyond one per kill: a replacement process that was itself
	// killed (e.g. by a late disconnect of the killed process's connection).
	restarts := pp.workers[0].Status().Restarts + pp.workers[1].Status().Restarts
	b.ReportMetric(float64(restarts-len(took)), "extra-restarts")
	b.ReportMetric(ms(rank(50)), "p50-ms")
	b.ReportMetric(ms(rank(90)), "p90-ms")
	b.ReportMetric(ms(took[len(took)-1]), "max-ms")
	b.ReportMetric(0, "ns/op")
}

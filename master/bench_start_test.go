package master

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/store"
)

// startTenantsEnv sets the number of tenants in the store of
// BenchmarkStartManyTenants; make bench (cmd/benchreport) sets 1,000,000.
// The default keeps its run in make test short.
const startTenantsEnv = "TEMPLATEWORKER_BENCH_START_TENANTS"

// startOnStartup is how many of the seeded tenants are registered for
// OnStartup: those, and only those, get an event when a worker starts.
const startOnStartup = 100

// BenchmarkStartManyTenants seeds N tenants (one template each, make
// bench: N = 1,000,000; startOnStartup of them also registered for
// OnStartup) with store.BulkPutTemplate and times, per start of 2 process
// workers over that store with --vm-cache-max 20000: start to ready (both
// connected) and start to the first dispatch served by each worker (a
// cold one: the tenant's templates fetched on first use). It checks that
// a worker loaded only the OnStartup tenants, not the store.
func BenchmarkStartManyTenants(b *testing.B) { onBothStores(b, benchStartManyTenants) }

func benchStartManyTenants(b *testing.B, st store.Store) {
	n := envCount(b, startTenantsEnv, 42000, startOnStartup)
	ctx := context.Background()
	ids := make([]proto.Id, n)
	for i := range ids {
		ids[i] = scaleTenant(i)
	}
	seedStart := time.Now()
	if err := store.BulkPutTemplate(ctx, st, ids, proto.Template{Name: "echo", Code: echoTemplate, Events: []string{"Ping"}}); err != nil {
		b.Fatal(err)
	}
	if err := store.BulkPutTemplate(ctx, st, ids[:startOnStartup], proto.Template{Name: "boot", Code: `return 1`, Events: []string{"OnStartup"}}); err != nil {
		b.Fatal(err)
	}
	seed := time.Since(seedStart)
	cfg := benchProcessConfig(b)
	cfg.Args = append(cfg.Args, "--vm-cache-max", strconv.Itoa(scaleCacheMax))
	ev := proto.Event{Name: "Ping", Data: proto.Value(`{"who":"ops"}`)}
	var ready, served time.Duration
	runs := 0
	for b.Loop() {
		start := time.Now()
		pp, err := startProcessPool(2, "unix", cfg, st, NewQuarantine(3, time.Minute), zerolog.Nop(), func(err error) { b.Errorf("process pool: %v", err) })
		if err != nil {
			b.Fatal(err)
		}
		for !pp.Ready() {
			if time.Since(start) > time.Minute {
				b.Fatalf("workers not ready: %+v", pp.Status())
			}
			time.Sleep(100 * time.Microsecond)
		}
		ready += time.Since(start)
		// One tenant of each worker, not an OnStartup one: cold.
		for _, id := range ids[n-2:] {
			if _, err := pp.Pool.DispatchEvent(ctx, id, ev); err != nil {
				b.Fatal(err)
			}
		}
		served += time.Since(start)
		b.StopTimer()
		// A worker loaded the tenants that got OnStartup (and the one just
		// served), never the store: heartbeats carry the count.
		deadline := time.Now().Add(10 * cfg.HeartbeatInterval)
		for loaded := 0; loaded < startOnStartup+2; {
			loaded = 0
			for _, w := range pp.workers {
				loaded += w.Status().Tenants
			}
			if loaded > startOnStartup+2 {
				b.Fatalf("workers loaded %d tenants at start; %d are registered for OnStartup", loaded, startOnStartup)
			}
			if time.Now().After(deadline) {
				b.Fatalf("workers loaded %d tenants, want the %d OnStartup ones and the 2 served", loaded, startOnStartup)
			}
			time.Sleep(cfg.HeartbeatInterval / 4)
		}
		kctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_ = pp.Kill(kctx)
		cancel()
		runs++
		b.StartTimer()
	}
	b.ReportMetric(float64(n), "tenants")
	b.ReportMetric(seed.Seconds(), "seed-s")
	b.ReportMetric(float64(ready.Microseconds())/1000/float64(runs), "start-to-ready-ms")
	b.ReportMetric(float64(served.Microseconds())/1000/float64(runs), "start-to-first-dispatch-ms")
}

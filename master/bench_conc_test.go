package master

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/internal/pgtest"
	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/store"
	"github.com/templateworker/templateworker/worker"
)

// The benchmarks of issue 19 (no head-of-line blocking).

// spinTemplate spins for the milliseconds its event asks (well inside the
// default --lua-timeout and instruction budget of the benchmarks).
const spinTemplate = `local e = ... local t = os.clock() while os.clock() - t < e.data.ms / 1000 do end return "spun"`

// neighbourSpinMs is how long each call of the spinning tenant runs.
const neighbourSpinMs = 20

// BenchmarkNeighbour measures the latency of a neighbour's trivial
// dispatch on a worker that is idle, and on the same worker beside a
// tenant that spins inside its budget back to back (a call of 20 ms after
// another), in both topologies, with --worker-concurrency 4 (the default)
// and 1 (the serial worker of before), and in the process topology with
// the kernel's scheduler slice (--sched-slice 0, the worker of before
// --worker-sched-slice). It reports the neighbour's p50 and
// p99 in µs, and fails if the spinning cases did not have a spinning call
// in flight during the neighbour's calls.
func BenchmarkNeighbour(b *testing.B) {
	for _, topo := range []string{"thread", "process"} {
		for _, c := range []struct {
			name        string
			concurrency int
			spin        bool
			args        []string
		}{{"idle", 4, false, nil}, {"beside-spinner", 4, true, nil}, {"beside-spinner-concurrency-1", 1, true, nil},
			{"beside-spinner-kernel-slice", 4, true, []string{"--sched-slice", "0"}}} {
			if c.args != nil && topo != "process" {
				continue // a process worker's flag
			}
			b.Run(topo+"/"+c.name, func(b *testing.B) { benchNeighbour(b, topo, c.concurrency, c.spin, c.args...) })
		}
	}
}

func benchNeighbour(b *testing.B, topo string, concurrency int, spin bool, args ...string) {
	st := openTestStore(b)
	ctx := context.Background()
	neighbour, spinner := proto.GuildID(1<<22|3), proto.GuildID(3<<22|3) // both on worker 0 of 1
	put(b, st, neighbour, "quick", `return 1`, "Ping")
	put(b, st, spinner, "spin", spinTemplate, "Spin")
	var pool *Pool
	switch topo {
	case "thread":
		p, err := newThreadPool(1, worker.Options{Store: threadStore(st, nil, 0), Logger: zerolog.Nop(), Concurrency: concurrency, NoStartup: true})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = p.Kill(context.Background()) })
		pool = p
	default:
		cfg := benchProcessConfig(b)
		cfg.Args = append(append(cfg.Args, "--worker-concurrency", strconv.Itoa(concurrency)), args...)
		pool = startTestProcessPool(b, 1, st, cfg).Pool
	}
	ping := proto.Event{Name: "Ping", Data: proto.Value(`{}`)}
	spinEv := proto.Event{Name: "Spin", Data: proto.Value(`{"ms":` + strconv.Itoa(neighbourSpinMs) + `}`)}
	for i := 0; i < 20; i++ { // warm both tenants' VMs
		if _, err := pool.DispatchEvent(ctx, neighbour, ping); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := pool.DispatchEvent(ctx, spinner, spinEv); err != nil {
		b.Fatal(err)
	}
	var inFlight atomic.Int32
	stop := make(chan struct{})
	var wg sync.WaitGroup
	if spin {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				inFlight.Store(1)
				_, err := pool.DispatchEvent(ctx, spinner, spinEv)
				inFlight.Store(0)
				if err != nil {
					b.Error(err)
					return
				}
			}
		}()
		for inFlight.Load() == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	lat := make([]time.Duration, 0, b.N)
	overlapped := 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if _, err := pool.DispatchEvent(ctx, neighbour, ping); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
		if inFlight.Load() == 1 {
			overlapped++
		}
	}
	b.StopTimer()
	close(stop)
	wg.Wait()
	if spin && overlapped*10 < b.N*9 {
		b.Fatalf("a spinning call was in flight during %d of %d neighbour calls, want ≥ 90%%", overlapped, b.N)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(float64(concurrency), "concurrency")
}

// kvHeavyTemplate does 5 gets and 1 set per event: a template that waits
// for the store most of its time.
const kvHeavyTemplate = `local e, ctx = ...
local n = 0
for i = 1, 5 do n = n + (ctx.kv.get("k" .. i) or 0) end
ctx.kv.set("k1", (ctx.kv.get("k1") or 0) % 1000 + 1)
return n`

// kvHeavyTenants is the tenants of BenchmarkKVHeavy, 32 on each worker.
const kvHeavyTenants = 64

// BenchmarkKVHeavy measures the throughput of the KV-heavy template over
// 64 tenants (one client each, waited calls) on 2 process workers, with
// --worker-concurrency 1 (before: a worker idles while a call waits for
// the store) and 4, over SQLite and PostgreSQL. It reports events/s.
func BenchmarkKVHeavy(b *testing.B) {
	for _, kind := range []string{"sqlite", "postgres"} {
		for _, c := range []int{1, 4} {
			b.Run(fmt.Sprintf("%s/concurrency-%d", kind, c), func(b *testing.B) {
				var st store.Store
				if kind == "sqlite" {
					st = openTestStore(b)
				} else {
					dsn, _, _ := pgtest.Schema(b, pgtest.URL(b))
					s, err := store.Open(context.Background(), store.Config{DatabaseURL: dsn, Options: store.Options{Quota: store.DefaultQuota}})
					if err != nil {
						b.Fatal(err)
					}
					b.Cleanup(func() { s.Close() })
					st = s
				}
				benchKVHeavy(b, st, c)
			})
		}
	}
}

func benchKVHeavy(b *testing.B, st store.Store, concurrency int) {
	ctx := context.Background()
	ids := make([]proto.Id, kvHeavyTenants)
	for i := range ids {
		ids[i] = proto.GuildID(uint64(i)<<22 | 9)
		put(b, st, ids[i], "kv", kvHeavyTemplate, "Ping")
	}
	cfg := benchProcessConfig(b)
	cfg.Args = append(cfg.Args, "--worker-concurrency", strconv.Itoa(concurrency))
	pool := startTestProcessPool(b, 2, st, cfg).Pool
	ev := proto.Event{Name: "Ping", Data: proto.Value(`{}`)}
	for _, id := range ids {
		if pool.For(id).ID() != int(id.ID>>22)%2 {
			b.Fatalf("tenant %s routed to worker %d", id, pool.For(id).ID())
		}
		if _, err := pool.DispatchEvent(ctx, id, ev); err != nil {
			b.Fatal(err)
		}
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				if _, err := pool.DispatchEvent(ctx, id, ev); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if v, ok, err := st.KvGet(ctx, ids[0], "k1"); err != nil || !ok || len(v) == 0 {
		b.Fatalf("the template's set did not reach the store: %s %v %v", v, ok, err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(concurrency), "concurrency")
}

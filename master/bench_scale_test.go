package master

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/internal/pgtest"
	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/store"
)

// scaleTenantsEnv sets the number of distinct tenants of
// BenchmarkManyTenants; make bench sets 1,000,000 (BENCH_TENANTS). The
// default keeps the benchmark's run in make test (-benchtime 1x) short.
const scaleTenantsEnv = "TEMPLATEWORKER_BENCH_TENANTS"

// scaleTenantsPGEnv, when set, is the number of tenants of the PostgreSQL
// run instead (make bench: BENCH_TENANTS_PG, smaller, so that the two runs
// stay within minutes); each run reports its own size.
const scaleTenantsPGEnv = "TEMPLATEWORKER_BENCH_TENANTS_PG"

// scaleCacheMax is the --vm-cache-max of the scale benchmark's workers.
const scaleCacheMax = 20000

func scaleTenants(b *testing.B) int {
	n := envCount(b, scaleTenantsEnv, 42000, 0) // 21,000 a worker: past the cache, so some evictions
	if strings.HasSuffix(b.Name(), "/postgres") {
		n = envCount(b, scaleTenantsPGEnv, n, 0)
	}
	return n
}

// envCount is the number in environment variable env, or def when it is
// unset; it must be above floor.
func envCount(b *testing.B, env string, def, floor int) int {
	v := os.Getenv(env)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= floor {
		b.Fatalf("%s=%q: want a number above %d", env, v, floor)
	}
	return n
}

// onBothStores runs fn as the sub-benchmarks "sqlite" (a fresh embedded
// store) and "postgres" (a fresh schema of the test database; skipped
// without one).
func onBothStores(b *testing.B, fn func(*testing.B, store.Store)) {
	b.Run("sqlite", func(b *testing.B) { fn(b, openTestStore(b)) })
	b.Run("postgres", func(b *testing.B) {
		dsn, _, _ := pgtest.Schema(b, pgtest.URL(b))
		st, err := store.Open(context.Background(), store.Config{DatabaseURL: dsn})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { st.Close() })
		fn(b, st)
	})
}

// scaleTenant is the i-th tenant of the scale benchmark; consecutive
// tenants go to different workers.
func scaleTenant(i int) proto.Id { return proto.GuildID(uint64(i+1) << 22) }

// BenchmarkManyTenants seeds N tenants (one template each; make bench: N =
// 1,000,000) in the store with store.BulkPutTemplate, starts 2 process
// workers with --vm-cache-max 20000, and dispatches through the HTTP API
// from 64 clients: every tenant once, round robin (all cold: a VM built
// from templates fetched on first use), then a hot set that fits the
// caches. It reports the workers' start-to-ready time over that store, the
// cold throughput and latencies, the cache-hit latencies, and the peak RSS
// of a worker, sampled every 100 ms; it checks from the workers' own
// counters that the cold dispatches were cold, the hot ones hits, and the
// caches within their bound.
func BenchmarkManyTenants(b *testing.B) { onBothStores(b, benchManyTenants) }

func benchManyTenants(b *testing.B, st store.Store) {
	n := scaleTenants(b)
	ctx := context.Background()
	ids := make([]proto.Id, n)
	for i := range ids {
		ids[i] = scaleTenant(i)
	}
	seedStart := time.Now()
	if err := store.BulkPutTemplate(ctx, st, ids, proto.Template{Name: "echo", Code: echoTemplate, Events: []string{"Ping"}}); err != nil {
		b.Fatal(err)
	}
	seed := time.Since(seedStart)
	cfg := benchProcessConfig(b)
	cfg.Args = append(cfg.Args, "--vm-cache-max", strconv.Itoa(scaleCacheMax))
	startAt := time.Now()
	pp := startBenchPool(b, st, cfg)
	startToReady := time.Since(startAt)
	q := NewQuarantine(3, time.Minute)
	api := &API{
		Store: st, Workers: pp.Pool, Quarantine: q, Metrics: NewMetrics("process", pp.Pool, q),
		Token: "bench-token", CallTimeout: 30 * time.Second, Log: zerolog.Nop(),
	}
	base := serveLoopback(b, api.Handler())

	var peakRSS, peakHeap atomic.Int64
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			for _, w := range pp.workers {
				st := w.Status()
				if st.RSSBytes > peakRSS.Load() {
					peakRSS.Store(st.RSSBytes)
				}
				if st.HeapBytes > peakHeap.Load() {
					peakHeap.Store(st.HeapBytes)
				}
			}
			select {
			case <-stopSampling:
				return
			case <-t.C:
			}
		}
	}()
	coldBefore := coldStarts(pp)
	b.ResetTimer()
	coldStart := time.Now()
	cold := scaleLoad(b, base, api.Token, n, func(i int) proto.Id { return ids[i] })
	coldTook := time.Since(coldStart)
	// The hot set: 10,000 tenants, 5,000 per worker, within the caches.
	hot := min(n, 10000)
	scaleLoad(b, base, api.Token, hot, func(i int) proto.Id { return ids[i] }) // load them
	b.StopTimer()
	hitsBefore := settledColdStarts(pp, cfg.HeartbeatInterval)
	b.StartTimer()
	hits := scaleLoad(b, base, api.Token, 10*hot, func(i int) proto.Id { return ids[i%hot] })
	b.StopTimer()
	close(stopSampling)
	<-sampled

	// What the benchmark claims, from the workers' own counters.
	after := settledColdStarts(pp, cfg.HeartbeatInterval)
	if hitsBefore-coldBefore < int64(n) {
		b.Fatalf("the workers report %d cold starts for %d distinct tenants", hitsBefore-coldBefore, n)
	}
	if extra := after - hitsBefore; extra > 0 {
		b.Fatalf("the hot set (%d tenants, caches of %d) built %d VMs: not cache hits", hot, scaleCacheMax, extra)
	}
	for _, w := range pp.workers {
		if s := w.Status(); s.Cache == nil || s.Cache.VMs > scaleCacheMax {
			b.Fatalf("worker %d cache %+v exceeds --vm-cache-max %d", w.id, s.Cache, scaleCacheMax)
		}
	}
	b.ReportMetric(float64(n), "tenants")
	b.ReportMetric(seed.Seconds(), "seed-s")
	b.ReportMetric(float64(startToReady.Milliseconds()), "start-to-ready-ms")
	b.ReportMetric(float64(n)/coldTook.Seconds(), "cold-dispatch/s")
	b.ReportMetric(percentile(cold, 50), "cold-p50-µs")
	b.ReportMetric(percentile(cold, 99), "cold-p99-µs")
	b.ReportMetric(percentile(hits, 50), "hit-p50-µs")
	b.ReportMetric(percentile(hits, 99), "hit-p99-µs")
	b.ReportMetric(float64(peakRSS.Load())/(1<<20), "peak-worker-rss-MiB")
	b.ReportMetric(float64(peakHeap.Load())/(1<<20), "peak-worker-heap-MiB")
	// Side by side at the end: a full cache's RSS and Go heap per cached VM.
	var rss, heap, vms int64
	for _, w := range pp.workers {
		if s := w.Status(); s.Cache != nil {
			rss, heap, vms = rss+s.RSSBytes, heap+s.HeapBytes, vms+int64(s.Cache.VMs)
		}
	}
	if vms > 0 {
		b.ReportMetric(float64(rss)/float64(vms)/1024, "rss-KiB/cached-vm")
		b.ReportMetric(float64(heap)/float64(vms)/1024, "heap-KiB/cached-vm")
	}
}

// coldStarts sums the VM builds the workers reported.
func coldStarts(pp *processPool) int64 {
	var n int64
	for _, w := range pp.workers {
		if s := w.Status(); s.Cache != nil {
			n += s.Cache.ColdStarts
		}
	}
	return n
}

// settledColdStarts waits until the workers' reported cold starts stay the
// same over three heartbeats (the counters travel in heartbeats) and
// returns them.
func settledColdStarts(pp *processPool, heartbeat time.Duration) int64 {
	last, since := coldStarts(pp), time.Now()
	for time.Since(since) < 3*heartbeat {
		time.Sleep(heartbeat / 4)
		if n := coldStarts(pp); n != last {
			last, since = n, time.Now()
		}
	}
	return last
}

// scaleLoad posts count events, the i-th to tenant(i), from httpClients
// keep-alive clients, and returns each call's latency in microseconds.
func scaleLoad(b *testing.B, base, token string, count int, tenant func(i int) proto.Id) []float64 {
	tr := &http.Transport{MaxIdleConns: httpClients, MaxIdleConnsPerHost: httpClients, MaxConnsPerHost: httpClients}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 60 * time.Second}
	body := []byte(`{"name":"Ping","author":null,"data":{"who":"ops"}}`)
	lat := make([]float64, count)
	var next atomic.Int64
	var wg sync.WaitGroup
	var errOnce sync.Once
	var firstErr error
	clients := max(httpClients, runtime.GOMAXPROCS(0))
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= count {
					return
				}
				id := tenant(i)
				url := base + "/v1/tenants/guild/" + strconv.FormatUint(id.ID, 10) + "/events"
				start := time.Now()
				err := postEvent(client, url, token, body)
				lat[i] = float64(time.Since(start).Microseconds())
				if err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("tenant %s: %w", id, err) })
					next.Store(int64(count)) // stop everyone
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	return lat
}

// percentile returns the p-th percentile of v (sorted in place).
func percentile(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	return v[min(len(v)-1, int(float64(len(v))*p/100))]
}

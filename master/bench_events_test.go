package master

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/queue"
	"github.com/templateworker/templateworker/store"
	"github.com/templateworker/templateworker/worker"
)

// benchQueue starts the durable queue over st delivering to pool, with
// bounds no benchmark reaches; it is closed when b ends.
func benchQueue(b *testing.B, st store.Store, pool *Pool) *queue.Queue {
	b.Helper()
	cfg := Config{Limits: worker.DefaultLimits, DispatchTimeout: 10 * time.Second,
		Events: EventsConfig{BacklogTenant: 1 << 30, BacklogMax: 1 << 30}}
	eq, err := startQueue(context.Background(), cfg, st, pool, NewQuarantine(3, time.Minute), nil, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = eq.Close(context.Background()) })
	return eq
}

// waitDelivered waits until the queue delivered n events in all.
func waitDelivered(b *testing.B, eq *queue.Queue, n uint64) {
	b.Helper()
	deadline := time.Now().Add(10 * time.Minute)
	for eq.Stats().Delivered < n {
		if time.Now().After(deadline) {
			b.Fatalf("queue delivered %d of %d events: %+v", eq.Stats().Delivered, n, eq.Stats())
		}
		time.Sleep(time.Millisecond)
	}
}

// BenchmarkHTTPNowait is POST /v1/tenants/{tenant}/events?wait=false
// through the real API over the durable queue (SQLite, group commit), the
// process topology with 2 workers draining the queue meanwhile, from
// httpClients keep-alive clients; before it, GET /healthz on the same
// server with the same clients (healthz-req/s), the floor of its goal. It
// reports the accept latency percentiles, and checks that every accepted
// event was delivered.
//
// Both phases share 2 cores, so their ratio is that of their CPU per
// request, reported from /proc: master-cpu-us/op (this process: the
// server, the queue, the commits, the deliveries and the load generator)
// and worker-cpu-us/op (the 2 worker processes) per event, counted until
// the last one was delivered; healthz-cpu-us/op per GET /healthz.
// events/delivery is the events per dispatch to a worker (above 1 when the
// queue pipelined a tenant's due events in windows).
// pending-at-end is how many accepted events were not yet delivered when
// the timed part ended.
func BenchmarkHTTPNowait(b *testing.B) {
	st := openTestStore(b)
	for i := range httpTenants {
		put(b, st, httpTenant(i), "echo", echoTemplate, "Ping")
	}
	pp := startBenchPool(b, st, benchProcessConfig(b))
	pool := pp.Pool
	eq := benchQueue(b, st, pool)
	q := NewQuarantine(3, time.Minute)
	api := &API{
		Store: st, Workers: pool, Queue: eq, Quarantine: q, Metrics: NewMetrics("process", pool, q),
		Token: "bench-token", CallTimeout: 10 * time.Second, Log: zerolog.Nop(),
	}
	base := serveLoopback(b, api.Handler())
	tr := &http.Transport{MaxIdleConns: httpClients, MaxIdleConnsPerHost: httpClients, MaxConnsPerHost: httpClients}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	body := []byte(`{"name":"Ping","author":null,"data":{"who":"ops"}}`)
	nowait := func(i int) error {
		id := httpTenant(i)
		req, err := http.NewRequest(http.MethodPost, base+"/v1/tenants/guild/"+strconv.FormatUint(id.ID, 10)+"/events?wait=false", strings.NewReader(string(body)))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+api.Token)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted || !strings.HasPrefix(string(got), `{"accepted":true,"id":"`) {
			return fmt.Errorf("status %d: %s", resp.StatusCode, got)
		}
		return nil
	}
	healthz := func() error {
		resp, err := client.Get(base + "/healthz")
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("healthz status %d", resp.StatusCode)
		}
		return nil
	}
	for i := range httpTenants { // load every tenant, open connections
		if err := nowait(i); err != nil {
			b.Fatal(err)
		}
	}
	warm := uint64(httpTenants)
	waitDelivered(b, eq, warm)
	callers := setCallers(b, httpClients)
	b.ReportAllocs()

	// The floor: GET /healthz, b.N requests.
	workers := workerPIDs(pp)
	b.ResetTimer()
	cpu0, wcpu0 := cpuTime(b, 0), cpuTime(b, workers...)
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := healthz(); err != nil {
				b.Error(err)
				return
			}
		}
	})
	healthRate := float64(b.N) / time.Since(start).Seconds()
	healthCPU := cpuTime(b, 0) - cpu0

	// Nowait events, b.N requests, each timed.
	commits, deliveries, delivered := eq.Stats().Commits, eq.Stats().Deliveries, eq.Stats().Delivered
	var (
		mu  sync.Mutex
		lat []time.Duration
	)
	cpu0, wcpu1 := cpuTime(b, 0), cpuTime(b, workers...)
	start = time.Now()
	b.RunParallel(func(pb *testing.PB) {
		mine := make([]time.Duration, 0, 1024)
		i := 0
		for pb.Next() {
			i++
			t0 := time.Now()
			if err := nowait(i); err != nil {
				b.Error(err)
				return
			}
			mine = append(mine, time.Since(t0))
		}
		mu.Lock()
		lat = append(lat, mine...)
		mu.Unlock()
	})
	rate := float64(b.N) / time.Since(start).Seconds()
	commits = eq.Stats().Commits - commits
	behind := eq.Stats().Pending
	b.StopTimer()
	// Measured what the name says: every accepted event committed and
	// delivered by the workers. The CPU counted is all of it, the
	// deliveries still behind at the end of the timed part included.
	waitDelivered(b, eq, warm+uint64(b.N))
	nowaitCPU, wcpu2 := cpuTime(b, 0)-cpu0, cpuTime(b, workers...)
	st1 := eq.Stats()
	deliveries, delivered = st1.Deliveries-deliveries, st1.Delivered-delivered
	slices.Sort(lat)
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds())
	}
	b.ReportMetric(rate, "req/s")
	b.ReportMetric(healthRate, "healthz-req/s")
	b.ReportMetric(pct(0.50), "p50-us")
	b.ReportMetric(pct(0.99), "p99-us")
	b.ReportMetric(float64(callers), "callers")
	b.ReportMetric(float64(b.N)/float64(max(commits, 1)), "events/commit")
	// Events per dispatch to a worker: above 1 when deliveries were
	// pipelined (windows of a tenant's due events).
	b.ReportMetric(float64(delivered)/float64(max(deliveries, 1)), "events/delivery")
	b.ReportMetric(float64(behind), "pending-at-end")
	us := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(b.N) }
	b.ReportMetric(us(nowaitCPU), "master-cpu-us/op")
	b.ReportMetric(us(wcpu2-wcpu1), "worker-cpu-us/op")
	b.ReportMetric(us(healthCPU+wcpu1-wcpu0), "healthz-cpu-us/op")
}

// cpuTime is the user plus system CPU time the processes pids (0: this
// one) used so far, from /proc (in clock ticks of 10 ms).
func cpuTime(b *testing.B, pids ...int) time.Duration {
	b.Helper()
	var total time.Duration
	for _, pid := range pids {
		name := "self"
		if pid != 0 {
			name = strconv.Itoa(pid)
		}
		raw, err := os.ReadFile("/proc/" + name + "/stat")
		if err != nil {
			b.Fatalf("cpu time of pid %d: %v", pid, err)
		}
		// The fields after the command (which may hold spaces): state is
		// field 3, utime and stime fields 14 and 15.
		f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
		for _, s := range f[11:13] {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				b.Fatalf("cpu time of pid %d: %v", pid, err)
			}
			total += time.Duration(n) * 10 * time.Millisecond
		}
	}
	return total
}

// BenchmarkEventDrain is the rate at which a backlog of b.N queued events
// (64 tenants on 2 process workers, SQLite) drains after a start of the
// queue: the backlog's load from the store, every event's delivery and
// its deletion.
func BenchmarkEventDrain(b *testing.B) {
	st := openTestStore(b)
	for i := range httpTenants {
		put(b, st, httpTenant(i), "echo", echoTemplate, "Ping")
	}
	pool := startBenchPool(b, st, benchProcessConfig(b)).Pool
	ctx := context.Background()
	now := time.Now()
	ev := proto.Event{Name: "Ping", Data: proto.Value(`{"who":"ops"}`)}
	for lo := 0; lo < b.N; lo += 1000 {
		var batch store.EventBatch
		for i := lo; i < min(lo+1000, b.N); i++ {
			batch.Add = append(batch.Add, store.EventRecord{Tenant: httpTenant(i), Event: ev, AcceptedAt: now, DeliverAt: now})
		}
		if _, err := st.CommitEvents(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	start := time.Now()
	eq := benchQueue(b, st, pool)
	// Delivery starts at once: what is not pending any more was delivered.
	if s := eq.Stats(); s.Pending+int(s.Delivered) != b.N {
		b.Fatalf("queue loaded %d events (%d pending, %d delivered), want %d", s.Pending+int(s.Delivered), s.Pending, s.Delivered, b.N)
	}
	waitDelivered(b, eq, uint64(b.N))
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
	b.StopTimer()
	if err := eq.Close(ctx); err != nil {
		b.Fatal(err)
	}
	if left, err := st.EventBacklog(ctx); err != nil || len(left) != 0 {
		b.Fatalf("after the drain the store holds %+v, %v", left, err)
	}
}

// BenchmarkDeliveryCPU is the CPU one event's delivery costs the master
// and the 2 worker processes (from /proc), 64 tenants each sending b.N/64
// events from a goroutine of its own: waited, one DispatchEvent in flight
// per tenant (what the durable queue does today), and nowait, the events
// sent back to back through DispatchEventNoWait and acknowledged (Ack)
// once they ran, the cost of a pipelined delivery; and window, what the
// queue's pipelined delivery does (DispatchWindow of 16 events, each
// acknowledged, none failing). Each sub-benchmark
// waits until every event ran (its answer came, or it was acknowledged).
func BenchmarkDeliveryCPU(b *testing.B) {
	st := openTestStore(b)
	for i := range httpTenants {
		put(b, st, httpTenant(i), "echo", echoTemplate, "Ping")
	}
	pp := startBenchPool(b, st, benchProcessConfig(b))
	ev := proto.Event{Name: "Ping", Data: proto.Value(`{"who":"ops"}`)}
	ctx := context.Background()
	for i := range httpTenants {
		if _, err := pp.DispatchEvent(ctx, httpTenant(i), ev); err != nil {
			b.Fatal(err)
		}
	}
	workers := workerPIDs(pp)
	unacked := func() int {
		n := 0
		for _, w := range pp.workers {
			w.mu.Lock()
			n += len(w.nowait)
			w.mu.Unlock()
		}
		return n
	}
	b.Run("window", func(b *testing.B) {
		// The durable queue's pipelined delivery: DispatchWindow of 16
		// events at a time per tenant, each acknowledged.
		const size = 16
		if _, ok := pp.Pool.For(httpTenant(0)).(windower); !ok {
			b.Fatal("the process worker does not pipeline windows")
		}
		per := (b.N + httpTenants*size - 1) / (httpTenants * size)
		c0, w0 := cpuTime(b, 0), cpuTime(b, workers...)
		evs := make([]proto.Event, size)
		for i := range evs {
			evs[i] = ev
		}
		var wg sync.WaitGroup
		for g := range httpTenants {
			wg.Go(func() {
				id := httpTenant(g)
				for range per {
					for i, err := range pp.Pool.DispatchWindow(ctx, id, evs) {
						if err != nil {
							b.Errorf("event %d of a window: %v", i, err)
							return
						}
					}
				}
			})
		}
		wg.Wait()
		n := float64(per * httpTenants * size)
		b.ReportMetric(float64((cpuTime(b, 0)-c0).Microseconds())/n, "master-cpu-us/ev")
		b.ReportMetric(float64((cpuTime(b, workers...)-w0).Microseconds())/n, "worker-cpu-us/ev")
	})
	for _, nowait := range []bool{false, true} {
		name := "waited"
		if nowait {
			name = "nowait"
		}
		b.Run(name, func(b *testing.B) {
			per := (b.N + httpTenants - 1) / httpTenants
			c0, w0 := cpuTime(b, 0), cpuTime(b, workers...)
			var wg sync.WaitGroup
			for g := range httpTenants {
				wg.Go(func() {
					id := httpTenant(g)
					for range per {
						if !nowait {
							if _, err := pp.DispatchEvent(ctx, id, ev); err != nil {
								b.Error(err)
								return
							}
							continue
						}
						for {
							err := pp.DispatchEventNoWait(id, ev)
							if err == nil {
								break
							}
							if proto.CodeOf(err) != proto.CodeWorkerOverloaded {
								b.Error(err)
								return
							}
							time.Sleep(time.Millisecond) // the worker's queue is full
						}
					}
				})
			}
			wg.Wait()
			for unacked() > 0 {
				time.Sleep(time.Millisecond)
			}
			n := float64(per * httpTenants)
			b.ReportMetric(float64((cpuTime(b, 0)-c0).Microseconds())/n, "master-cpu-us/ev")
			b.ReportMetric(float64((cpuTime(b, workers...)-w0).Microseconds())/n, "worker-cpu-us/ev")
		})
	}
}

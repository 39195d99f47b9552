package master

import (
	"context"
	"encoding/json"
	"runtime"
	"testing"
	"time"

	lua "github.com/Shopify/go-lua"
	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/internal/wakeup"
	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/store"
	"github.com/templateworker/templateworker/worker"
)

// loopChunk is the Lua floor of the dispatch benchmarks: a 100-iteration
// numeric loop.
const loopChunk = `local s = 0 for i = 1, 100 do s = s + i end return s`

// BenchmarkRawLuaCall calls the compiled chunk directly on a bare go-lua
// State: the floor every dispatch is compared with.
func BenchmarkRawLuaCall(b *testing.B) {
	l := lua.NewState()
	if err := lua.LoadString(l, loopChunk); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		l.PushValue(-1)
		l.Call(0, 1)
		l.Pop(1)
	}
}

// benchStore serves one template to every tenant and keeps no KV.
type benchStore struct{ code string }

func (s benchStore) Templates(ctx context.Context, id proto.Id) ([]proto.Template, error) {
	return []proto.Template{{Name: "loop", Code: s.code, Events: []string{"Ping"}}}, nil
}
func (s benchStore) TenantsWithEvent(ctx context.Context, event string) ([]proto.Id, error) {
	return nil, nil
}
func (s benchStore) KvGet(ctx context.Context, id proto.Id, key string) (json.RawMessage, bool, error) {
	return nil, false, nil
}
func (s benchStore) KvSet(ctx context.Context, id proto.Id, key string, v json.RawMessage) error {
	return nil
}
func (s benchStore) KvDelete(ctx context.Context, id proto.Id, key string) error { return nil }
func (s benchStore) KvFind(ctx context.Context, id proto.Id, prefix string) ([]proto.KVItem, error) {
	return nil, nil
}

// BenchmarkDispatchThread dispatches the same chunk as a template through
// a thread-topology Pool: routing, queueing, the VM cache, limits and the
// JSON result included.
func BenchmarkDispatchThread(b *testing.B) {
	pool, err := newThreadPool(2, worker.Options{Store: benchStore{code: loopChunk}, Logger: zerolog.Nop(), NoStartup: true})
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Kill(context.Background())
	ctx := context.Background()
	id := proto.GuildID(1234567890123456789)
	ev := proto.Event{Name: "Ping", Data: proto.Value(`{}`)}
	if _, err := pool.DispatchEvent(ctx, id, ev); err != nil {
		b.Fatal(err)
	}
	b.Run("sequential", func(b *testing.B) {
		b.ReportAllocs()
		self := wakeup.Start(0)
		for i := 0; i < b.N; i++ {
			if _, err := pool.DispatchEvent(ctx, id, ev); err != nil {
				b.Fatal(err)
			}
		}
		reportWakeups(b, self, nil, false)
	})
	b.Run("parallel64", func(b *testing.B) {
		b.ReportAllocs()
		callers := setCallers(b, dispatchCallers)
		ids := []proto.Id{proto.GuildID(1 << 22), proto.GuildID(2 << 22)} // one per worker
		b.RunParallel(func(pb *testing.PB) {
			n := 0
			for pb.Next() {
				n++
				// Not b.Fatal: it must not be called from a RunParallel goroutine.
				if _, err := pool.DispatchEvent(ctx, ids[n%2], ev); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(callers), "callers")
	})
}

// BenchmarkDispatchThreadUnlocked was BenchmarkDispatchThread/sequential
// with worker goroutines not locked to their OS threads. No worker
// goroutine is locked any more, so it runs the same path; it stays for the
// report's row that showed the lock's share of the figure.
func BenchmarkDispatchThreadUnlocked(b *testing.B) {
	pool, err := newThreadPool(2, worker.Options{Store: benchStore{code: loopChunk}, Logger: zerolog.Nop(), NoStartup: true})
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Kill(context.Background())
	ctx := context.Background()
	ev := proto.Event{Name: "Ping", Data: proto.Value(`{}`)}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := pool.DispatchEvent(ctx, benchIDs[0], ev); err != nil {
			b.Fatal(err)
		}
	}
}

// emptyChunk is the template of the transport comparisons: no Lua work.
const emptyChunk = `return nil`

// benchIDs are one tenant per worker of a 2-worker pool.
var benchIDs = []proto.Id{proto.GuildID(1 << 22), proto.GuildID(2 << 22)}

// dispatchCallers is the number of concurrent callers of the parallel
// dispatch benchmarks, whatever GOMAXPROCS is.
const dispatchCallers = 64

// setCallers makes b.RunParallel run at least n goroutines (exactly n when
// GOMAXPROCS divides n): RunParallel starts parallelism × GOMAXPROCS. It
// returns the number, for the "callers" metric (report it after the run:
// ResetTimer deletes metrics).
func setCallers(b *testing.B, n int) int {
	procs := runtime.GOMAXPROCS(0)
	p := (n + procs - 1) / procs
	b.SetParallelism(p)
	return p * procs
}

// benchDispatch measures DispatchEvent on pool: one caller, then
// dispatchCallers concurrent callers spread over both workers. The
// sequential run also reports the wake-ups one call costs: of this process
// (wakeups/op) and of the worker processes workers (worker-wakeups/op).
func benchDispatch(b *testing.B, pool WorkerLike, workers ...int) {
	ctx := context.Background()
	ev := proto.Event{Name: "Ping", Data: proto.Value(`{}`)}
	for _, id := range benchIDs {
		if _, err := pool.DispatchEvent(ctx, id, ev); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("sequential", func(b *testing.B) {
		b.ReportAllocs()
		self, others := wakeup.Start(0), wakeup.Start(workers...)
		for b.Loop() {
			if _, err := pool.DispatchEvent(ctx, benchIDs[0], ev); err != nil {
				b.Fatal(err)
			}
		}
		reportWakeups(b, self, others, len(workers) > 0)
	})
	b.Run("parallel64", func(b *testing.B) {
		b.ReportAllocs()
		callers := setCallers(b, dispatchCallers)
		b.RunParallel(func(pb *testing.PB) {
			n := 0
			for pb.Next() {
				n++
				if _, err := pool.DispatchEvent(ctx, benchIDs[n%2], ev); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(callers), "callers")
	})
}

// reportWakeups reports the wake-ups and the CPU time (µs) per operation
// of this process and, with others, of the processes on the other side.
func reportWakeups(b *testing.B, self, others *wakeup.Meter, withOthers bool) {
	if us, err := self.CPUPerOp(b.N); err == nil {
		b.ReportMetric(us, "cpu-us/op")
	}
	if withOthers {
		if us, err := others.CPUPerOp(b.N); err == nil {
			b.ReportMetric(us, "worker-cpu-us/op")
		}
	}
	n, err := self.PerOp(b.N)
	if err != nil {
		b.Logf("wake-ups not counted: %v", err)
		return
	}
	b.ReportMetric(n, "wakeups/op")
	if !withOthers {
		return
	}
	if n, err = others.PerOp(b.N); err != nil {
		b.Logf("worker wake-ups not counted: %v", err)
		return
	}
	b.ReportMetric(n, "worker-wakeups/op")
}

// workerPIDs returns the pids of pp's worker processes.
func workerPIDs(pp *processPool) []int {
	var pids []int
	for _, w := range pp.workers {
		pids = append(pids, w.Status().PID)
	}
	return pids
}

// BenchmarkDispatchThreadEmpty is BenchmarkDispatchThread with a template
// that does nothing: the thread topology's own cost.
func BenchmarkDispatchThreadEmpty(b *testing.B) {
	pool, err := newThreadPool(2, worker.Options{Store: benchStore{code: emptyChunk}, Logger: zerolog.Nop(), NoStartup: true})
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Kill(context.Background())
	benchDispatch(b, pool)
}

// benchProcessPool starts a 2-worker process pool serving code as the
// template "loop" (event Ping) of the bench tenants, and waits until it is
// ready.
func benchProcessPool(b *testing.B, code string, cfg ProcessConfig) *processPool {
	st := openTestStore(b)
	for _, id := range benchIDs {
		put(b, st, id, "loop", code, "Ping")
	}
	return startBenchPool(b, st, cfg)
}

// benchProcessConfig is the process topology of the benchmarks: default
// limits, warnings only.
func benchProcessConfig(b *testing.B) ProcessConfig {
	return ProcessConfig{
		Exe: workerBinary(b), MinUptime: time.Second, Backoff: 50 * time.Millisecond, BackoffMax: time.Second,
		MaxFailures: 10, ReadyTimeout: 30 * time.Second, DispatchTimeout: 10 * time.Second,
		QueueSize: 10000, HeartbeatInterval: time.Second, MaxFrame: 4 << 20,
		Args: []string{"--log-level", "warn"},
	}
}

// startBenchPool starts a 2-worker process pool over st and waits until
// both workers are ready; it is killed when b ends.
func startBenchPool(b *testing.B, st store.Store, cfg ProcessConfig) *processPool {
	b.Helper()
	return startTestProcessPool(b, 2, st, cfg)
}

// BenchmarkDispatchProcess dispatches the loop chunk as a template through
// a real process pool of 2 workers: Mesophyll, the worker process and the
// JSON both ways included.
func BenchmarkDispatchProcess(b *testing.B) {
	pp := benchProcessPool(b, loopChunk, benchProcessConfig(b))
	benchDispatch(b, pp.Pool, workerPIDs(pp)...)
}

// BenchmarkDispatchProcessEmpty is BenchmarkDispatchProcess with a
// template that does nothing: the transport's cost, compared with
// BenchmarkWSEcho and BenchmarkChanRoundTrip.
func BenchmarkDispatchProcessEmpty(b *testing.B) {
	pp := benchProcessPool(b, emptyChunk, benchProcessConfig(b))
	benchDispatch(b, pp.Pool, workerPIDs(pp)...)
}

// BenchmarkChanRoundTrip is the thread topology's transport floor: a
// request carrying its own reply channel, served by another goroutine.
func BenchmarkChanRoundTrip(b *testing.B) { benchChanRoundTrip(b, false) }

// BenchmarkChanRoundTripLocked is BenchmarkChanRoundTrip with the serving
// goroutine locked to its OS thread, as the thread topology's contract
// locks each worker: the floor that contract sets, with no Lua at all.
func BenchmarkChanRoundTripLocked(b *testing.B) { benchChanRoundTrip(b, true) }

func benchChanRoundTrip(b *testing.B, lock bool) {
	type request struct {
		n     int
		reply chan int
	}
	queue := make(chan request, 64)
	defer close(queue)
	go func() {
		if lock {
			runtime.LockOSThread()
		}
		for r := range queue {
			r.reply <- r.n + 1
		}
	}()
	b.ReportAllocs()
	self := wakeup.Start(0)
	for i := 0; b.Loop(); i++ {
		r := request{n: i, reply: make(chan int, 1)}
		queue <- r
		if <-r.reply != i+1 {
			b.Fatal("wrong reply")
		}
	}
	reportWakeups(b, self, nil, false)
}
func (s benchStore) ScheduleEvent(ctx context.Context, id proto.Id, at time.Time, ev proto.Event) (string, error) {
	return "", errNoQueue
}
func (s benchStore) CancelEvent(ctx context.Context, id proto.Id, eventID string) (bool, error) {
	return false, nil
}
func (s benchStore) ScheduledEvents(ctx context.Context, id proto.Id) ([]proto.ScheduledEvent, error) {
	return nil, nil
}

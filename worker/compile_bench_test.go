package worker

import (
	"context"
	"runtime"
	"runtime/metrics"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
)

// hugeChunk is issue 14's parse attack: a 15.6 MB chunk of table stores.
const hugeChunk = `return load(("a.b.c.d.e=1 "):rep(1.3e6))`

// BenchmarkCompileDeadlineOvershoot measures how long after its deadline a
// call that is compiling a huge chunk ends (worst-us: the worst of the
// b.N runs, mean-us the mean), and the largest HeapInuse growth seen after a
// call (heap-inuse-MiB).
func BenchmarkCompileDeadlineOvershoot(b *testing.B) {
	benchmarkCompileOvershoot(b, hugeChunk, func(l *Limits) { l.MaxInstructions = 0; l.Timeout = 100 * time.Millisecond }, proto.CodeTimeout)
}

// BenchmarkLoopDeadlineOvershoot is the baseline: the same for a Lua loop,
// stopped by the count hook.
func BenchmarkLoopDeadlineOvershoot(b *testing.B) {
	benchmarkCompileOvershoot(b, `local s = ("a.b.c.d.e=1 "):rep(1.3e6) while true do end`, func(l *Limits) { l.MaxInstructions = 0; l.Timeout = 100 * time.Millisecond }, proto.CodeTimeout)
}

// BenchmarkCompileMemoryLimit runs the attack with the default limits but
// no instruction budget or deadline, so the memory limit ends it; it reports
// the call's time (mean-us, worst-us) and the peak growth of the Go heap's live objects (sampled every
// millisecond, garbage included) over the run.
func BenchmarkCompileMemoryLimit(b *testing.B) {
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	runtime.GC()
	base := heapObjects()
	go func() {
		defer close(done)
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if v := heapObjects(); v > peak.Load() {
					peak.Store(v)
				}
			}
		}
	}()
	benchmarkCompileOvershoot(b, hugeChunk, func(l *Limits) { l.MaxInstructions = 0 }, proto.CodeMemoryLimit)
	close(stop)
	<-done
	b.ReportMetric(float64(peak.Load()-min(peak.Load(), base))/(1<<20), "peak-heap-growth-MiB")
}

func heapObjects() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func benchmarkCompileOvershoot(b *testing.B, code string, set func(*Limits), want string) {
	lim := DefaultLimits
	lim.Timeout = 0
	set(&lim)
	m := NewManager(0, 1, newMemStore(), lim, zerolog.Nop())
	var worst, total time.Duration
	var peak uint64
	runtime.GC()
	base := liveHeap()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		_, err := m.RunScript(context.Background(), proto.GuildID(uint64(i+1)<<22), "hostile", code, ev("x", ""))
		d := time.Since(start) - lim.Timeout // the overshoot; with no deadline, the call's time
		if proto.CodeOf(err) != want {
			b.Fatalf("got %v; want %s", err, want)
		}
		total += d
		worst = max(worst, d)
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		peak = max(peak, ms.HeapInuse)
	}
	b.ReportMetric(float64(worst.Microseconds()), "worst-us")
	b.ReportMetric(float64(total.Microseconds())/float64(b.N), "mean-us")
	b.ReportMetric(float64(peak-min(peak, base))/(1<<20), "heap-inuse-MiB")
}

package lua

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

// waitFor calls cond after a garbage collection until it holds or the
// generous deadline passes (a failure bound, not a timing assumption).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached", what)
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
}

const abandoned = 100000

// TestAbandonedCoroutinesAreReclaimed leaves 100,000 coroutines suspended
// (each resumed once) and checks that their goroutines end and the heap
// returns to its baseline.
func TestAbandonedCoroutinesAreReclaimed(t *testing.T) {
	for _, tc := range []struct{ name, body string }{
		// Nothing refers to the coroutine: its handle's finalizer (or a
		// sweep) ends it.
		{"plain", `local co = coroutine.create(function() coroutine.yield() end)`},
		// The coroutine's own stack refers to its handle, so the parked
		// goroutine keeps the handle alive: only sweeps end it.
		{"self-referencing", `local co; co = coroutine.create(function() local me = co; coroutine.yield() end)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := NewState()
			OpenLibraries(l)
			maxLive := 0
			l.Register("observe", func(l *State) int {
				maxLive = max(maxLive, LiveCoroutines(l))
				return 0
			})
			runtime.GC()
			baseG, baseHeap := runtime.NumGoroutine(), heapObjects()
			script := fmt.Sprintf(`for i = 1, %d do %s; coroutine.resume(co); if i %% 100 == 0 then observe() end end`, abandoned, tc.body)
			start := time.Now()
			if err := DoString(l, script); err != nil {
				t.Fatal(err)
			}
			elapsed := time.Since(start)
			afterRun := LiveCoroutines(l)
			runtime.GC()
			heapAfterRun := heapObjects()
			if tc.name == "self-referencing" {
				// Sweeps bound the garbage goroutines during the run; the
				// rest is ended by the next sweep or when the state is closed.
				if maxLive > 2*minSweep+100 {
					t.Errorf("up to %d live coroutines during the run; want sweeps to bound them", maxLive)
				}
				CloseCoroutines(l)
			}
			waitFor(t, "goroutines back to baseline", func() bool { return runtime.NumGoroutine() <= baseG+2 })
			waitFor(t, "heap back to baseline", func() bool { return heapObjects() <= baseHeap+4<<20 })
			t.Logf("%d coroutines in %v (%.1f µs each); at most %d live during the run, %d after it (heap +%.1f MiB); "+
				"goroutines %d → %d, heap %.1f MiB → %.1f MiB after reclaiming",
				abandoned, elapsed.Round(time.Millisecond), float64(elapsed.Microseconds())/abandoned, maxLive, afterRun,
				float64(int64(heapAfterRun)-int64(baseHeap))/(1<<20),
				baseG, runtime.NumGoroutine(), float64(baseHeap)/(1<<20), float64(heapObjects())/(1<<20))
			// The last handle may stay in a stale slot of the main stack.
			if n := LiveCoroutines(l); n > 1 {
				t.Errorf("%d coroutines still registered", n)
			}
			runtime.KeepAlive(l)
		})
	}
}

func TestCloseCoroutinesEndsSuspendedOnes(t *testing.T) {
	l := NewState()
	OpenLibraries(l)
	runtime.GC()
	baseG := runtime.NumGoroutine()
	mustRun(t, l, `
		keep = {}
		for i = 1, 50 do
			local co = coroutine.wrap(function() while true do coroutine.yield() end end)
			co()
			keep[i] = co
		end`)
	if n := LiveCoroutines(l); n != 50 {
		t.Fatalf("%d live coroutines; want 50", n)
	}
	CloseCoroutines(l)
	// (No garbage collection here: it would end them by itself.)
	deadline := time.Now().Add(2 * time.Minute)
	for runtime.NumGoroutine() > baseG {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines after CloseCoroutines; baseline %d", runtime.NumGoroutine(), baseG)
		}
		time.Sleep(time.Millisecond)
	}
	err := DoString(l, `keep[1]()`)
	if err == nil {
		t.Fatal("resuming an ended coroutine succeeded")
	}
	mustRun(t, l, `
		local ok, e = coroutine.resume(coroutine.create(function() end))
		assert(not ok and e == "cannot resume dead coroutine")`)
}

// BenchmarkCoroutineResumeYield measures one resume/yield round trip.
func BenchmarkCoroutineResumeYield(b *testing.B) {
	l := NewState()
	OpenLibraries(l)
	if err := DoString(l, `co = coroutine.wrap(function() while true do coroutine.yield(1) end end)
		function bench(n) for i = 1, n do co() end end`); err != nil {
		b.Fatal(err)
	}
	l.Global("bench")
	b.ResetTimer()
	l.PushInteger(b.N)
	l.Call(1, 0)
	b.StopTimer()
	CloseCoroutines(l)
}

// BenchmarkCoroutineCreateResume measures creating a coroutine and running
// it to completion (one goroutine started and ended).
func BenchmarkCoroutineCreateResume(b *testing.B) {
	l := NewState()
	OpenLibraries(l)
	if err := DoString(l, `function bench(n) local f = function() end
		for i = 1, n do coroutine.resume(coroutine.create(f)) end end`); err != nil {
		b.Fatal(err)
	}
	l.Global("bench")
	b.ResetTimer()
	l.PushInteger(b.N)
	l.Call(1, 0)
}

package lua

import (
	"runtime"
	"runtime/metrics"
	"testing"
)

func liveBytes() (heap, stacks uint64) {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/stacks:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64(), s[1].Value.Uint64()
}

// TestSuspendedCoroutineCostIsCounted checks that ReachableBytes counts a
// suspended coroutine at least at what it really costs (heap and
// goroutine stack), and not at more than twice that.
func TestSuspendedCoroutineCostIsCounted(t *testing.T) {
	for _, tc := range []struct{ name, body string }{
		{"shallow", `local function f(a) local t = {a} coroutine.yield(t) end`},
		{"50 nested pcalls", `local function f(a, d) d = d or 0 if d < 50 then return pcall(f, a, d + 1) end coroutine.yield(a) end`},
	} {
		t.Run(tc.name, func(t *testing.T) { suspendedCost(t, tc.body) })
	}
}

func suspendedCost(t *testing.T, body string) {
	const n = 2000
	l := NewState()
	OpenLibraries(l)
	defer CloseCoroutines(l)
	runtime.GC()
	h0, s0 := liveBytes()
	r0 := ReachableBytes(l)
	mustRun(t, l, `keep = {} `+body+`
		for i = 1, 2000 do local co = coroutine.create(f) coroutine.resume(co, i) keep[i] = co end`)
	runtime.GC()
	h1, s1 := liveBytes()
	r1 := ReachableBytes(l)
	real := float64(h1+s1-h0-s0) / n
	est := float64(r1-r0) / n
	t.Logf("per suspended coroutine: real %.0f bytes (heap %.0f, goroutine stack %.0f), estimated %.0f",
		real, float64(h1-h0)/n, float64(s1-s0)/n, est)
	if est < real*0.9 || est > 2.5*real {
		t.Errorf("estimate %.0f bytes for a real cost of %.0f", est, real)
	}
}

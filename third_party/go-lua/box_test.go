package lua

import (
	"math"
	"testing"
)

// TestBox: box keeps every value (negative zero, NaN, infinities,
// fractions, both ends of the cache and past them) and boxes the cached
// integers without allocating.
func TestBox(t *testing.T) {
	for _, f := range []float64{0, math.Copysign(0, -1), 1, -1, 0.5, boxMin, boxMax, boxMin - 1, boxMax + 1, 1e300,
		math.Inf(1), math.Inf(-1), math.NaN(), 4096.25, -1023.5} {
		v, ok := box(f).(float64)
		switch {
		case !ok:
			t.Fatalf("box(%v) is not a float64", f)
		case math.IsNaN(f) != math.IsNaN(v), !math.IsNaN(f) && v != f, math.Signbit(f) != math.Signbit(v):
			t.Fatalf("box(%v) = %v", f, v)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = box(100); _ = box(boxMin); _ = box(boxMax) }); n != 0 {
		t.Fatalf("boxing cached integers allocated %v times", n)
	}
}

// TestNumericLoopDoesNotAllocate: a numeric for loop summing small integers
// boxes none of them (it allocated three times per iteration before).
func TestNumericLoopDoesNotAllocate(t *testing.T) {
	l := NewState()
	OpenLibraries(l)
	if err := LoadString(l, "local s = 0 for i = 1, 100 do s = s + i end return s"); err != nil {
		t.Fatal(err)
	}
	l.SetGlobal("chunk")
	run := func() {
		l.Global("chunk")
		l.Call(0, 1)
		if n, _ := l.ToNumber(-1); n != 5050 {
			t.Fatalf("sum = %v", n)
		}
		l.Pop(1)
	}
	run()
	if n := testing.AllocsPerRun(100, run); n > 5 {
		t.Fatalf("a 100-iteration loop allocated %v times, want at most 5 (the call itself)", n)
	}
	// Past the cache, results stay right.
	if err := DoString(l, "local s = 0 for i = 1, 3 do s = s + 20000.5 * i end assert(s == 120003) local z = -(0 * 1) assert(1/z < 0) assert(tostring(1 - 1) == '0')"); err != nil {
		t.Fatal(err)
	}
}

package lua

import (
	"fmt"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The limits of the bomb tests: 64 MiB and 16 MiB, a quarter of that
// under the race detector.
var (
	testMaxMemory int64 = 64 << 20
	testMaxString       = 16 << 20
)

func init() {
	if raceEnabled {
		testMaxMemory, testMaxString = testMaxMemory/4, testMaxString/4
	}
}

// heapSampler records the peak of the Go heap's live objects while a bomb
// runs, sampling every millisecond.
type heapSampler struct {
	base uint64
	peak atomic.Uint64
	stop chan struct{}
	wg   sync.WaitGroup
}

func heapObjects() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func startHeapSampler() *heapSampler {
	runtime.GC()
	h := &heapSampler{base: heapObjects(), stop: make(chan struct{})}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-h.stop:
				return
			case <-t.C:
				if v := heapObjects(); v > h.peak.Load() {
					h.peak.Store(v)
				}
			}
		}
	}()
	return h
}

// finish stops sampling and returns the peak growth over the baseline.
func (h *heapSampler) finish() uint64 {
	h.stop <- struct{}{}
	h.wg.Wait()
	if v := heapObjects(); v > h.peak.Load() {
		h.peak.Store(v)
	}
	if p := h.peak.Load(); p > h.base {
		return p - h.base
	}
	return 0
}

type limitEvent struct {
	kind  string
	limit int64
}

// limitedState returns a State with the libraries open, the given limits
// and OnLimit recording into the returned slice.
func limitedState(lim Limits) (*State, *[]limitEvent) {
	l := NewState()
	OpenLibraries(l)
	events := &[]limitEvent{}
	lim.OnLimit = func(_ *State, kind string, limit int64) {
		*events = append(*events, limitEvent{kind, limit})
	}
	SetLimits(l, lim)
	return l, events
}

func bombLimits() Limits {
	return Limits{MaxMemory: testMaxMemory, MaxStringLength: testMaxString, MaxCallDepth: 200}
}

// runBomb runs script on a fresh limited State, expecting an error that
// contains want and an OnLimit event of kind; it checks the peak heap
// growth stayed under maxGrowth and returns it.
func runBomb(t *testing.T, lim Limits, script, want, kind string, maxGrowth uint64, setup func(*State)) uint64 {
	t.Helper()
	l, events := limitedState(lim)
	if setup != nil {
		setup(l)
	}
	h := startHeapSampler()
	err := DoString(l, script)
	growth := h.finish()
	if err == nil {
		t.Fatalf("script ran to completion; want error containing %q", want)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error = %q; want it to contain %q", err, want)
	}
	if len(*events) == 0 || (*events)[0].kind != kind {
		t.Fatalf("OnLimit events = %v; want first of kind %q", *events, kind)
	}
	t.Logf("error %q; peak heap growth %.1f MiB (MaxMemory %d MiB, MaxStringLength %d MiB)",
		err, float64(growth)/(1<<20), lim.MaxMemory>>20, lim.MaxStringLength>>20)
	if growth > maxGrowth {
		t.Errorf("peak heap growth %d bytes; want at most %d", growth, maxGrowth)
	}
	runtime.KeepAlive(l)
	return growth
}

func TestStringDoublingBombStopsAtStringLimit(t *testing.T) {
	runBomb(t, bombLimits(), `local s = "x" for i = 1, 40 do s = s .. s end`,
		fmt.Sprintf("string length exceeds limit (%d bytes)", testMaxString), "string", 3*uint64(testMaxMemory), nil)
}

func TestStringDoublingBombStopsAtMemoryLimit(t *testing.T) {
	lim := bombLimits()
	lim.MaxStringLength = 0
	runBomb(t, lim, `local t = {} local s = "x" for i = 1, 40 do s = s .. s t[i] = s end`,
		fmt.Sprintf("not enough memory (limit %d bytes)", testMaxMemory), "memory", 3*uint64(testMaxMemory), nil)
}

func TestTableBombsStopAtMemoryLimit(t *testing.T) {
	memErr := fmt.Sprintf("not enough memory (limit %d bytes)", testMaxMemory)
	for _, c := range []struct{ name, script string }{
		{"array", `local t = {} for i = 1, 1e9 do t[i] = i end`},
		{"nested tables", `local t = {} while true do t[#t+1] = {} end`},
		{"string keys", `local t = {} for i = 1, 1e9 do t[tostring(i)] = true end`},
		{"float keys", `local t = {} for i = 1, 1e9 do t[i + 0.5] = i end`},
		{"closures", `local t = {} for i = 1, 1e9 do t[i] = function() return i end end`},
		{"table.insert", `local t = {} for i = 1, 1e9 do table.insert(t, "value") end`},
		{"constructor", `local t = {} for i = 1, 1e9 do t[i] = {i, i, i, i, i, i, i, i} end`},
	} {
		t.Run(c.name, func(t *testing.T) {
			runBomb(t, bombLimits(), c.script, memErr, "memory", 3*uint64(testMaxMemory), nil)
		})
	}
}

func TestStringLibraryBombs(t *testing.T) {
	strErr := fmt.Sprintf("string length exceeds limit (%d bytes)", testMaxString)
	memErr := fmt.Sprintf("not enough memory (limit %d bytes)", testMaxMemory)
	for _, c := range []struct{ name, script, want, kind string }{
		{"rep overflow", `local s = string.rep("xx", 2^62)`, "resulting string too large", ""},
		{"rep limit", `local s = string.rep("ab", 9 * 1024 * 1024)`, strErr, "string"},
		{"rep memory", `local t = {} for i = 1, 1e6 do t[i] = string.rep("x", 2 * 1024 * 1024) end`, memErr, "memory"},
		{"format", `local s = string.rep("x", 1e6) s = string.format(string.rep("%s", 100), table.unpack((function() local a = {} for i = 1, 100 do a[i] = s end return a end)()))`, strErr, "string"},
		{"table.concat", `local s, t = string.rep("x", 1e6), {} for i = 1, 1e4 do t[i] = s end local r = table.concat(t)`, strErr, "string"},
		{"substrings keep no hidden memory", `local t = {} for i = 1, 1e9 do t[i] = (string.rep("x", 200) .. i):sub(1, 2) end`, memErr, "memory"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.kind == "" {
				l, _ := limitedState(bombLimits())
				if err := DoString(l, c.script); err == nil || !strings.Contains(err.Error(), c.want) {
					t.Fatalf("error = %v; want %q", err, c.want)
				}
				return
			}
			runBomb(t, bombLimits(), c.script, c.want, c.kind, 3*uint64(testMaxMemory), nil)
		})
	}
}

// hostRep is how a host Go function accounts for a big string it builds.
func hostRep(l *State) int {
	s, n := CheckString(l, 1), CheckInteger(l, 2)
	ArgumentCheck(l, n >= 0, 2, "negative count")
	CheckStringLength(l, len(s)*n)
	AddAllocated(l, int64(len(s)*n))
	l.PushString(strings.Repeat(s, n))
	return 1
}

func TestHostAddAllocatedBomb(t *testing.T) {
	runBomb(t, bombLimits(), `local t = {} for i = 1, 1e6 do t[i] = hostrep("y", 4 * 1024 * 1024) end`,
		fmt.Sprintf("not enough memory (limit %d bytes)", testMaxMemory), "memory", 3*uint64(testMaxMemory),
		func(l *State) { l.Register("hostrep", hostRep) })
}

func TestGarbageIsNoFalsePositive(t *testing.T) {
	l, events := limitedState(bombLimits())
	// 600 MiB of short-lived strings, tables and closures, far beyond MaxMemory.
	err := DoString(l, `
		local keep = string.rep("k", 1024 * 1024)
		local shared = {}
		for i = 1, 1000 do shared[i] = keep end -- one string, many references
		for i = 1, 600 do
			local s = string.rep("g", 1024 * 1024 - 8) .. i
			local t = {}
			for j = 1, 100 do t[j] = {j} t[-j] = function() return j end end
		end`)
	if err != nil {
		t.Fatalf("DoString: %v (events %v)", err, *events)
	}
	if live := ReachableBytes(l); live > testMaxMemory/4 {
		t.Errorf("ReachableBytes = %d after the loop; want well under the limit", live)
	}
}

func TestCallDepthLimit(t *testing.T) {
	want := "stack overflow (call depth limit 200)"
	for _, c := range []struct{ name, script string }{
		{"lua recursion", `local function f(n) return f(n+1)+1 end f(1)`},
		{"go recursion", `local function f(n) return select(2, pcall(f, n+1)) end error(f(1))`},
		{"pcall nesting", `local function f() local ok, e = pcall(f) error(e, 0) end f()`},
	} {
		t.Run(c.name, func(t *testing.T) {
			l, events := limitedState(Limits{MaxCallDepth: 200})
			err := DoString(l, c.script)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("error = %v; want %q", err, want)
			}
			if len(*events) == 0 || (*events)[0] != (limitEvent{"stack", 200}) {
				t.Fatalf("OnLimit events = %v", *events)
			}
			// The State stays usable and the limit still applies.
			if err := DoString(l, `local function g(n) if n == 0 then return 0 end return g(n-1)+1 end assert(g(150) == 150)`); err != nil {
				t.Fatalf("after the error: %v", err)
			}
			if err := DoString(l, c.script); err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("second run error = %v; want %q", err, want)
			}
		})
	}
}

func TestCallDepthThroughMetamethods(t *testing.T) {
	for _, c := range []struct{ name, script string }{
		{"__index", `local t = setmetatable({}, {}) getmetatable(t).__index = function(t, k) return t[k+1] end return t[1]`},
		{"__add", `local mt = {} mt.__add = function(a, b) return setmetatable({}, mt) + 1 end return setmetatable({}, mt) + 1`},
		{"__concat", `local mt = {} mt.__concat = function(a, b) return setmetatable({}, mt) .. "x" end return setmetatable({}, mt) .. "x"`},
	} {
		for _, depth := range []int{100, 1000} {
			t.Run(fmt.Sprintf("%s/%d", c.name, depth), func(t *testing.T) {
				l, events := limitedState(Limits{MaxCallDepth: depth})
				err := DoString(l, c.script)
				if err == nil || !strings.Contains(err.Error(), "stack overflow") {
					t.Fatalf("error = %v; want a stack overflow", err)
				}
				if len(*events) == 0 || (*events)[0].kind != "stack" {
					t.Fatalf("OnLimit events = %v", *events)
				}
				if depth == 100 && !strings.Contains(err.Error(), "call depth limit 100") {
					t.Errorf("error = %v; want the call depth limit", err)
				}
			})
		}
	}
}

func TestCallDepthErrorHandlerRuns(t *testing.T) {
	l, _ := limitedState(Limits{MaxCallDepth: 50})
	l.Global("debug")
	l.Field(-1, "traceback")
	l.Remove(-2)
	if err := LoadString(l, `local function f(n) return f(n+1)+1 end f(1)`); err != nil {
		t.Fatal(err)
	}
	err := l.ProtectedCall(0, 0, 1)
	if err == nil {
		t.Fatal("no error")
	}
	msg, _ := l.ToString(-1)
	if !strings.Contains(msg, "call depth limit 50") || !strings.Contains(msg, "stack traceback") {
		t.Fatalf("message = %q; want the depth error with a traceback", msg)
	}
}

func TestTailCallsDoNotCountAsDepth(t *testing.T) {
	l, _ := limitedState(Limits{MaxCallDepth: 20})
	if err := DoString(l, `local function f(n) if n == 0 then return "done" end return f(n-1) end assert(f(10000) == "done")`); err != nil {
		t.Fatal(err)
	}
}

func TestReachableBytes(t *testing.T) {
	l, _ := limitedState(Limits{})
	base := ReachableBytes(l)
	if base <= 0 {
		t.Fatalf("ReachableBytes = %d", base)
	}
	step := func(script string) int64 {
		t.Helper()
		if err := DoString(l, script); err != nil {
			t.Fatal(err)
		}
		return ReachableBytes(l)
	}
	// Cycles terminate and a 1 MiB string referenced many times counts once.
	n := step(`big = string.rep("b", 1024 * 1024) cyc = {} cyc.self = cyc cyc[1] = cyc for i = 2, 100 do cyc[i] = big end`)
	if n < base+1<<20 || n > base+1<<20+64<<10 {
		t.Errorf("with one 1 MiB string: %d bytes over a base of %d", n-base, base)
	}
	// Per-type metatables (the string metatable) are roots.
	n = step(`getmetatable("").hidden = big big = nil cyc = nil`)
	if n < base+1<<20 {
		t.Errorf("string metatable contents not counted: %d over base", n-base)
	}
	// Deleted hash entries still count: Go maps do not shrink.
	n = step(`getmetatable("").hidden = nil h = {} for i = 1, 100000 do h["k" .. i] = i end for i = 1, 100000 do h["k" .. i] = nil end`)
	if n < base+100000*hashEntryBytes {
		t.Errorf("emptied hash counted as %d bytes over base", n-base)
	}
	// Upvalues and closures.
	n2 := step(`local up = string.rep("u", 1024 * 1024) keepfn = function() return up end`)
	if n2 < n+1<<20-4096 {
		t.Errorf("upvalue string not counted: %d", n2-n)
	}
	// A deeply nested chain does not overflow the Go stack.
	step(`local t = {} chain = t for i = 1, 200000 do t.next = {} t = t.next end`)
}

func TestAllocatedAndReset(t *testing.T) {
	l, _ := limitedState(Limits{})
	ResetAllocated(l)
	if err := DoString(l, `local t = {} for i = 1, 1000 do t[i] = {} end`); err != nil {
		t.Fatal(err)
	}
	if a := Allocated(l); a < 1000*tableBytes {
		t.Errorf("Allocated = %d; want at least %d", a, 1000*tableBytes)
	}
	ResetAllocated(l)
	if a := Allocated(l); a != 0 {
		t.Errorf("Allocated after reset = %d", a)
	}
	if got := l.Limits(); got.MaxMemory != 0 || got.OnLimit == nil {
		t.Errorf("Limits() = %+v", got)
	}
}

func TestMemoryLimitOutsideProtectedCallDoesNotPanic(t *testing.T) {
	l, _ := limitedState(Limits{MaxMemory: 1 << 20})
	l.NewTable()
	for i := 1; i <= 4; i++ { // 4 MiB reachable, unprotected
		l.PushString(strings.Repeat("z", 1<<20))
		l.RawSetInt(-2, i)
	}
	l.SetGlobal("held")
	err := DoString(l, `local x = {} for i = 1, 10 do x[i] = {} end`)
	if err == nil || !strings.Contains(err.Error(), "not enough memory (limit 1048576 bytes)") {
		t.Fatalf("error = %v; want the memory error once a script allocates", err)
	}
}

func TestLimitsOffBehavesAsUpstream(t *testing.T) {
	l := NewState()
	OpenLibraries(l)
	if err := DoString(l, `local s = "x" for i = 1, 20 do s = s .. s end assert(#s == 2^20)
		assert(table.concat({1, "a", 2}, ",") == "1,a,2") assert(table.concat({}, ",") == "")
		assert(("abc"):rep(3, "-") == "abc-abc-abc") assert(string.format("%5s|%q", "a", "b") == "    a|\"b\"")
		assert(string.rep("0123456789", 10):sub(3, 5) == "234")`); err != nil {
		t.Fatal(err)
	}
}

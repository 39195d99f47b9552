package worker

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	lua "github.com/Shopify/go-lua"
	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
)

// TestCoroutinesInTemplates: ordinary coroutine code runs in a tenant VM.
func TestCoroutinesInTemplates(t *testing.T) {
	m := NewManager(0, 1, newMemStore(), hostileLimits, zerolog.Nop())
	code := `local words = {}
local gen = coroutine.wrap(function(s) for w in s:gmatch("%S+") do coroutine.yield(w) end end)
local w = gen("a bb ccc")
while w do words[#words + 1] = w:upper(); w = gen() end
local co = coroutine.create(function(a)
  local ok, b = pcall(function() return coroutine.yield(a * 2) end)
  return ok and b + 1
end)
local _, first = coroutine.resume(co, 5)
local st = coroutine.status(co)
local _, second = coroutine.resume(co, 100)
local _, main = coroutine.running()
return {words = words, first = first, second = second, st = st, dead = coroutine.status(co), main = main,
  boundary = select(2, coroutine.resume(coroutine.create(function() table.sort({2, 1}, function() coroutine.yield() end) end)))}`
	v, err := m.RunScript(context.Background(), g1, "s", code, ev("x", ""))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"boundary":"attempt to yield across a C-call boundary","dead":"dead","first":10,"main":true,"second":101,"st":"suspended","words":["A","BB","CCC"]}`
	if string(v) != want {
		t.Fatalf("got  %s\nwant %s", v, want)
	}
}

// neighbourCode is the neighbour tenant's template: it uses a coroutine
// and runs it to its end (so it leaves no goroutine behind).
const neighbourCode = `local co = coroutine.wrap(function() coroutine.yield("fine") return "done" end) local r = co() co() return r`

// coroutineHostileCases extend the hostile corpus with coroutines.
var coroutineHostileCases = []struct {
	name, code, wantCode, wantMsg string
}{
	{"coroutine that never finishes", `coroutine.resume(coroutine.create(function() while true do end end))`, proto.CodeCPULimit, "instruction limit"},
	{"resume swallows the limit", `while true do local ok = coroutine.resume(coroutine.create(function() while true do end end)) end`, proto.CodeCPULimit, "instruction limit"},
	{"wrap in pcall swallows the limit", `while true do pcall(coroutine.wrap(function() while true do end end)) end`, proto.CodeCPULimit, "instruction limit"},
	{"short coroutines share the budget", `while true do coroutine.wrap(function() for i = 1, 300 do end end)() end`, proto.CodeCPULimit, "instruction limit"},
	{"yield ping-pong forever", `local co = coroutine.wrap(function() while true do coroutine.yield() end end) while true do co() end`, proto.CodeCPULimit, "instruction limit"},
	{"abandoned coroutine bomb", `while true do local co = coroutine.create(function() coroutine.yield() end) coroutine.resume(co) end`, proto.CodeCPULimit, "instruction limit"},
	{"kept coroutine bomb", `local t = {} while true do local co = coroutine.create(function() coroutine.yield() end) coroutine.resume(co) t[#t + 1] = co end`, proto.CodeMemoryLimit, "8388608 bytes"},
	{"kept coroutine bomb in a coroutine", `coroutine.wrap(function() local t = {} while true do local co = coroutine.wrap(function() coroutine.yield() end) co() t[#t + 1] = co end end)()`, proto.CodeMemoryLimit, "8388608 bytes"},
	{"memory bomb inside a coroutine", `coroutine.resume(coroutine.create(function() local t = {} while true do t[#t + 1] = {1, 2, 3} end end))`, proto.CodeMemoryLimit, "8388608 bytes"},
	{"nested resumes", `local function f() coroutine.wrap(f)() end f()`, proto.CodeStackOverflow, "200"},
	{"nested resumes in pcall", `local function f() coroutine.resume(coroutine.create(f)) end while true do pcall(f) end`, proto.CodeStackOverflow, "200"},
	{"deep recursion in a coroutine", `local function r() return 1 + r() end coroutine.resume(coroutine.create(r))`, proto.CodeStackOverflow, "200"},
	{"recursion split across coroutines", `local function r(n) if n % 50 == 0 then return coroutine.wrap(r)(n + 1) end return 1 + r(n + 1) end r(1)`, proto.CodeStackOverflow, ""},
	{"yield in __index forever", `local t = setmetatable({}, {__index = function() while true do coroutine.yield() end end}) local co = coroutine.wrap(function() return t.x end) while true do co() end`, proto.CodeCPULimit, "instruction limit"},
	{"yield in __tostring", `local o = setmetatable({}, {__tostring = function() coroutine.yield() end}) return coroutine.wrap(function() return tostring(o) end)()`, proto.CodeScriptError, "attempt to yield across a C-call boundary"},
	{"yield in a sort comparator", `return coroutine.wrap(function() table.sort({3, 2, 1}, function(a, b) coroutine.yield() return a < b end) end)()`, proto.CodeScriptError, "attempt to yield across a C-call boundary"},
	{"yield in a gsub replacement", `return coroutine.wrap(function() return (string.gsub("abc", "%w", function(c) coroutine.yield() end)) end)()`, proto.CodeScriptError, "attempt to yield across a C-call boundary"},
	{"yield outside a coroutine", `coroutine.yield(1)`, proto.CodeScriptError, "attempt to yield from outside a coroutine"},
	{"endless loop in __tostring of an error object", `coroutine.wrap(function() print(setmetatable({}, {__tostring = function() while true do end end})) end)()`, proto.CodeCPULimit, "instruction limit"},
	{"error object whose __tostring errors", `coroutine.wrap(function() error(setmetatable({}, {__tostring = function() error("again") end})) end)()`, proto.CodeScriptError, ""},
	{"error object whose __tostring errors, resumed", `local ok, e = coroutine.resume(coroutine.create(function() error(setmetatable({}, {__tostring = function() error("again") end})) end)) error(e)`, proto.CodeScriptError, ""},
	{"error object whose __tostring yields", `coroutine.wrap(function() error(setmetatable({}, {__tostring = function() coroutine.yield() end})) end)()`, proto.CodeScriptError, ""},
	{"timeout inside a suspended-and-resumed coroutine", `local co = coroutine.wrap(function() coroutine.yield() while true do end end) co() co()`, proto.CodeCPULimit, "instruction limit"},
}

func TestHostileCoroutines(t *testing.T) {
	s := newMemStore()
	victim, neighbour := proto.GuildID(1<<22), proto.GuildID(2<<22)
	s.put(neighbour, "ok", neighbourCode, "Ping")
	m := NewManager(0, 1, s, hostileLimits, zerolog.Nop())
	ctx := context.Background()
	for _, c := range coroutineHostileCases {
		t.Run(c.name, func(t *testing.T) {
			baseG := runtime.NumGoroutine()
			if _, err := m.RunScript(ctx, victim, "setup", `marker = true; parked = coroutine.wrap(function() coroutine.yield() end); parked()`, ev("x", "")); err != nil {
				t.Fatal(err)
			}
			_, err := m.RunScript(ctx, victim, "hostile", c.code, ev("x", ""))
			pe := proto.AsError(err)
			if err == nil || pe.Code != c.wantCode || !strings.Contains(pe.Message, c.wantMsg) {
				t.Fatalf("got %.300v; want %s containing %q", err, c.wantCode, c.wantMsg)
			}
			if len(pe.Message) > 8<<10 {
				t.Fatalf("error message is %d bytes", len(pe.Message))
			}
			if isLimit(c.wantCode) {
				// The VM was discarded with its coroutines: no goroutine of
				// it is left (they have run their last deferred call when the
				// call returns; waiting only lets them finish exiting).
				waitGoroutines(t, baseG)
				v, err := m.RunScript(ctx, victim, "check", `return marker == nil`, ev("x", ""))
				if err != nil || string(v) != "true" {
					t.Fatalf("VM not discarded after %s: %s %v", c.wantCode, v, err)
				}
			}
			v, err := m.Dispatch(ctx, neighbour, ev("Ping", "{}"))
			if err != nil || string(v) != `{"ok":"fine"}` {
				t.Fatalf("neighbour after hostile call: %s %v", v, err)
			}
		})
	}
	m.DropAll()
}

// TestYieldInErrorHandler: a yield inside xpcall's message handler is
// refused (the handler is not yieldable in Lua 5.2), so the handler fails
// and the call ends with a coded error (before the xpcall fix, an error
// inside a message handler made go-lua recurse without end).
func TestYieldInErrorHandler(t *testing.T) {
	m := NewManager(0, 1, newMemStore(), hostileLimits, zerolog.Nop())
	ctx := context.Background()
	_, err := m.RunScript(ctx, g1, "s", `local ok, e = coroutine.wrap(function()
  return xpcall(function() error("x") end, function(m) coroutine.yield("escaped") return m end)
end)()
assert(ok == false and e ~= "escaped", tostring(e))
error(e)`, ev("x", ""))
	if c := proto.CodeOf(err); c != proto.CodeScriptError && c != proto.CodeStackOverflow {
		t.Fatalf("got %v; want script_error or stack_overflow", err)
	}
	if v, err := m.RunScript(ctx, proto.GuildID(9<<22), "s", `return 1`, ev("x", "")); err != nil || string(v) != "1" {
		t.Fatalf("neighbour: %s %v", v, err)
	}
}

// TestHostileCoroutinesThreadWorker runs the coroutine corpus on a thread
// worker while a neighbour tenant on the same worker keeps being served.
func TestHostileCoroutinesThreadWorker(t *testing.T) {
	s := newMemStore()
	victim, neighbour := proto.GuildID(1<<22), proto.GuildID(2<<22)
	s.put(neighbour, "ok", neighbourCode, "Ping")
	w, err := New(0, 1, Options{Store: s, Limits: hostileLimits, Logger: zerolog.Nop(), NoStartup: true})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Kill(context.Background())
	ctx := context.Background()
	stop := make(chan struct{})
	served := make(chan error, 1)
	go func() { // the neighbour's traffic, between the hostile calls
		n := 0
		for {
			select {
			case <-stop:
				if n == 0 {
					served <- fmt.Errorf("neighbour never served")
				}
				served <- nil
				return
			default:
			}
			v, err := w.DispatchEvent(ctx, neighbour, ev("Ping", "{}"))
			if err != nil || string(v) != `{"ok":"fine"}` {
				served <- fmt.Errorf("neighbour: %s %v", v, err)
				return
			}
			n++
		}
	}()
	for _, c := range coroutineHostileCases {
		_, err := w.RunScript(ctx, victim, "hostile", c.code, ev("x", ""))
		if pe := proto.AsError(err); err == nil || pe.Code != c.wantCode {
			t.Errorf("%s: got %.200v; want %s", c.name, err, c.wantCode)
		}
	}
	close(stop)
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}

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

// waitGoroutines waits until at most n goroutines are left, without
// collecting garbage (which would end abandoned coroutines by itself).
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines; want at most %d", runtime.NumGoroutine(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestAbandonedCoroutinesReclaimedInTenantVM: 100,000 coroutines, each
// resumed once and left suspended, in one tenant VM; afterwards the
// goroutine count and the heap return to their baseline.
func TestAbandonedCoroutinesReclaimedInTenantVM(t *testing.T) {
	lim := DefaultLimits
	lim.MaxInstructions = 0 // the run takes ~60M instructions with the resume charges
	lim.Timeout = 5 * time.Minute
	m := NewManager(0, 1, newMemStore(), lim, zerolog.Nop())
	ctx := context.Background()
	if _, err := m.RunScript(ctx, g1, "warm", `return 1`, ev("x", "")); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	baseG, baseHeap := runtime.NumGoroutine(), heapObjects()
	start := time.Now()
	v, err := m.RunScript(ctx, g1, "s", `local n = 0
for i = 1, 100000 do
  local co = coroutine.create(function(x) coroutine.yield(x) end)
  local ok, x = coroutine.resume(co, i)
  n = n + x
end
return n`, ev("x", ""))
	if err != nil || string(v) != "5000050000" {
		t.Fatalf("got %s %v", v, err)
	}
	elapsed := time.Since(start)
	gAfter := runtime.NumGoroutine()
	waitFor(t, "goroutines back to baseline", func() bool { return runtime.NumGoroutine() <= baseG+2 })
	waitFor(t, "heap back to baseline", func() bool { return heapObjects() <= baseHeap+4<<20 })
	t.Logf("100000 abandoned coroutines in %v; goroutines: %d before, %d right after the call, %d after GC; heap %.1f MiB before, %.1f MiB after GC",
		elapsed.Round(time.Millisecond), baseG, gAfter, runtime.NumGoroutine(), float64(baseHeap)/(1<<20), float64(heapObjects())/(1<<20))
	// The VM still works.
	if v, err := m.RunScript(ctx, g1, "s", `return coroutine.wrap(function() return 7 end)()`, ev("x", "")); err != nil || string(v) != "7" {
		t.Fatalf("after: %s %v", v, err)
	}
}

// TestSelfReferencingCoroutinesSweptAfterCall: abandoned coroutines whose
// own stack refers to them (Go's collector cannot reclaim those) are ended
// at the end of the call that left them, not at the VM's next use.
func TestSelfReferencingCoroutinesSweptAfterCall(t *testing.T) {
	m := NewManager(0, 1, newMemStore(), hostileLimits, zerolog.Nop())
	ctx := context.Background()
	if _, err := m.RunScript(ctx, g1, "warm", `return 1`, ev("x", "")); err != nil {
		t.Fatal(err)
	}
	baseG := runtime.NumGoroutine()
	if _, err := m.RunScript(ctx, g1, "s", `for i = 1, 500 do
  local co; co = coroutine.create(function() local me = co; coroutine.yield() end)
  coroutine.resume(co)
end`, ev("x", "")); err != nil {
		t.Fatal(err)
	}
	waitGoroutines(t, baseG+minIdleSweep)
	vm := m.tenants[g1].vm
	if n := lua.LiveCoroutines(vm.l); n >= minIdleSweep {
		t.Fatalf("%d live coroutines after the call", n)
	}
}

// TestDropEndsSuspendedCoroutines: dropping a tenant ends the goroutines of
// its suspended coroutines at once.
func TestDropEndsSuspendedCoroutines(t *testing.T) {
	m := NewManager(0, 1, newMemStore(), hostileLimits, zerolog.Nop())
	ctx := context.Background()
	runtime.GC()
	baseG := runtime.NumGoroutine()
	if _, err := m.RunScript(ctx, g1, "s", `keep = {} for i = 1, 200 do local co = coroutine.wrap(function() coroutine.yield() end) co() keep[i] = co end`, ev("x", "")); err != nil {
		t.Fatal(err)
	}
	// (Counted by the VM: a goroutine of an earlier test still exiting
	// may be in baseG.)
	if n := lua.LiveCoroutines(m.tenants[g1].vm.l); n != 200 {
		t.Fatalf("%d live coroutines; want the 200 suspended ones", n)
	}
	m.Drop(g1)
	waitGoroutines(t, baseG)
}

// BenchmarkCoroutineRoundTrip measures one resume/yield round trip in a
// tenant VM (limits and count hook on), called on the benchmark's
// goroutine ("vm") and through a thread worker, whose goroutine is locked
// to its OS thread ("thread-worker", 1,000 round trips per call).
func BenchmarkCoroutineRoundTrip(b *testing.B) {
	const perCall = 1000
	code := `local co = coroutine.wrap(function() while true do coroutine.yield(1) end end)
for i = 1, 1000 do co() end return 1`
	b.Run("vm", func(b *testing.B) {
		vm, err := newVM(proto.GuildID(1), newMemStore(), DefaultLimits, zerolog.Nop())
		if err != nil {
			b.Fatal(err)
		}
		defer vm.close()
		ctx := context.Background()
		for b.Loop() {
			if _, err := vm.runCode(ctx, "b", code, ev("x", "")); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*perCall), "ns/roundtrip")
	})
	b.Run("thread-worker", func(b *testing.B) {
		w, err := New(0, 1, Options{Store: newMemStore(), Logger: zerolog.Nop(), NoStartup: true})
		if err != nil {
			b.Fatal(err)
		}
		defer w.Kill(context.Background())
		ctx := context.Background()
		for b.Loop() {
			if _, err := w.RunScript(ctx, g1, "b", code, ev("x", "")); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*perCall), "ns/roundtrip")
	})
}

// TestCoroutineTimeout: a coroutine spinning forever ends at the call's
// timeout, and at the caller's deadline, as the main thread does.
func TestCoroutineTimeout(t *testing.T) {
	lim := hostileLimits
	lim.MaxInstructions = 0
	lim.Timeout = 200 * time.Millisecond
	m := NewManager(0, 1, newMemStore(), lim, zerolog.Nop())
	_, err := m.RunScript(context.Background(), g1, "s", `coroutine.wrap(function() while true do end end)()`, ev("x", ""))
	if pe := proto.AsError(err); pe.Code != proto.CodeTimeout || !strings.Contains(pe.Message, "200ms") {
		t.Fatalf("got %v", err)
	}
	lim.Timeout = time.Minute
	m = NewManager(0, 1, newMemStore(), lim, zerolog.Nop())
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = m.RunScript(ctx, g1, "s", `local co = coroutine.wrap(function() coroutine.yield() while true do end end) co() pcall(co)`, ev("x", ""))
	if proto.CodeOf(err) != proto.CodeTimeout {
		t.Fatalf("got %v", err)
	}
}

package lua

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// Regression tests of the VM fixes described in PATCHES.md ("Lua 5.2
// semantics"). Each case was checked against the reference interpreter
// lua5.2.

// budgetState is a State with the limits a host sets and a count hook that,
// once budget instructions have run, raises an error at every further hook,
// as the worker's instruction budget does.
func budgetState(budget int) (*State, *int) {
	l := NewState()
	OpenLibraries(l)
	SetLimits(l, Limits{MaxStringLength: 1 << 20, MaxCallDepth: 200, MaxMemory: 16 << 20})
	hooks := new(int)
	SetDebugHook(l, func(l *State, _ Debug) {
		if *hooks++; *hooks*100 > budget {
			Errorf(l, "budget exceeded")
		}
	}, MaskCount, 100)
	return l, hooks
}

// runChunk runs code (chunk name "=x") and renders its results, or its
// error object, with tostring. A run that does not end within a minute
// fails the test (a wedge is the bug most of these tests guard against).
func runChunk(t *testing.T, l *State, code string) (results []string, err error) {
	t.Helper()
	done := make(chan struct{}, 1)
	go func() {
		defer func() { done <- struct{}{} }()
		if err = LoadBuffer(l, code, "=x", "t"); err != nil {
			results = []string{l.ToValue(-1).(string)}
			return
		}
		top := l.Top() - 1
		err = l.ProtectedCall(0, MultipleReturns, 0)
		for i := top + 1; i <= l.Top(); i++ {
			s, _ := ToStringMeta(l, i)
			l.Pop(1)
			results = append(results, s)
		}
		l.SetTop(top)
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatalf("%q did not end within a minute", code)
	}
	return results, err
}

func expectResults(t *testing.T, l *State, code string, want ...string) {
	t.Helper()
	got, err := runChunk(t, l, code)
	if err != nil {
		t.Fatalf("%s: %v %q", code, err, got)
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("%s:\n got  %q\n want %q", code, got, want)
	}
}

func TestXpcallHandler(t *testing.T) {
	l, _ := budgetState(1 << 30)
	expectResults(t, l, `return xpcall(function() error("x") end, function(m) return m end)`, "false", "x:1: x")
	expectResults(t, l, `return xpcall(function() error("x") end, function(m) return "h:" .. m end)`, "false", "h:x:1: x")
	expectResults(t, l, `return xpcall(function(a, b) return a + b end, print, 1, 2)`, "true", "3")
	expectResults(t, l, `return type(select(2, xpcall(error, function(m) return m end, {})))`, "table")
	// An error in the handler calls the handler again, until Lua gives up.
	expectResults(t, l, `return xpcall(error, function() local x = nil + 1 end)`, "false", "error in error handling")
	// The handler that xpcall passes is the one called, at every depth.
	expectResults(t, l, `local function f(n) if n == 0 then error("deep") end return f(n - 1) + 0 end
		return xpcall(f, function(m) return "handled " .. m end, 50)`, "false", "handled x:1: deep")
}

func TestXpcallLoopingHandlerIsInterruptible(t *testing.T) {
	for _, code := range []string{
		`return xpcall(error, function() while true do end end)`,
		`return xpcall(function() while true do end end, function() while true do end end)`,
		`return xpcall(function() local x = nil + 1 end, function() while true do end end)`,
	} {
		l, hooks := budgetState(100_000)
		got, err := runChunk(t, l, code)
		if *hooks*100 <= 100_000 {
			t.Fatalf("%s: ended before its budget (%d hooks): %q %v", code, *hooks, got, err)
		}
		// The budget error raised in the handler reaches the handler again
		// until nested calls run out: "error in error handling".
		if err != nil || len(got) != 2 || got[0] != "false" || got[1] != "error in error handling" {
			t.Fatalf("%s: got %q %v", code, got, err)
		}
	}
}

// A count hook that fires as a function starts (before its first
// instruction) can call Where: it used to index the line table at -1.
func TestHookAtFunctionEntryCanRaise(t *testing.T) {
	l := NewState()
	OpenLibraries(l)
	SetDebugHook(l, func(l *State, _ Debug) { Errorf(l, "stop") }, MaskCount, 1)
	got, err := runChunk(t, l, `local function f() return 1 end return f()`)
	if err == nil || len(got) != 1 || !strings.HasSuffix(got[0], "stop") {
		t.Fatalf("got %q %v", got, err)
	}
}

func TestErrorWithNonStringValue(t *testing.T) {
	l, _ := budgetState(1 << 30)
	expectResults(t, l, `local ok, e = pcall(error, {}) return ok, type(e)`, "false", "table")
	expectResults(t, l, `local t = {} local ok, e = pcall(error, t) return ok, e == t`, "false", "true")
	expectResults(t, l, `return pcall(error)`, "false", "nil")
	expectResults(t, l, `return pcall(error, nil)`, "false", "nil")
	expectResults(t, l, `local ok, e = pcall(error, 42) return ok, e, type(e)`, "false", "42", "string")
	expectResults(t, l, `local ok, e = pcall(error, 42, 0) return ok, e, type(e)`, "false", "42", "number")
	expectResults(t, l, `local ok, e = pcall(error, true) return ok, e`, "false", "true")
	expectResults(t, l, `return pcall(error, "msg", 0)`, "false", "msg")
	expectResults(t, l, `return pcall(error, "msg")`, "false", "msg")
	expectResults(t, l, `return pcall(function() error("msg") end)`, "false", "x:1: msg")
	expectResults(t, l, `return select("#", pcall(error))`, "2")
	// The Go error of an unprotected non-string error names its type.
	_, err := runChunk(t, l, `error({})`)
	if err == nil || err.Error() != "runtime error: (error object is a table value)" {
		t.Fatalf("got %v", err)
	}
}

// A panic with a value that is not an error (a bug in a host function) is
// an error of the protected call, never a panic through it.
func TestNonErrorPanicIsCaught(t *testing.T) {
	l, _ := budgetState(1 << 30)
	l.Register("gopanic", func(l *State) int { panic(262099) })
	l.Register("goindex", func(l *State) int { var s []int; return s[CheckInteger(l, 1)] })
	expectResults(t, l, `local ok, e = pcall(gopanic) return ok, e`, "false", "go-lua internal error: 262099")
	expectResults(t, l, `local ok, e = pcall(goindex, 3) return ok, type(e), (e:find("index out of range", 1, true)) ~= nil`, "false", "string", "true")
	_, err := runChunk(t, l, `gopanic()`)
	if err == nil || !strings.Contains(fmt.Sprint(err), "262099") {
		t.Fatalf("got %v", err)
	}
}

func TestLoadReaderPieces(t *testing.T) {
	l, _ := budgetState(1 << 30)
	// calls.lua 224-233: a nil or empty piece ends the chunk.
	expectResults(t, l, `local t = {nil, "return ", "3"} local f = load(function() return table.remove(t, 1) end) return f(), #t`, "nil", "2")
	expectResults(t, l, `local t = {"return ", "1", "", "+ 2"} local i = 0 local f = load(function() i = i + 1 return t[i] end) return f(), i`, "1", "3")
	expectResults(t, l, `local s, i = "return 'ab' .. 'c'", 0
		local f = load(function() i = i + 1 return s:sub(i, i) end) return f(), i`, "abc", tostringInt(len("return 'ab' .. 'c'")+1))
	expectResults(t, l, `return load(function() return nil end)() == nil`, "true")
	expectResults(t, l, `local f, e = load(function() return true end) return f, e`, "nil", `x:1: reader function must return a string`)
	// After the end of the chunk the reader is not called again.
	expectResults(t, l, `local n = 0 load(function() n = n + 1 return nil end) return n`, "1")
	expectResults(t, l, `local n = 0 load(function() n = n + 1 if n == 1 then return "x = 1" end end) return n`, "2")
}

func tostringInt(n int) string { return fmt.Sprint(n) }

func TestLoadRecursiveReaderIsBounded(t *testing.T) {
	l, _ := budgetState(1 << 30)
	// Each reader call loads again: the recursion ends at the call depth
	// limit, the innermost load fails, the others read an empty chunk.
	expectResults(t, l, `local n = 0 local f f = function() n = n + 1 load(f) return nil end return type(load(f)), n > 10, n < 200`, "function", "true", "true")
	expectResults(t, l, `local e local f f = function() local g, m = load(f) e = e or m return nil end load(f) return e`, "stack overflow (call depth limit 200)")
}

func TestLoadReaderIsInterruptible(t *testing.T) {
	for _, code := range []string{
		`return load(function() while true do end end)`,
		`return load(function() return "x = 1 " end)`,
		`local f f = function() load(f) while true do end end return load(f)`,
	} {
		l, hooks := budgetState(1_000_000)
		got, err := runChunk(t, l, code)
		if err != nil || len(got) != 2 || got[0] != "nil" || !strings.HasSuffix(got[1], "budget exceeded") {
			t.Fatalf("%s: got %q %v", code, got, err)
		}
		if *hooks*100 <= 1_000_000 {
			t.Fatalf("%s: ended before its budget", code)
		}
	}
}

func TestNextClearingFieldsDuringTraversal(t *testing.T) {
	l, _ := budgetState(1 << 30)
	// nextvar.lua 291-304.
	expectResults(t, l, `local t = {[{1}] = 1, [{2}] = 2, [string.rep("x ", 4)] = 3, [100.3] = 4, [4] = 5}
		local n = 0
		for k, v in pairs(t) do
			n = n + 1
			assert(t[k] == v)
			t[k] = nil
			assert(t[k] == nil)
		end
		return n, next(t)`, "5", "nil")
	expectResults(t, l, `local t = {} for i = 1, 1000 do t["k" .. i] = i t[i] = i end
		local n, sum = 0, 0
		for k, v in pairs(t) do n = n + 1 sum = sum + v t[k] = nil end
		return n, sum, next(t)`, "2000", tostringInt(1000*1001), "nil")
	// Assigning to existing fields during traversal is allowed too, and
	// next sees the new values.
	expectResults(t, l, `local t = {} for i = 1, 100 do t["k" .. i] = i end
		for k, v in pairs(t) do t[k] = v * 2 end
		local sum = 0 for k, v in pairs(t) do sum = sum + v end
		return sum`, tostringInt(100*101))
	expectResults(t, l, `local t = {a = 1, b = 2, c = 3}
		local k1 = next(t) t[k1] = nil
		local seen = 0 for k in pairs(t) do seen = seen + 1 end
		return seen`, "2")
	// Two interleaved traversals of one table, and next from any key.
	expectResults(t, l, `local t = {} for i = 1, 500 do t["k" .. i] = i end
		local a, b, n = nil, nil, 0
		repeat a = next(t, a) b = next(t, b) if a then n = n + 1 end until a == nil
		local m = 0 for k in pairs(t) do if next(t, k) then m = m + 1 end end
		return n, m`, "500", "499")
	expectResults(t, l, `return pcall(next, {a = 1}, "nokey")`, "false", "invalid key to 'next'")
	expectResults(t, l, `local t = {1, 2, 3, x = 4} local n = 0 for k, v in pairs(t) do n = n + v end return n`, "10")
}

// The Go-side work of next (snapshotting the keys, indexing the snapshot
// for an interleaved traversal) is passed to Limits.Charge, in proportion to
// the table. (Traversal speed itself is measured by BenchmarkPairs100k.)
func TestNextChargesSnapshotWork(t *testing.T) {
	work := func(n int) int {
		l := NewState()
		OpenLibraries(l)
		steps := 0
		SetLimits(l, Limits{Charge: func(_ *State, s int) { steps += s }})
		code := fmt.Sprintf(`local t = {} for i = 1, %d do t["k" .. i] = i end
			local a, b = nil, nil
			repeat a = next(t, a) b = next(t, b) until a == nil
			for k in pairs(t) do t[k] = nil end`, n)
		if err := DoString(l, code); err != nil {
			t.Fatal(err)
		}
		return steps
	}
	small, big := work(10_000), work(100_000)
	// One snapshot and one index of it: 2*n/workPerStep steps.
	if small < 10_000/workPerStep || big < 100_000/workPerStep || big > 12*small {
		t.Fatalf("charged %d steps for 10,000 keys, %d for 100,000", small, big)
	}
}

func TestPairsIteratorIsOneValue(t *testing.T) {
	l, _ := budgetState(1 << 30)
	// nextvar.lua 34; in Lua pairs' iterator is next.
	expectResults(t, l, `return type(ipairs{}) == "function", ipairs{} == ipairs{}, ipairs{} == ipairs{1, 2}, pairs{} == pairs{}, pairs{} == next`,
		"true", "true", "true", "true", "true")
	expectResults(t, l, `local s = 0 for i, v in ipairs{4, 5, 6} do s = s + i * v end for k, v in pairs{a = 1, 2} do s = s + v end return s`, "35")
	expectResults(t, l, `local t = setmetatable({}, {__pairs = function(t) return function(_, k) if not k then return 1, 1 end end, t, nil end})
		local n = 0 for k, v in pairs(t) do n = n + v end return n`, "1")
	expectResults(t, l, `local ok, e = pcall(ipairs) return ok, e:find("table expected", 1, true) ~= nil`, "false", "true")
}

// big.lua 9-22: past 2^18 constants a constant is loaded with LOADKX and
// EXTRAARG; the plain LOADK that was emitted loaded constant 0 instead.
func TestMoreConstantsThanLoadKCanAddress(t *testing.T) {
	l := NewState()
	OpenLibraries(l)
	expectResults(t, l, `local lim = 2^18 + 100
		local prog = {"local y = {0"}
		for i = 1, lim do prog[#prog + 1] = i end
		prog[#prog + 1] = "}\n"
		prog[#prog + 1] = "local z = 0.5 local s = 'past the limit'\n"
		prog[#prog + 1] = ("assert(y[%d] == %d)"):format(lim - 1, lim - 2)
		prog[#prog + 1] = "return y, z, s"
		local f = assert(load(table.concat(prog, ";")))
		local y, z, s = f()
		return #y == lim + 1, y[lim + 1] == lim, z, s`, "true", "true", "0.5", "past the limit")
}

// literals.lua 85-90: only [a-zA-Z_] start a name and [a-zA-Z_0-9]
// continue it; bytes >= 0x80 are rejected as the reference does.
func TestNamesAreASCII(t *testing.T) {
	l := NewState()
	OpenLibraries(l)
	expectResults(t, l, `local bad = {}
		local function alpha(i) return i == 95 or (i >= 65 and i <= 90) or (i >= 97 and i <= 122) end
		for i = 0, 255 do
			local s = string.char(i)
			if alpha(i) ~= (load(s .. "=1") ~= nil) then bad[#bad + 1] = "start " .. i end
			if (alpha(i) or (i >= 48 and i <= 57)) ~= (load("a" .. s .. "1 = 1") ~= nil) then bad[#bad + 1] = "in " .. i end
		end
		return #bad, table.concat(bad, ",")`, "0", "")
	expectResults(t, l, `local f = load("\xC0 = 1") return f`, "nil")
	expectResults(t, l, `return load("local _aZ9 = 3 return _aZ9")()`, "3")
}

// Parsing is charged through Limits.Charge and can be stopped by it; the
// compiled code counts against MaxMemory; MaxSourceLength bounds a chunk.
func TestParseIsChargedAndBounded(t *testing.T) {
	src := strings.Repeat("a.b.c.d.e=1 ", 20_000)
	l := NewState()
	steps, calls := 0, 0
	SetLimits(l, Limits{Charge: func(_ *State, n int) { steps += n; calls++ }})
	if err := LoadBuffer(l, src, "=x", "t"); err != nil {
		t.Fatal(err)
	}
	// 11 tokens and 5 instructions a statement, parseStepCost each.
	if want := 20_000 * 16 * parseStepCost; steps < want*9/10 || calls < want/ChargeEvery-1 {
		t.Fatalf("charged %d steps in %d calls; want about %d", steps, calls, want)
	}

	// A Charge that raises stops the parse: load fails with its error.
	l, _ = budgetState(1 << 30)
	var kinds []string
	lim := l.Limits()
	lim.Charge = func(l *State, n int) {
		if steps += n; steps > 100_000 {
			Errorf(l, "parse budget exceeded")
		}
	}
	lim.OnLimit = func(_ *State, kind string, _ int64) { kinds = append(kinds, kind) }
	SetLimits(l, lim)
	l.PushString(src)
	l.SetGlobal("src")
	steps = 0
	expectResults(t, l, `local f, e = load(src) return f, e:find("parse budget exceeded", 1, true) ~= nil`, "nil", "true")

	// Memory: the compiled code is accounted while it is built.
	lim.Charge, lim.MaxMemory = nil, 1<<20
	SetLimits(l, lim)
	expectResults(t, l, `local f, e = load(src) return f, e`, "nil", "not enough memory (limit 1048576 bytes)")
	_, err := runChunk(t, l, `return 1`)
	if err != nil {
		t.Fatal(err)
	}
	// From the host, with no Lua frame.
	l.SetTop(0)
	if err := LoadBuffer(l, src, "=x", "t"); err == nil || l.ToValue(-1) != "not enough memory (limit 1048576 bytes)" {
		t.Fatalf("host LoadBuffer: %v %v", err, l.ToValue(-1))
	}
	l.SetTop(0)

	// Source length, known up front and from a reader.
	lim.MaxMemory, lim.MaxSourceLength = 16<<20, 1000
	SetLimits(l, lim)
	expectResults(t, l, `return type(load(("x=1 "):rep(250)))`, "function")
	expectResults(t, l, `return load(("x=1 "):rep(251))`, "nil", "chunk too long (limit 1000 bytes)")
	expectResults(t, l, `local n = 0 return load(function() n = n + 1 if n <= 300 then return "x=1 " end end)`, "nil", "chunk too long (limit 1000 bytes)")
	if strings.Join(kinds, ",") != "memory,memory,source,source" {
		t.Fatalf("OnLimit kinds %v", kinds)
	}
}

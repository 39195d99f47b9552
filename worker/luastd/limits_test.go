package luastd

import (
	"strings"
	"testing"

	lua "github.com/Shopify/go-lua"
)

// stepBudget is a Limits.Charge that raises a Lua error once more than max
// steps have been charged.
type stepBudget struct {
	max, used, calls int
}

func (b *stepBudget) charge(l *lua.State, steps int) {
	b.calls++
	b.used += steps
	if b.used > b.max {
		lua.Errorf(l, "budget exceeded")
	}
}

func TestMaxString(t *testing.T) {
	cases := []struct{ code, want string }{
		{`return #string.rep("x", 100)`, `100`},
		{`return string.rep("x", 101)`, "error: case:1: string length exceeds limit (100 bytes)"},
		{`return string.rep("ab", 50, ",")`, "error: case:1: string length exceeds limit (100 bytes)"},
		{`return #string.rep("a", 50, ",")`, `99`},
		{`return string.rep("x", 2^40)`, "error: case:1: string length exceeds limit (100 bytes)"},
		{`return string.rep("x", 1e300, "y")`, "error: case:1: string length exceeds limit (100 bytes)"},
		{`return #string.format("%99d", 1)`, `99`},
		{`return string.format("%99d%2d", 1, 1)`, "error: case:1: string length exceeds limit (100 bytes)"},
		{`return string.format("%s%s", ("x"):rep(60), ("y"):rep(60))`, "error: case:1: string length exceeds limit (100 bytes)"},
		{`return string.format("%q", ("\n"):rep(60))`, "error: case:1: string length exceeds limit (100 bytes)"},
		{`return (("x"):rep(50)):gsub("x", "yyy")`, "error: case:1: string length exceeds limit (100 bytes)"},
		{`return (("x"):rep(50)):gsub("x", function() return "yyy" end)`, "error: case:1: string length exceeds limit (100 bytes)"},
		{`return (("x"):rep(50)):gsub("x", "%0%0%0")`, "error: case:1: string length exceeds limit (100 bytes)"},
		{`return #(("x"):rep(50)):gsub("x", "yy")`, `100`},
		{`local t = {} for i = 1, 20 do t[i] = "xxxxxxxxxx" end return table.concat(t)`, "error: case:1: string length exceeds limit (100 bytes)"},
		{`local t = {} for i = 1, 10 do t[i] = "xxxxxxxxxx" end return #table.concat(t)`, `100`},
		{`local t = {} for i = 1, 10 do t[i] = "xxxxxxxxx" end return table.concat(t, ",,")`, "error: case:1: string length exceeds limit (100 bytes)"},
		{`return string.char(string.byte(("x"):rep(101), 1, -1))`, "error: case:1: string length exceeds limit (100 bytes)"},
		{`return os.date(("x"):rep(101), 0)`, "error: case:1: string length exceeds limit (100 bytes)"},
		{`return os.date(("%c"):rep(5), 0)`, "error: case:1: string length exceeds limit (100 bytes)"},
		{`return pcall(string.rep, "x", 1000)`, `false, "string length exceeds limit (100 bytes)"`},
	}
	for _, c := range cases {
		var kinds []string
		lim := Limits{MaxString: 100, OnLimit: func(l *lua.State, kind string, limit int) {
			if limit != 100 {
				t.Errorf("OnLimit limit = %d, want 100", limit)
			}
			kinds = append(kinds, kind)
		}}
		got := runCode(t, newState(lim), c.code)
		if got != c.want {
			t.Errorf("%s\n got: %q\nwant: %q", c.code, got, c.want)
		}
		wantCalls := 0
		if strings.Contains(c.want, "exceeds limit") {
			wantCalls = 1
		}
		if len(kinds) != wantCalls || (wantCalls == 1 && kinds[0] != "string") {
			t.Errorf("%s: OnLimit calls %q, want %d call(s) with kind \"string\"", c.code, kinds, wantCalls)
		}
	}
}

func TestOnLimitRaises(t *testing.T) {
	lim := Limits{MaxString: 10, OnLimit: func(l *lua.State, kind string, limit int) {
		lua.Errorf(l, "aborted: memory_limit")
	}}
	got := runCode(t, newState(lim), `return string.rep("x", 11)`)
	if want := "error: case:1: aborted: memory_limit"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestUnlimitedRepTooLarge(t *testing.T) {
	got := runCode(t, newState(Limits{}), `return string.rep("x", 2^40)`)
	if want := "error: case:1: resulting string too large"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestChargeStopsPathologicalPattern: an exponential backtracking match
// ends with the budget's error.
func TestChargeStopsPathologicalPattern(t *testing.T) {
	for _, code := range []string{
		`return string.rep("a", 30000):match(("a*"):rep(20) .. "b")`,
		`return string.rep("a", 30000):find(("a*"):rep(20) .. "b")`,
		`return string.rep("a", 30000):gsub(("a-"):rep(20) .. "b", "")`,
		`for x in string.rep("a", 30000):gmatch(("a*"):rep(20) .. "b") do end`,
		`return string.rep("a", 30000):match(".-.-.-.-b")`,
		`return string.rep("(", 30000):match("%b()%b()b")`,
		`return string.rep("ab", 30000):match("(.-)%1%1%1x")`,
	} {
		b := &stepBudget{max: 2_000_000}
		got := runCode(t, newState(Limits{Charge: b.charge}), code)
		if got != "error: case:1: budget exceeded" {
			t.Errorf("%s: got %q, want the budget error", code, got)
		}
		if b.used < b.max || b.used > b.max+2*chargeEvery {
			t.Errorf("%s: charged %d steps, want just over %d", code, b.used, b.max)
		}
	}
}

// TestChargeCountsWork: a cheap call charges its steps once at the end.
func TestChargeCountsWork(t *testing.T) {
	cases := []struct {
		code     string
		minSteps int
	}{
		{`return ("hello world"):match("w%a+")`, 5},
		{`return ("hello world"):find("o", 1, true)`, 1},
		{`return (("x"):rep(5000)):gsub("x", "y")`, 5000},
		{`local t = {} for i = 1, 1000 do t[i] = -i end table.sort(t)`, 5000},
		{`local t = {} for i = 1, 1000 do t[i] = "x" end return #table.concat(t)`, 1000},
		{`return #string.rep("x", 5000)`, 5000},
		{`return #string.format(("%s"):rep(100), ` + strings.Repeat(`("y"):rep(1000),`, 99) + `"y")`, 5000},
		{`return #string.format(("x"):rep(5000))`, 5000},
		{`return #string.reverse(("x"):rep(64000))`, 1000},
		{`return #string.lower(("X"):rep(64000))`, 1000},
		{`return #string.upper(("x"):rep(64000))`, 1000},
		{`return select("#", string.byte(("x"):rep(5000), 1, -1))`, 5000},
		{`local t = {} for i = 1, 5000 do t[i] = i end return select("#", table.unpack(t))`, 5000},
		{`local t = {} for i = 1, 5000 do t[i] = i end return select("#", unpack(t))`, 5000},
		{`return #string.char(string.byte(("x"):rep(200), 1, -1))`, 200},
		{`return #(("x"):rep(64000)):sub(2, 30000)`, 400},
	}
	for _, c := range cases {
		b := &stepBudget{max: 1 << 40}
		got := runCode(t, newState(Limits{Charge: b.charge}), c.code)
		if strings.HasPrefix(got, "error") {
			t.Errorf("%s: %s", c.code, got)
		}
		if b.used < c.minSteps || b.calls == 0 {
			t.Errorf("%s: charged %d steps in %d calls, want at least %d", c.code, b.used, b.calls, c.minSteps)
		}
	}
}

// TestChargeStopsEveryFunction: every function that loops over its input
// ends with the budget's error when the budget is smaller than its work,
// before doing it.
func TestChargeStopsEveryFunction(t *testing.T) {
	// s is built by the VM (uncharged here), 2^20 bytes.
	const big = `local s = "x" for i = 1, 20 do s = s .. s end `
	for _, code := range []string{
		big + `return string.format("%s%s", s, s)`,
		big + `return string.format(s)`,
		big + `return string.reverse(s)`,
		big + `return string.lower(s)`,
		big + `return string.upper(s)`,
		big + `return string.byte(s, 1, 100000)`,
		big + `return #s:sub(1, 400000)`,
		`local t = {} t[100000] = 1 return unpack(t, 1, 100000)`,
		`local t = {} t[100000] = 1 return table.unpack(t, 1, 100000)`,
	} {
		b := &stepBudget{max: 5_000}
		got := runCode(t, newState(Limits{Charge: b.charge}), code)
		if got != "error: case:1: budget exceeded" {
			t.Errorf("%s: got %q, want the budget error", code, got)
		}
	}
}

// TestChargeStopsSort: a sort whose comparator is slow to run out is
// still bounded by the budget.
func TestChargeStopsSort(t *testing.T) {
	b := &stepBudget{max: 50_000}
	got := runCode(t, newState(Limits{Charge: b.charge}),
		`local t = {} for i = 1, 20000 do t[i] = (i * 7919) % 20011 end table.sort(t, function(a, b) return a < b end)`)
	if got != "error: case:1: budget exceeded" {
		t.Errorf("got %q, want the budget error", got)
	}
}

// TestSortInconsistentComparators: any comparator terminates, without
// a Go panic, leaving a permutation of the original elements.
func TestSortInconsistentComparators(t *testing.T) {
	for _, cmp := range []string{
		`function(a, b) return true end`,
		`function(a, b) return false end`,
		`function(a, b) return math.random() < 0.5 end`,
		`function(a, b) return a <= b end`,
		`function(a, b) return (a + b) % 3 == 0 end`,
		`function(a, b) t[math.random(#t)] = a return a < b end`,
	} {
		code := `t = {} for i = 1, 300 do t[i] = (i * 37) % 101 end
			local sum = 0 for i = 1, #t do sum = sum + t[i] end
			local ok, err = pcall(table.sort, t, ` + cmp + `)
			if not ok and err ~= "invalid order function for sorting" then return err end
			return #t`
		got := runCode(t, newState(Limits{}), code)
		if got != "300" {
			t.Errorf("comparator %s: got %q", cmp, got)
		}
	}
}

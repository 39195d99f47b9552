package lua

import (
	"math"
	"strings"
	"testing"
)

// errmsg patch: error messages as the reference interpreter (lua5.2) words
// them, for the cases the official test suite (errors.lua, literals.lua)
// checks. Every want below is lua5.2's output for the same chunk.

// errmsgState opens the libraries a template VM has.
func errmsgState() *State {
	l := NewState()
	for _, lib := range []RegistryFunction{
		{Name: "_G", Function: BaseOpen},
		{Name: "string", Function: StringOpen},
		{Name: "table", Function: TableOpen},
		{Name: "math", Function: MathOpen},
	} {
		Require(l, lib.Name, lib.Function, true)
		l.Pop(1)
	}
	return l
}

// errmsgOf loads and runs code as load(code) would (the chunk name is the
// source), returning the syntax or runtime error message.
func errmsgOf(t *testing.T, code string) string {
	t.Helper()
	l := errmsgState()
	if err := LoadString(l, code); err != nil {
		s, _ := l.ToString(-1)
		return s
	}
	if err := l.ProtectedCall(0, 0, 0); err != nil {
		s, _ := l.ToString(-1)
		return s
	}
	t.Fatalf("%q: no error", code)
	return ""
}

func TestErrorMessagesNameVariables(t *testing.T) {
	for _, c := range []struct{ code, want string }{
		{"a=1; bbbb=2; a=math.sin(3)+bbbb(3)", "attempt to call global 'bbbb' (a number value)"},
		{"a=1; local a,bbbb=2,3; a = math.sin(1) and bbbb(3)", "attempt to call local 'bbbb' (a number value)"},
		{"a={}; do local a=1 end a:bbbb(3)", "attempt to call method 'bbbb' (a nil value)"},
		{"local a={}; a.bbbb(3)", "attempt to call field 'bbbb' (a nil value)"},
		{"a={13}; local bbbb=1; a[bbbb](3)", "attempt to call field '?' (a number value)"},
		{"a=(1)..{}", "attempt to concatenate a table value"},
		{"aaa=nil; aaa.bbb:ddd(9)", "attempt to index global 'aaa' (a nil value)"},
		{"local aaa={bbb=1}; aaa.bbb:ddd(9)", "attempt to index field 'bbb' (a number value)"},
		{"local aaa={bbb={}}; aaa.bbb:ddd(9)", "attempt to call method 'ddd' (a nil value)"},
		{"local a,b,c; (function () a = b+1 end)()", "attempt to perform arithmetic on upvalue 'b' (a nil value)"},
		{"local _ENV = {x={}}; a = a + 1", "attempt to perform arithmetic on global 'a' (a nil value)"},
		{"b=1; local aaa='a'; x=aaa+b", "attempt to perform arithmetic on local 'aaa' (a string value)"},
		{"aaa={}; x=3/aaa", "attempt to perform arithmetic on global 'aaa' (a table value)"},
		{"aaa='2'; b=nil;x=aaa*b", "attempt to perform arithmetic on global 'b' (a nil value)"},
		{"aaa={}; x=-aaa", "attempt to perform arithmetic on global 'aaa' (a table value)"},
		{"aaa={}; x=(aaa or aaa)+(aaa and aaa)", "attempt to perform arithmetic on a table value"},
		{"aaa={}; (aaa or aaa)()", "attempt to call a table value"},
		{"x = print .. \"a\"", "attempt to concatenate global 'print' (a function value)"},
		{"x=#print", "attempt to get length of global 'print' (a function value)"},
		{"local t={}; t = t[#t] + 1", "attempt to perform arithmetic on field '?' (a nil value)"},
		{"local a = {}; a.b.c = 1", "attempt to index field 'b' (a nil value)"},
		{"return math.huge.x", "attempt to index field 'huge' (a number value)"},
		{"return ('a'):bad()", "attempt to call method 'bad' (a nil value)"},
		{"local debug = require'debug'", "attempt to call global 'require' (a nil value)"},
		{"local Var\nlocal function main()\n  NoSuchName (function() Var=0 end)\nend\nmain()", "attempt to call global 'NoSuchName' (a nil value)"},
		{"prefix = nil\ninsert = nil\nwhile 1 do\n  local a\n  if nil then break end\n  insert(prefix, a)\nend", "attempt to call global 'insert' (a nil value)"},
		{"local x,y = {},1\nif math.sin(1) == 0 then return 3 end\nx.a()", "attempt to call field 'a' (a nil value)"},
		{"print(print < 10)", "attempt to compare function with number"},
		{"print(print < print)", "attempt to compare two function values"},
		{"x = {} <= {}", "attempt to compare two table values"},
		{"x = 1 < nil", "attempt to compare number with nil"},
		{"local _ENV = nil; x = 1", "attempt to index local '_ENV' (a nil value)"},
		{"local _ENV = nil; (function() x = 1 end)()", "attempt to index upvalue '_ENV' (a nil value)"},
		{"local _ENV = nil; (function() return x end)()", "attempt to index upvalue '_ENV' (a nil value)"},
		{"for k in 3 do end", "attempt to call a number value"},
		{"local s; x = s .. 'a'", "attempt to concatenate local 's' (a nil value)"},
		{"local a = 'x' .. {} .. 'y'", "attempt to concatenate a table value"},
		{"local t = setmetatable({}, {__index = 5}); return t.x", "attempt to index a number value"},
		{"local u = {}; return u.a.b.c", "attempt to index field 'a' (a nil value)"},
		{"return #nil", "attempt to get length of a nil value"},
		{"local f = 5; f()", "attempt to call local 'f' (a number value)"},
		{"local t = {}; t[1](2)", "attempt to call field '?' (a nil value)"},
	} {
		if got := errmsgOf(t, c.code); !strings.HasSuffix(got, "]:1: "+c.want) && !strings.HasSuffix(got, ": "+c.want) {
			t.Errorf("%q\n got: %s\nwant: ...: %s", c.code, got, c.want)
		}
	}
}

func TestErrorMessagesNameFunctions(t *testing.T) {
	for _, c := range []struct{ code, want string }{
		{"a=math.sin()", "bad argument #1 to 'sin' (number expected, got no value)"},
		{"  -- tail call\n  return math.sin(\"a\")\n", "bad argument #1 to 'sin' (number expected, got string)"},
		{"tostring()", "bad argument #1 to 'tostring' (value expected)"},
		{"setmetatable(1,2)", "bad argument #1 to 'setmetatable' (table expected, got number)"},
		{"a = {}; setmetatable(a, {__index = string}); a:sub()", "calling 'sub' on bad self (string expected, got table)"},
		{"string.sub('a', {})", "bad argument #2 to 'sub' (number expected, got table)"},
		{"('a'):sub{}", "bad argument #1 to 'sub' (number expected, got table)"},
		{"string.byte({})", "bad argument #1 to 'byte' (string expected, got table)"},
	} {
		if got := errmsgOf(t, c.code); !strings.HasSuffix(got, ": "+c.want) {
			t.Errorf("%q\n got: %s\nwant: ...: %s", c.code, got, c.want)
		}
	}
	// Called from Go, a Go function is named by its global name.
	got := errmsgOf(t, "local ok, m = pcall(setmetatable, 's') error(m, 0)")
	if got != "bad argument #1 to 'setmetatable' (table expected, got string)" &&
		got != "bad argument #1 to '_G.setmetatable' (table expected, got string)" {
		t.Errorf("pcall calling setmetatable: %s", got)
	}
}

func TestSyntaxErrorMessages(t *testing.T) {
	for _, c := range []struct{ code, want string }{
		{"local a = {4\n\n", `[string "local a = {4..."]:3: '}' expected (to close '{' at line 1) near <eof>`},
		{"syntax error", `[string "syntax error"]:1: syntax error near 'error'`},
		{"1.000", `[string "1.000"]:1: unexpected symbol near '1.000'`},
		{"[[a]]", `[string "[[a]]"]:1: unexpected symbol near '[[a]]'`},
		{"'aa'", `[string "'aa'"]:1: unexpected symbol near ''aa''`},
		{"local a <const> = 1", `[string "local a <const> = 1"]:1: unexpected symbol near '<'`},
		{`x = "abc\q"`, `[string "x = "abc\q""]:1: invalid escape sequence near '\q'`},
		{`x = '\300'`, `[string "x = '\300'"]:1: decimal escape too large near '\300'`},
		{"x = 0x", `[string "x = 0x"]:1: malformed number near '0x'`},
		{"x = 0x1p", `[string "x = 0x1p"]:1: malformed number near '0x1p'`},
		{"x = 3e", `[string "x = 3e"]:1: malformed number near '3e'`},
		{`x = '\xz'`, `[string "x = '\xz'"]:1: hexadecimal digit expected near '\xz'`},
		{`x = '\x1'`, `[string "x = '\x1'"]:1: hexadecimal digit expected near '\x1''`},
		{"x = 'alo", `[string "x = 'alo"]:1: unfinished string near <eof>`},
		{"x = 'alo\n'", `[string "x = 'alo..."]:1: unfinished string near ''alo'`},
		{"x = [=x]", `[string "x = [=x]"]:1: invalid long string delimiter near '[='`},
		{"x = = 0x10", `[string "x = = 0x10"]:1: unexpected symbol near '='`},
		{"f(0x10 0x20)", `[string "f(0x10 0x20)"]:1: ')' expected near '0x20'`},
		{"x = \x01", `[string "x = ` + "\x01" + `"]:1: unexpected symbol near char(1)`},
		{"x = 1..2", `[string "x = 1..2"]:1: malformed number near '1..2'`},
		{"x = 12abc", `[string "x = 12abc"]:1: malformed number near '12abc'`},
		{"x = 1e5e3", `[string "x = 1e5e3"]:1: malformed number near '1e5e3'`},
		{"x = 0x1p+", `[string "x = 0x1p+"]:1: malformed number near '0x1p+'`},
		{"return 0x1g", `[string "return 0x1g"]:1: <eof> expected near 'g'`},
	} {
		if got := errmsgOf(t, c.code); got != c.want {
			t.Errorf("%q\n got: %s\nwant: %s", c.code, got, c.want)
		}
	}
}

// Numerals are read greedily but valued as before (and as lua5.2 values them).
func TestNumeralValues(t *testing.T) {
	for _, c := range []struct {
		text string
		want float64
	}{
		{"1.", 1}, {".5", 0.5}, {"010", 10}, {"0e12", 0}, {"1e-400", 0}, {"0x10", 16},
		{"0xA23p-4", 162.1875}, {"0x.8", 0.5}, {"0x1.", 1}, {"0X1.921FB54442D18P+1", 3.141592653589793},
		{"1e+5", 100000}, {"5E-2", 0.05}, {"0x1P4", 16}, {"9007199254740993", 9007199254740992},
	} {
		l := errmsgState()
		if err := DoString(l, "return "+c.text); err != nil {
			t.Errorf("%s: %v", c.text, err)
			continue
		}
		if n, _ := l.ToNumber(-1); n != c.want {
			t.Errorf("%s = %v, want %v", c.text, n, c.want)
		}
	}
	l := errmsgState()
	if err := DoString(l, "return 1e400"); err != nil {
		t.Fatal(err)
	}
	if n, _ := l.ToNumber(-1); !math.IsInf(n, 1) {
		t.Errorf("1e400 = %v, want +Inf (strtod's overflow value)", n)
	}
}

func TestChunkID(t *testing.T) {
	long := strings.Repeat("x", 70)
	for _, c := range []struct{ source, want string }{
		{"=name", "name"},
		{"=" + long, long[:59]},
		{"@file.lua", "file.lua"},
		{"@" + long + "end", "..." + (long + "end")[73-56:]},
		{"short", `[string "short"]`},
		{strings.Repeat("y", 44), `[string "` + strings.Repeat("y", 44) + `"]`},
		{strings.Repeat("y", 45), `[string "` + strings.Repeat("y", 45) + `..."]`},
		{strings.Repeat("y", 50), `[string "` + strings.Repeat("y", 45) + `..."]`},
		{"line one\nline two", `[string "line one..."]`},
	} {
		if got := chunkID(c.source); got != c.want {
			t.Errorf("chunkID(%q) = %q, want %q", c.source, got, c.want)
		}
		if len(chunkID(c.source)) > idSize-1 {
			t.Errorf("chunkID(%q) is longer than LUA_IDSIZE-1", c.source)
		}
	}
}

// A huge global table does not make the search for a Go function's name
// walk all of it: the search stops after maxFindFieldEntries entries.
func TestGlobalFunctionNameSearchBounded(t *testing.T) {
	l := errmsgState()
	if err := DoString(l, "for i = 1, 5000 do _G['g' .. i] = {} end"); err != nil {
		t.Fatal(err)
	}
	l.Global("setmetatable")
	l.PushString("x")
	if err := l.ProtectedCall(1, 0, 0); err == nil {
		t.Fatal("no error")
	}
	if got, _ := l.ToString(-1); !strings.HasPrefix(got, "bad argument #1 to '") {
		t.Fatalf("got %q", got)
	}
}

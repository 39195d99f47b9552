package luastd

import "testing"

// string.rep/char/reverse/lower/upper cases and method-call visibility.
var stringCases = []luaCase{
	{code: `return string.rep("ab", 3)`, want: `"ababab"`},
	{code: `return string.rep("ab", 3, ",")`, want: `"ab,ab,ab"`},
	{code: `return string.rep("ab", 1, ",")`, want: `"ab"`},
	{code: `return string.rep("ab", 0, ",")`, want: `""`},
	{code: `return string.rep("ab", -1)`, want: `""`},
	{code: `return string.rep("", 5)`, want: `""`},
	{code: `return string.rep("", 5, "-")`, want: `"----"`},
	{code: `return string.rep("x", 2.7)`, want: `"xx"`},
	{code: `return ("x"):rep(3, "y")`, want: `"xyxyx"`},
	{code: `return #string.rep("abc", 1000)`, want: `3000`},
	{code: `return string.rep("x")`, want: "error: case:1: bad argument #2 to 'rep' (number expected, got no value)"},
	{code: `return string.rep()`, want: "error: case:1: bad argument #1 to 'rep' (string expected, got no value)"},
	{code: `return string.rep(5, 2)`, want: `"55"`},
	{code: `return string.char(72, 105)`, want: `"Hi"`},
	{code: `return string.char()`, want: `""`},
	{code: `return string.char(256)`, want: "error: case:1: bad argument #1 to 'char' (value out of range)"},
	{code: `return string.char(65, -1)`, want: "error: case:1: bad argument #2 to 'char' (value out of range)"},
	{code: `return string.char(0):byte()`, want: `0`},
	{code: `return string.char(255):byte()`, want: `255`},
	{code: `return string.reverse("abc")`, want: `"cba"`},
	{code: `return string.reverse("")`, want: `""`},
	{code: `return string.reverse("\195\169x"):byte(1, -1)`, want: `120, 169, 195`},
	{code: `return string.lower("HeLLo 123")`, want: `"hello 123"`},
	{code: `return string.upper("HeLLo 123")`, want: `"HELLO 123"`},
	{code: `return string.upper("\195\169") == "\195\169"`, want: `true`},
	{code: `return string.lower("\255\200ABC"):byte(1, -1)`, want: `255, 200, 97, 98, 99`},
	{code: `return ("abc"):upper()`, want: `"ABC"`},
	{code: `return ("a,b"):gsub(",", ";")`, want: `"a;b", 1`},
	{code: `local s = "x=1" return s:match("(%w)=(%d)")`, want: `"x", "1"`},
	{code: `local s = "abc" for w in s:gmatch(".") do return w end`, want: `"a"`},
	{code: `return ("%d"):format(7)`, want: `"7"`},
	{code: `return ("%s"):rep(2, "|")`, want: `"%s|%s"`},
	{code: `return ("abc"):len(), ("abc"):sub(2), ("abc"):byte(1)`, want: `3, "bc", 97`},
	{code: `return getmetatable("").__index == string`, want: `true`},
	{code: `return string.find == ("").find and string.gsub == ("").gsub`, want: `true`},
}

func TestString(t *testing.T) { runCases(t, stringCases) }

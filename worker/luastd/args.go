package luastd

import (
	lua "github.com/Shopify/go-lua"
)

// Argument checks that name the function in their errors ("bad argument
// #1 to 'find' (string expected, got nil)"). They raise lua.ArgumentError,
// which takes the name from the calling instruction as luaL_argerror does
// ("calling 'rep' on bad self", self not counted in method calls); fn, the
// function's own name, documents the call sites only.

func argError(l *lua.State, i int, fn, msg string) {
	_ = fn
	lua.ArgumentError(l, i, msg)
}

func argCheck(l *lua.State, ok bool, i int, fn, msg string) {
	if !ok {
		argError(l, i, fn, msg)
	}
}

func typeError(l *lua.State, i int, fn, want string) {
	argError(l, i, fn, want+" expected, got "+lua.TypeNameOf(l, i))
}

func checkString(l *lua.State, i int, fn string) string {
	s, ok := l.ToString(i)
	if !ok {
		typeError(l, i, fn, "string")
	}
	return s
}

func optString(l *lua.State, i int, fn, def string) string {
	if l.IsNoneOrNil(i) {
		return def
	}
	return checkString(l, i, fn)
}

func checkNumber(l *lua.State, i int, fn string) float64 {
	n, ok := l.ToNumber(i)
	if !ok {
		typeError(l, i, fn, "number")
	}
	return n
}

// checkInt reads an integer argument, truncating like a C cast but
// clamped to ±2^53 so that huge or NaN numbers do not wrap around.
func checkInt(l *lua.State, i int, fn string) int {
	n := checkNumber(l, i, fn)
	const bound = 1 << 53
	switch {
	case n != n:
		return 0
	case n > bound:
		return bound
	case n < -bound:
		return -bound
	}
	return int(n)
}

func optInt(l *lua.State, i int, fn string, def int) int {
	if l.IsNoneOrNil(i) {
		return def
	}
	return checkInt(l, i, fn)
}

func checkTable(l *lua.State, i int, fn string) {
	if !l.IsTable(i) {
		typeError(l, i, fn, "table")
	}
}

package luastd

import (
	"strings"

	lua "github.com/Shopify/go-lua"
)

// The simple string functions go-lua gets wrong for Lua 5.2 (it works on
// runes and Unicode case where Lua works on bytes in the C locale) or
// does not cap: string.rep, string.char, string.reverse, string.lower,
// string.upper.

// rep implements string.rep(s, n [, sep]).
func (lib *library) rep(l *lua.State) int {
	s := checkString(l, 1, "rep")
	n := checkInt(l, 2, "rep")
	sep := optString(l, 3, "rep", "")
	unit := len(s) + len(sep)
	if n <= 0 || unit == 0 {
		l.PushString("")
		return 1
	}

	if unit > 0 && n > (maxLen+len(sep))/unit {
		if lib.limits(l).MaxString > 0 {
			lib.limits(l).tooLong(l)
		}
		lua.Errorf(l, "resulting string too large")
	}
	total := n*unit - len(sep)
	lib.limits(l).checkLen(l, total)
	b := lib.limits(l).budget(l)
	out := make([]byte, 0, total)
	for i := 0; i < n; i++ {
		if i > 0 {
			out = append(out, sep...)
		}
		out = append(out, s...)
		b.step(1 + unit/64)
	}
	b.flush()
	l.PushString(string(out))
	return 1
}

// maxLen bounds the strings this package builds even without a
// MaxString limit (like Lua's MAX_SIZET checks).
const maxLen = 1<<31 - 1

// chargeBytes charges n bytes of simple string work (a copy, a case
// change) to the call's budget before it is done.
func (lib *library) chargeBytes(l *lua.State, n int) {
	b := lib.limits(l).budget(l)
	b.step(1 + n/64)
	b.flush()
}

// char implements string.char(...).
func (lib *library) char(l *lua.State) int {
	n := l.Top()
	lib.limits(l).checkLen(l, n)
	lib.chargeBytes(l, 16*n)
	out := make([]byte, n)
	for i := 1; i <= n; i++ {
		c := checkInt(l, i, "char")
		argCheck(l, 0 <= c && c <= 255, i, "char", "value out of range")
		out[i-1] = byte(c)
	}
	l.PushString(string(out))
	return 1
}

// reverse implements string.reverse(s) on bytes.
func (lib *library) reverse(l *lua.State) int {
	s := checkString(l, 1, "reverse")
	lib.chargeBytes(l, len(s))
	out := make([]byte, len(s))
	for i := 0; i < len(s); i++ {
		out[len(s)-1-i] = s[i]
	}
	l.PushString(string(out))
	return 1
}

// lower implements string.lower(s) for ASCII letters only (C locale).
func (lib *library) lower(l *lua.State) int {
	s := []byte(checkString(l, 1, "lower"))
	lib.chargeBytes(l, len(s))
	for i, c := range s {
		if 'A' <= c && c <= 'Z' {
			s[i] = c + 'a' - 'A'
		}
	}
	l.PushString(string(s))
	return 1
}

// upper implements string.upper(s) for ASCII letters only (C locale).
func (lib *library) upper(l *lua.State) int {
	s := []byte(checkString(l, 1, "upper"))
	lib.chargeBytes(l, len(s))
	for i, c := range s {
		if 'a' <= c && c <= 'z' {
			s[i] = c - 'a' + 'A'
		}
	}
	l.PushString(string(s))
	return 1
}

// byte implements string.byte(s [, i [, j]]), charging one step per value
// pushed.
func (lib *library) byte(l *lua.State) int {
	s := checkString(l, 1, "byte")
	start := posRelative(optInt(l, 2, "byte", 1), len(s))
	end := posRelative(optInt(l, 3, "byte", start), len(s))
	start = max(start, 1)
	end = min(end, len(s))
	if start > end {
		return 0
	}
	n := end - start + 1
	lib.reserveResults(l, n, "string slice too long")
	for _, c := range []byte(s[start-1 : end]) {
		l.PushInteger(int(c))
	}
	return n
}

// sub implements string.sub(s, i [, j]). Like the patched go-lua's, it
// copies a substring shorter than half of a source longer than 64 bytes
// (so that it cannot keep the source alive unseen by the memory limit);
// that copy is charged.
func (lib *library) sub(l *lua.State) int {
	s := checkString(l, 1, "sub")
	start := posRelative(checkInt(l, 2, "sub"), len(s))
	end := posRelative(optInt(l, 3, "sub", -1), len(s))
	start = max(start, 1)
	end = min(end, len(s))
	if start > end {
		l.PushString("")
		return 1
	}
	r := s[start-1 : end]
	if len(s) > 64 && 2*len(r) < len(s) {
		lib.chargeBytes(l, len(r))
		r = strings.Clone(r)
	}
	l.PushString(r)
	return 1
}

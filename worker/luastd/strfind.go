package luastd

import (
	"strings"

	lua "github.com/Shopify/go-lua"
)

// Bindings of the pattern matcher: string.find, string.match,
// string.gmatch and string.gsub (reference manual §6.4).

// posRelative converts a possibly negative string position to an
// absolute one (0 when it falls before the start).
func posRelative(pos, n int) int {
	if pos >= 0 {
		return pos
	}
	if -pos > n {
		return 0
	}
	return n + pos + 1
}

func (lib *library) find(l *lua.State) int  { return lib.findAux(l, true, "find") }
func (lib *library) match(l *lua.State) int { return lib.findAux(l, false, "match") }

func (lib *library) findAux(l *lua.State, find bool, fn string) int {
	src := checkString(l, 1, fn)
	pat := checkString(l, 2, fn)
	init := posRelative(optInt(l, 3, fn, 1), len(src))
	if init < 1 {
		init = 1
	} else if init > len(src)+1 {
		l.PushNil()
		return 1
	}
	if find && (l.ToBoolean(4) || !strings.ContainsAny(pat, patternSpecial)) {
		b := lib.limits(l).budget(l)
		b.step(len(src) - init + 1)
		b.flush()
		if i := strings.Index(src[init-1:], pat); i >= 0 {
			l.PushInteger(init + i)
			l.PushInteger(init + i + len(pat) - 1)
			return 2
		}
		l.PushNil()
		return 1
	}
	b := lib.limits(l).budget(l)
	m := newMatcher(l, src, pat, &b)
	p := 0
	anchor := len(pat) > 0 && pat[0] == '^'
	if anchor {
		p = 1
	}
	for s := init - 1; s <= len(src); s++ {
		m.reset()
		if e := m.match(s, p); e != -1 {
			b.flush()
			if find {
				l.PushInteger(s + 1)
				l.PushInteger(e)
				return m.pushCaptures(-1, -1, false) + 2
			}
			return m.pushCaptures(s, e, true)
		}
		if anchor {
			break
		}
	}
	b.flush()
	l.PushNil()
	return 1
}

// gmatch returns an iterator over the matches of the pattern; as in Lua
// 5.2 a leading '^' is not an anchor here.
func (lib *library) gmatch(l *lua.State) int {
	src := checkString(l, 1, "gmatch")
	pat := checkString(l, 2, "gmatch")
	pos := 0
	l.PushGoFunction(func(l *lua.State) int {
		b := lib.limits(l).budget(l)
		m := newMatcher(l, src, pat, &b)
		for s := pos; s <= len(src); s++ {
			m.reset()
			if e := m.match(s, 0); e != -1 {
				b.flush()
				pos = e
				if e == s {
					pos++ // empty match: advance at least one position
				}
				return m.pushCaptures(s, e, true)
			}
		}
		b.flush()
		pos = len(src) + 1
		return 0
	})
	return 1
}

// gsub implements string.gsub(s, pattern, repl [, n]).
func (lib *library) gsub(l *lua.State) int {
	src := checkString(l, 1, "gsub")
	pat := checkString(l, 2, "gsub")
	tr := l.TypeOf(3)
	maxN := optInt(l, 4, "gsub", len(src)+1)
	argCheck(l, tr == lua.TypeNumber || tr == lua.TypeString ||
		tr == lua.TypeFunction || tr == lua.TypeTable, 3, "gsub", "string/function/table expected")
	var repl string
	if tr == lua.TypeNumber || tr == lua.TypeString {
		repl, _ = l.ToString(3)
	}
	b := lib.limits(l).budget(l)
	m := newMatcher(l, src, pat, &b)
	p := 0
	anchor := len(pat) > 0 && pat[0] == '^'
	if anchor {
		p = 1
	}
	var out []byte
	n := 0
	s := 0
	if maxN < 0 {
		maxN = len(src) + 1 // Lua 5.2 reads n as a size_t: negative means no limit
	}
	for n < maxN {

		m.reset()
		e := m.match(s, p)
		if e != -1 {
			n++
			out = lib.addValue(m, out, s, e, tr, repl)
		}
		switch {
		case e != -1 && e > s:
			s = e
		case s < len(src):
			out = append(out, src[s])
			s++
		default:
			s = len(src) + 1
		}
		lib.limits(l).checkLen(l, len(out))
		if s > len(src) || anchor {
			break
		}
	}
	if s < len(src) {
		lib.limits(l).checkLen(l, len(out)+len(src)-s)
		out = append(out, src[s:]...)
	}
	b.flush()
	l.PushString(string(out))
	l.PushInteger(n)
	return 2
}

// addValue appends the replacement for the match src[s:e] to out.
func (lib *library) addValue(m *matcher, out []byte, s, e int, tr lua.Type, repl string) []byte {
	l := m.l
	switch tr {
	case lua.TypeFunction:
		l.PushValue(3)
		n := m.pushCaptures(s, e, true)
		l.Call(n, 1)
	case lua.TypeTable:
		m.pushCapture(0, s, e)
		l.Table(3)
	default:
		return lib.addString(m, out, s, e, repl)
	}
	if !l.ToBoolean(-1) {
		l.Pop(1)
		return append(out, m.src[s:e]...) // keep the original text
	}
	if t := l.TypeOf(-1); t != lua.TypeString && t != lua.TypeNumber {
		lua.Errorf(l, "invalid replacement value (a %s)", t.String())
	}
	v, _ := l.ToString(-1)
	l.Pop(1)
	lib.limits(l).checkLen(l, len(out)+len(v))
	return append(out, v...)
}

// addString appends the string replacement repl with its %0-%9 and %%
// escapes expanded.
func (lib *library) addString(m *matcher, out []byte, s, e int, repl string) []byte {
	l := m.l
	for i := 0; i < len(repl); i++ {
		c := repl[i]
		if c != escape {
			out = append(out, c)
			continue
		}
		i++
		if i >= len(repl) || (repl[i] != escape && (repl[i] < '0' || repl[i] > '9')) {
			lua.Errorf(l, "invalid use of '%s' in replacement string", "%")
		}
		switch d := repl[i]; {
		case d == escape:
			out = append(out, escape)
		case d == '0':
			out = append(out, m.src[s:e]...)
		default:
			m.pushCapture(int(d-'1'), s, e)
			v, _ := l.ToString(-1)
			out = append(out, v...)
			l.Pop(1)
		}
		lib.limits(l).checkLen(l, len(out))
	}
	m.b.step(len(repl))
	return out
}

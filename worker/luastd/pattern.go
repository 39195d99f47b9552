package luastd

import (
	"fmt"

	lua "github.com/Shopify/go-lua"
)

// The Lua 5.2 pattern matcher (reference manual §6.4.1), written as a
// backtracking matcher over byte indices. Recursion is bounded by
// maxMatchDepth and every character test and backtrack is charged to the
// call's budget, so a pathological pattern ends with the budget's error
// instead of running unbounded.

const (
	escape         = '%'
	maxCaptures    = 32  // LUA_MAXCAPTURES
	maxMatchDepth  = 200 // like Lua 5.3's MAXCCALLS
	capUnfinished  = -1
	capPosition    = -2
	patternSpecial = "^$*+?.([%-"
)

type capture struct {
	init int // index into src
	len  int // length, capUnfinished or capPosition
}

// matcher holds the state of one match attempt.
type matcher struct {
	l       *lua.State
	src     string
	pat     string
	level   int // number of captures (finished or not)
	depth   int // remaining recursion depth
	capture [maxCaptures]capture
	b       *budget
}

func newMatcher(l *lua.State, src, pat string, b *budget) *matcher {
	return &matcher{l: l, src: src, pat: pat, b: b}
}

// reset prepares the matcher for a new attempt.
func (m *matcher) reset() {
	m.level = 0
	m.depth = maxMatchDepth
}

func (m *matcher) errorf(format string, args ...any) {
	lua.Errorf(m.l, "%s", fmt.Sprintf(format, args...))
}

// classEnd returns the index just after the single-character class
// starting at p.
func (m *matcher) classEnd(p int) int {
	pat := m.pat
	c := pat[p]
	p++
	switch c {
	case escape:
		if p >= len(pat) {
			m.errorf("malformed pattern (ends with '%%')")
		}
		return p + 1
	case '[':
		if p < len(pat) && pat[p] == '^' {
			p++
		}
		// The first character after '[' or '[^' is part of the set even
		// when it is ']'.
		for {
			if p >= len(pat) {
				m.errorf("malformed pattern (missing ']')")
			}
			c := pat[p]
			p++
			if c == escape && p < len(pat) {
				p++
			}
			if p < len(pat) && pat[p] == ']' {
				return p + 1
			}
		}
	}
	return p
}

// matchClass reports whether c belongs to the class %cl (ASCII, C locale).
func matchClass(c, cl byte) bool {
	var res bool
	switch cl | 0x20 {
	case 'a':
		res = isAlpha(c)
	case 'c':
		res = c < 0x20 || c == 0x7f
	case 'd':
		res = '0' <= c && c <= '9'
	case 'g':
		res = 0x21 <= c && c <= 0x7e
	case 'l':
		res = 'a' <= c && c <= 'z'
	case 'p':
		res = isPunct(c)
	case 's':
		res = c == ' ' || ('\t' <= c && c <= '\r')
	case 'u':
		res = 'A' <= c && c <= 'Z'
	case 'w':
		res = isAlpha(c) || ('0' <= c && c <= '9')
	case 'z':
		res = c == 0 // deprecated in Lua 5.2, still accepted
	case 'x':
		res = ('0' <= c && c <= '9') || ('a' <= c|0x20 && c|0x20 <= 'f')
	default:
		return cl == c
	}
	if 'A' <= cl && cl <= 'Z' {
		return !res
	}
	return res
}

func isAlpha(c byte) bool { return 'a' <= c|0x20 && c|0x20 <= 'z' }

func isPunct(c byte) bool {
	return 0x21 <= c && c <= 0x7e && !isAlpha(c) && !('0' <= c && c <= '9')
}

// matchBracket reports whether c belongs to the set pat[p:ec+1], where
// pat[p] is '[' and pat[ec] is the closing ']'.
func (m *matcher) matchBracket(c byte, p, ec int) bool {
	pat := m.pat
	sig := true
	p++
	if pat[p] == '^' {
		sig = false
		p++
	}
	for ; p < ec; p++ {
		switch {
		case pat[p] == escape:
			p++
			if matchClass(c, pat[p]) {
				return sig
			}
		case pat[p+1] == '-' && p+2 < ec:
			if pat[p] <= c && c <= pat[p+2] {
				return sig
			}
			p += 2
		case pat[p] == c:
			return sig
		}
	}
	return !sig
}

// singleMatch reports whether src[s] matches the class pat[p:ep].
func (m *matcher) singleMatch(s, p, ep int) bool {
	if s >= len(m.src) {
		return false
	}
	c := m.src[s]
	switch m.pat[p] {
	case '.':
		return true
	case escape:
		return matchClass(c, m.pat[p+1])
	case '[':
		return m.matchBracket(c, p, ep-1)
	}
	return m.pat[p] == c
}

// match matches pat[p:] at src[s:] and returns the end of the match or -1.
func (m *matcher) match(s, p int) int {
	if m.depth == 0 {
		m.errorf("pattern too complex")
	}
	m.depth--
	r := m.doMatch(s, p)
	m.depth++
	return r
}

func (m *matcher) doMatch(s, p int) int {
	pat := m.pat
	for {
		m.b.step(1)
		if p == len(pat) {
			return s
		}
		switch pat[p] {
		case '(':
			if p+1 < len(pat) && pat[p+1] == ')' {
				return m.startCapture(s, p+2, capPosition)
			}
			return m.startCapture(s, p+1, capUnfinished)
		case ')':
			return m.endCapture(s, p+1)
		case '$':
			if p+1 == len(pat) {
				if s == len(m.src) {
					return s
				}
				return -1
			}
		case escape:
			if p+1 < len(pat) {
				switch c := pat[p+1]; {
				case c == 'b':
					s = m.matchBalance(s, p+2)
					if s == -1 {
						return -1
					}
					p += 4
					continue
				case c == 'f':
					p += 2
					if p >= len(pat) || pat[p] != '[' {
						m.errorf("missing '[' after '%%f' in pattern")
					}
					ep := m.classEnd(p)
					var prev, cur byte
					if s > 0 {
						prev = m.src[s-1]
					}
					if s < len(m.src) {
						cur = m.src[s]
					}
					if m.matchBracket(prev, p, ep-1) || !m.matchBracket(cur, p, ep-1) {
						return -1
					}
					p = ep
					continue
				case '0' <= c && c <= '9':
					s = m.matchCapture(s, c)
					if s == -1 {
						return -1
					}
					p += 2
					continue
				}
			}
		}
		// A single-character class, maybe followed by a quantifier.
		ep := m.classEnd(p)
		var q byte
		if ep < len(pat) {
			q = pat[ep]
		}
		if !m.singleMatch(s, p, ep) {
			if q == '*' || q == '?' || q == '-' {
				p = ep + 1 // the empty match is acceptable
				continue
			}
			return -1
		}
		switch q {
		case '?':
			if r := m.match(s+1, ep+1); r != -1 {
				return r
			}
			p = ep + 1
		case '+':
			return m.maxExpand(s+1, p, ep)
		case '*':
			return m.maxExpand(s, p, ep)
		case '-':
			return m.minExpand(s, p, ep)
		default:
			s++
			p = ep
		}
	}
}

// maxExpand matches as many repetitions of pat[p:ep] as possible, then
// backtracks until the rest of the pattern matches.
func (m *matcher) maxExpand(s, p, ep int) int {
	i := 0
	for m.singleMatch(s+i, p, ep) {
		i++
		m.b.step(1)
	}
	for ; i >= 0; i-- {
		if r := m.match(s+i, ep+1); r != -1 {
			return r
		}
	}
	return -1
}

// minExpand matches as few repetitions of pat[p:ep] as possible.
func (m *matcher) minExpand(s, p, ep int) int {
	for {
		if r := m.match(s, ep+1); r != -1 {
			return r
		}
		if !m.singleMatch(s, p, ep) {
			return -1
		}
		s++
	}
}

func (m *matcher) startCapture(s, p, what int) int {
	if m.level >= maxCaptures {
		m.errorf("too many captures")
	}
	m.capture[m.level] = capture{init: s, len: what}
	m.level++
	r := m.match(s, p)
	if r == -1 {
		m.level--
	}
	return r
}

func (m *matcher) endCapture(s, p int) int {
	l := m.captureToClose()
	m.capture[l].len = s - m.capture[l].init
	r := m.match(s, p)
	if r == -1 {
		m.capture[l].len = capUnfinished
	}
	return r
}

func (m *matcher) captureToClose() int {
	for l := m.level - 1; l >= 0; l-- {
		if m.capture[l].len == capUnfinished {
			return l
		}
	}
	m.errorf("invalid pattern capture")
	return 0
}

// matchBalance implements %bxy at src[s:]; p indexes x.
func (m *matcher) matchBalance(s, p int) int {
	if p+1 >= len(m.pat) {
		m.errorf("malformed pattern (missing arguments to '%%b')")
	}
	if s >= len(m.src) || m.src[s] != m.pat[p] {
		return -1
	}
	b, e := m.pat[p], m.pat[p+1]
	depth := 1
	for s++; s < len(m.src); s++ {
		m.b.step(1)
		switch m.src[s] {
		case e:
			if depth--; depth == 0 {
				return s + 1
			}
		case b:
			depth++
		}
	}
	return -1
}

// matchCapture implements the back-reference %1-%9 at src[s:].
func (m *matcher) matchCapture(s int, c byte) int {
	l := int(c) - '1'
	if l < 0 || l >= m.level || m.capture[l].len == capUnfinished {
		m.errorf("invalid capture index %%%d", l+1)
	}
	cp := m.capture[l]
	n := cp.len
	if n < 0 {
		return -1 // a position capture never matches, as in Lua
	}
	m.b.step(n)
	if len(m.src)-s >= n && m.src[cp.init:cp.init+n] == m.src[s:s+n] {
		return s + n
	}
	return -1
}

// pushCapture pushes capture i of the match src[s:e]; with no captures,
// capture 0 is the whole match.
func (m *matcher) pushCapture(i, s, e int) {
	if i >= m.level {
		if i != 0 {
			m.errorf("invalid capture index")
		}
		m.l.PushString(m.src[s:e])
		return
	}
	cp := m.capture[i]
	switch cp.len {
	case capUnfinished:
		m.errorf("unfinished capture")
	case capPosition:
		m.l.PushInteger(cp.init + 1)
	default:
		m.l.PushString(m.src[cp.init : cp.init+cp.len])
	}
}

// pushCaptures pushes all captures of the match src[s:e] (the whole match
// when there are none and whole is true) and returns their number.
func (m *matcher) pushCaptures(s, e int, whole bool) int {
	n := m.level
	if n == 0 && whole {
		n = 1
	}
	lua.CheckStackWithMessage(m.l, n, "too many captures")
	for i := 0; i < n; i++ {
		m.pushCapture(i, s, e)
	}
	return n
}

package luastd

import (
	"math"
	"strconv"
	"strings"

	lua "github.com/Shopify/go-lua"
)

// string.format as Lua 5.2 defines it: ISO C sprintf conversions with
// flags "-+ #0", at most two digits of width and of precision, plus %q.

const formatFlags = "-+ #0"

// format implements string.format(fmt, ...).
func (lib *library) format(l *lua.State) int {
	fs := checkString(l, 1, "format")
	top := l.Top()
	arg := 1
	var out []byte
	b := lib.limits(l).budget(l)
	for i := 0; i < len(fs); {
		c := fs[i]
		i++
		if c != '%' {
			out = append(out, c)
			b.step(1)
			continue
		}
		if i < len(fs) && fs[i] == '%' {
			out = append(out, '%')
			i++
			continue
		}
		arg++
		if arg > top {
			argError(l, arg, "format", "no value")
		}
		var sp spec
		i = scanSpec(l, fs, i, &sp)
		piece := lib.formatOne(l, arg, &sp)
		b.step(1 + len(piece)/16)
		out = append(out, piece...)
		lib.limits(l).checkLen(l, len(out))
	}
	b.flush()
	l.PushString(string(out))
	return 1
}

// scanSpec parses the conversion specification starting at fs[i] (just
// after the '%') into sp and returns the index after it.
func scanSpec(l *lua.State, fs string, i int, sp *spec) int {
	start := i
	for i < len(fs) && strings.IndexByte(formatFlags, fs[i]) >= 0 {
		switch fs[i] {
		case '-':
			sp.minus = true
		case '+':
			sp.plus = true
		case ' ':
			sp.space = true
		case '#':
			sp.hash = true
		case '0':
			sp.zero = true
		}
		i++
	}
	if i-start > len(formatFlags) {
		lua.Errorf(l, "invalid format (repeated flags)")
	}
	digits := func() int {
		n := 0
		for k := 0; k < 2 && i < len(fs) && isDigit(fs[i]); k++ {
			n = n*10 + int(fs[i]-'0')
			i++
		}
		return n
	}
	sp.width = digits()
	sp.prec = -1
	if i < len(fs) && fs[i] == '.' {
		i++
		sp.prec = digits()
	}
	if i < len(fs) && isDigit(fs[i]) {
		lua.Errorf(l, "invalid format (width or precision too long)")
	}
	if i < len(fs) {
		sp.conv = fs[i]
		i++
	}
	return i
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// formatOne formats argument arg according to sp.
func (lib *library) formatOne(l *lua.State, arg int, sp *spec) string {
	switch sp.conv {
	case 'c':
		return sp.pad("", string([]byte{byte(checkInt(l, arg, "format"))}), false)
	case 'd', 'i':
		n := checkNumber(l, arg, "format")
		v := cToInt64(n)
		if d := n - float64(v); !(-1 < d && d < 1) {
			argError(l, arg, "format", "not a number in proper range")
		}
		return sp.formatInt(v)
	case 'o', 'u', 'x', 'X':
		n := checkNumber(l, arg, "format")
		if !(n > -1 && n < 1<<64) {
			argError(l, arg, "format", "not a non-negative number in proper range")
		}
		var v uint64
		if n > 0 {
			v = uint64(n)
		}
		return sp.formatUint(v)
	case 'e', 'E', 'f', 'g', 'G', 'a', 'A':

		return sp.formatFloat(checkNumber(l, arg, "format"))
	case 'q':
		return quoteString(checkString(l, arg, "format"))
	case 's':
		s, _ := lua.ToStringMeta(l, arg)
		l.Pop(1)
		if sp.prec < 0 && len(s) >= 100 {
			return s // no precision and long: kept as is, like Lua
		}
		if sp.prec >= 0 && len(s) > sp.prec {
			s = s[:sp.prec]
		}
		return sp.pad("", s, false)
	}
	// A specification cut short by the end of the format reports the
	// NUL that C finds there, as the reference interpreter does.
	lua.Errorf(l, "invalid option '%s' to 'format'", string([]byte{'%', sp.conv}))
	panic("unreachable")
}

// cToInt64 converts like a C cast on x86-64: out-of-range values and NaN
// become math.MinInt64.
func cToInt64(n float64) int64 {
	if n != n || n >= 1<<63 || n < -(1<<63) {
		return math.MinInt64
	}
	return int64(n)
}

// quoteString implements %q: a string literal that reads back as s.
func quoteString(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\' || c == '\n':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c == 0x7f:
			b.WriteByte('\\')
			if i+1 < len(s) && isDigit(s[i+1]) {
				b.WriteString(leftZeros(strconv.Itoa(int(c)), 3))
			} else {
				b.WriteString(strconv.Itoa(int(c)))
			}
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func leftZeros(s string, n int) string {
	if len(s) >= n {
		return s
	}
	return strings.Repeat("0", n-len(s)) + s
}

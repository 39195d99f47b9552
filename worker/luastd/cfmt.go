package luastd

import (
	"math"
	"strconv"
	"strings"
)

// A C printf emulation for one conversion, as glibc formats it: the
// behaviour string.format inherits from sprintf in the reference
// interpreter.

// spec is one parsed conversion specification.
type spec struct {
	minus, plus, space, hash, zero bool
	width                          int
	prec                           int // -1 when absent
	conv                           byte
}

// pad applies the width to body, which starts with prefix (sign and
// radix prefix) that zero padding must follow.
func (sp *spec) pad(prefix, body string, zeroOK bool) string {
	n := len(prefix) + len(body)
	if n >= sp.width {
		return prefix + body
	}
	fill := sp.width - n
	switch {
	case sp.minus:
		return prefix + body + strings.Repeat(" ", fill)
	case sp.zero && zeroOK:
		return prefix + strings.Repeat("0", fill) + body
	}
	return strings.Repeat(" ", fill) + prefix + body
}

func (sp *spec) sign(neg bool) string {
	switch {
	case neg:
		return "-"
	case sp.plus:
		return "+"
	case sp.space:
		return " "
	}
	return ""
}

// formatInt formats v for %d and %i.
func (sp *spec) formatInt(v int64) string {
	neg := v < 0
	u := uint64(v)
	if neg {
		u = -u
	}
	digits := sp.digits(strconv.FormatUint(u, 10), u == 0)
	return sp.pad(sp.sign(neg), digits, sp.prec < 0)
}

// digits applies the precision (minimum digit count) to an integer.
func (sp *spec) digits(d string, zero bool) string {
	if sp.prec == 0 && zero {
		return ""
	}
	if len(d) < sp.prec {
		d = strings.Repeat("0", sp.prec-len(d)) + d
	}
	return d
}

// formatUint formats v for %o, %u, %x and %X.
func (sp *spec) formatUint(v uint64) string {
	var d, prefix string
	switch sp.conv {
	case 'o':
		d = sp.digits(strconv.FormatUint(v, 8), v == 0)
		if sp.hash && (d == "" || d[0] != '0') {
			d = "0" + d
		}
	case 'x', 'X':
		d = sp.digits(strconv.FormatUint(v, 16), v == 0)
		if sp.hash && v != 0 {
			prefix = "0x"
		}
		if sp.conv == 'X' {
			d, prefix = strings.ToUpper(d), strings.ToUpper(prefix)
		}
	default:
		d = sp.digits(strconv.FormatUint(v, 10), v == 0)
	}
	return sp.pad(prefix, d, sp.prec < 0)
}

// formatFloat formats v for %e %E %f %F %g %G %a %A.
func (sp *spec) formatFloat(v float64) string {
	neg := math.Signbit(v)
	upper := sp.conv >= 'A' && sp.conv <= 'Z'
	if math.IsInf(v, 0) || math.IsNaN(v) {
		body := "inf"
		if math.IsNaN(v) {
			body = "nan"
		}
		if upper {
			body = strings.ToUpper(body)
		}
		return sp.pad(sp.sign(neg), body, false)
	}
	a := math.Abs(v)
	var body string
	prefix := sp.sign(neg)
	switch sp.conv | 0x20 {
	case 'f':
		body = sp.fixed(a, sp.precOr(6))
	case 'e':
		body = sp.exp(a, sp.precOr(6))
	case 'g':
		body = sp.general(a)
	case 'a':
		prefix += "0x"
		body = sp.hex(a)
	}
	if upper {
		prefix, body = strings.ToUpper(prefix), strings.ToUpper(body)
	}
	return sp.pad(prefix, body, true)
}

func (sp *spec) precOr(def int) int {
	if sp.prec < 0 {
		return def
	}
	return sp.prec
}

func (sp *spec) fixed(a float64, prec int) string {
	s := strconv.FormatFloat(a, 'f', prec, 64)
	if sp.hash && prec == 0 {
		s += "."
	}
	return s
}

func (sp *spec) exp(a float64, prec int) string {
	s := strconv.FormatFloat(a, 'e', prec, 64)
	if sp.hash && prec == 0 {
		i := strings.IndexByte(s, 'e')
		s = s[:i] + "." + s[i:]
	}
	return s
}

// general implements %g: %e or %f depending on the exponent, trailing
// zeros removed unless '#'.
func (sp *spec) general(a float64) string {
	p := sp.precOr(6)
	if p == 0 {
		p = 1
	}
	e := strconv.FormatFloat(a, 'e', p-1, 64)
	x, _ := strconv.Atoi(e[strings.IndexByte(e, 'e')+1:])
	var s string
	if x < p && x >= -4 {
		s = strconv.FormatFloat(a, 'f', p-1-x, 64)
		if !sp.hash {
			s = trimZeros(s)
		} else if !strings.Contains(s, ".") {
			s += "."
		}
		return s
	}
	s = e
	i := strings.IndexByte(s, 'e')
	mant, ex := s[:i], s[i:]
	if !sp.hash {
		mant = trimZeros(mant)
	} else if !strings.Contains(mant, ".") {
		mant += "."
	}
	return mant + ex
}

// trimZeros removes trailing zeros of a fraction, and a trailing point.
func trimZeros(s string) string {
	if !strings.Contains(s, ".") {
		return s
	}
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}

// hex formats a non-negative finite a like glibc's %a (without "0x").
func (sp *spec) hex(a float64) string {
	bits := math.Float64bits(a)
	mant := bits & (1<<52 - 1)
	exp := int(bits>>52) & 0x7ff
	lead := uint64(1)
	switch {
	case exp == 0 && mant == 0:
		exp = 0
		lead = 0
	case exp == 0: // subnormal
		exp = -1022
		lead = 0
	default:
		exp -= 1023
	}
	digits := 13 // hex digits of the 52-bit fraction
	if sp.prec >= 0 && sp.prec < digits {
		// Round the fraction to prec hex digits, ties to even.
		shift := uint(4 * (digits - sp.prec))
		full := lead<<52 | mant
		rem := full & (1<<shift - 1)
		full >>= shift
		half := uint64(1) << (shift - 1)
		if rem > half || (rem == half && full&1 == 1) {
			full++
		}
		lead = full >> (4 * uint(sp.prec))
		mant = full & (1<<(4*uint(sp.prec)) - 1)
		digits = sp.prec
	}
	frac := ""
	if digits > 0 {
		frac = strconv.FormatUint(mant, 16)
		frac = strings.Repeat("0", digits-len(frac)) + frac
	}
	if sp.prec < 0 {
		frac = strings.TrimRight(frac, "0")
	} else if sp.prec > len(frac) {
		frac += strings.Repeat("0", sp.prec-len(frac))
	}
	s := strconv.FormatUint(lead, 16)
	if frac != "" || sp.hash {
		s += "." + frac
	}
	sign := "+"
	if exp < 0 {
		sign = "-"
		exp = -exp
	}
	return s + "p" + sign + strconv.Itoa(exp)
}

package luastd

import (
	"strconv"
	"time"
)

// strftime appends the conversion conv (without its '%', maybe with an E
// or O modifier) of t to out, in the C locale.
func strftime(out []byte, conv string, t time.Time, utc bool) []byte {
	c := conv[len(conv)-1] // E and O change nothing in the C locale
	num := func(v, width int, padc byte) []byte {
		s := strconv.Itoa(v)
		for len(s) < width {
			s = string(padc) + s
		}
		return append(out, s...)
	}
	switch c {
	case 'a':
		return append(out, t.Weekday().String()[:3]...)
	case 'A':
		return append(out, t.Weekday().String()...)
	case 'b', 'h':
		return append(out, t.Month().String()[:3]...)
	case 'B':
		return append(out, t.Month().String()...)
	case 'c':
		return strftimeAll(out, "a b e H:M:S Y", t, utc)
	case 'C':
		return num(floorDiv(t.Year(), 100), 2, '0')
	case 'd':
		return num(t.Day(), 2, '0')
	case 'D', 'x':
		return strftimeAll(out, "m/d/y", t, utc)
	case 'e':
		return num(t.Day(), 2, ' ')
	case 'F':
		return strftimeAll(out, "Y-m-d", t, utc)
	case 'g':
		y, _ := t.ISOWeek()
		return num(floorMod(y, 100), 2, '0')
	case 'G':
		y, _ := t.ISOWeek()
		return num(y, 1, '0')
	case 'H':
		return num(t.Hour(), 2, '0')
	case 'I':
		return num((t.Hour()+11)%12+1, 2, '0')
	case 'j':
		return num(t.YearDay(), 3, '0')
	case 'm':
		return num(int(t.Month()), 2, '0')
	case 'M':
		return num(t.Minute(), 2, '0')
	case 'n':
		return append(out, '\n')
	case 'p':
		if t.Hour() < 12 {
			return append(out, "AM"...)
		}
		return append(out, "PM"...)
	case 'r':
		return strftimeAll(out, "I:M:S p", t, utc)
	case 'R':
		return strftimeAll(out, "H:M", t, utc)
	case 'S':
		return num(t.Second(), 2, '0')
	case 't':
		return append(out, '\t')
	case 'T', 'X':
		return strftimeAll(out, "H:M:S", t, utc)
	case 'u':
		return num((int(t.Weekday())+6)%7+1, 1, '0')
	case 'U':
		return num((t.YearDay()-1+7-int(t.Weekday()))/7, 2, '0')
	case 'V':
		_, w := t.ISOWeek()
		return num(w, 2, '0')
	case 'w':
		return num(int(t.Weekday()), 1, '0')
	case 'W':
		return num((t.YearDay()-1+7-(int(t.Weekday())+6)%7)/7, 2, '0')
	case 'y':
		return num(floorMod(t.Year(), 100), 2, '0')
	case 'Y':
		return num(t.Year(), 1, '0')
	case 'z':
		_, off := t.Zone()
		sign := byte('+')
		if off < 0 {
			sign, off = '-', -off
		}
		out = append(out, sign)
		return num(off/3600*100+off%3600/60, 4, '0')
	case 'Z':
		if utc {
			return append(out, "GMT"...) // what glibc's gmtime reports
		}
		name, _ := t.Zone()
		return append(out, name...)
	case '%':
		return append(out, '%')
	}
	return out
}

// strftimeAll appends the conversions listed in spec (letters are
// conversions, other bytes literal).
func strftimeAll(out []byte, spec string, t time.Time, utc bool) []byte {
	for i := 0; i < len(spec); i++ {
		c := spec[i]
		if ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') {
			out = strftime(out, spec[i:i+1], t, utc)
		} else {
			out = append(out, c)
		}
	}
	return out
}

func floorDiv(a, b int) int {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

func floorMod(a, b int) int { return a - floorDiv(a, b)*b }

package luastd

import (
	"strings"
	"time"

	lua "github.com/Shopify/go-lua"
)

// os.time, os.date and os.clock (reference manual §6.9). Local time is
// time.Local, that is the process's TZ.

// dateField reads t[key] from the table at stack index 1 as an integer;
// def < 0 makes the field mandatory.
func dateField(l *lua.State, key string, def int) int {
	l.Field(1, key)
	n, ok := l.ToNumber(-1)
	l.Pop(1)
	if ok {
		if n != n || n > 1<<40 || n < -(1<<40) {
			lua.Errorf(l, "field '%s' is out-of-bound", key)
		}
		return int(n)
	}
	if def < 0 {
		lua.Errorf(l, "field '%s' missing in date table", key)
	}
	return def
}

// osTime implements os.time([table]): the current time, or the time the
// table's fields denote in local time, normalised like C's mktime.
func osTime(l *lua.State) int {
	if l.IsNoneOrNil(1) {
		l.PushNumber(float64(time.Now().Unix()))
		return 1
	}
	checkTable(l, 1, "time")
	l.SetTop(1)
	sec := dateField(l, "sec", 0)
	minute := dateField(l, "min", 0)
	hour := dateField(l, "hour", 12)
	day := dateField(l, "day", -1)
	month := dateField(l, "month", -1)
	year := dateField(l, "year", -1)
	if year < -(1<<31) || year > 1<<31 {
		l.PushNil() // mktime cannot represent it
		return 1
	}
	t := time.Date(year, time.Month(month), day, hour, minute, sec, 0, time.Local)
	l.PushNumber(float64(t.Unix()))
	return 1
}

// date implements os.date([format [, time]]).
func (lib *library) date(l *lua.State) int {
	format := optString(l, 1, "date", "%c")
	var t time.Time
	if l.IsNoneOrNil(2) {
		t = time.Now()
	} else {
		n := checkNumber(l, 2, "date")
		if n != n || n > 1<<55 || n < -(1<<55) {
			l.PushNil() // outside what the C library can convert
			return 1
		}
		t = time.Unix(int64(n), 0)
	}
	utc := strings.HasPrefix(format, "!")
	if utc {
		format = format[1:]
		t = t.In(time.UTC)
	} else {
		t = t.In(time.Local)
	}
	if format == "*t" {

		pushDateTable(l, t)
		return 1
	}
	b := lib.limits(l).budget(l)
	var out []byte
	for i := 0; i < len(format); i++ {
		c := format[i]
		if c != '%' {
			out = append(out, c)
		} else {
			n := convLen(format[i+1:])
			if n == 0 {
				argError(l, 1, "date", "invalid conversion specifier '%"+format[i+1:]+"'")
			}
			out = strftime(out, format[i+1:i+1+n], t, utc)
			i += n
		}
		b.step(1)
		lib.limits(l).checkLen(l, len(out))
	}
	b.flush()
	l.PushString(string(out))

	return 1
}

// pushDateTable pushes the "*t" table of t.
func pushDateTable(l *lua.State, t time.Time) {
	l.CreateTable(0, 9)
	for _, f := range []struct {
		k string
		v int
	}{
		{"sec", t.Second()}, {"min", t.Minute()}, {"hour", t.Hour()},
		{"day", t.Day()}, {"month", int(t.Month())}, {"year", t.Year()},
		{"wday", int(t.Weekday()) + 1}, {"yday", t.YearDay()},
	} {
		l.PushInteger(f.v)
		l.SetField(-2, f.k)
	}
	l.PushBoolean(t.IsDST())
	l.SetField(-2, "isdst")
}

// The conversions accepted after '%': the C99/POSIX set, and the E and O
// modified forms, as the reference interpreter accepts on POSIX systems.
const (
	convSingle = "aAbBcCdDeFgGhHIjmMnprRStTuUVwWxXyYzZ%"
	convE      = "cCxXyY"
	convO      = "deHImMSuUVwWy"
)

// convLen returns the length of the valid conversion at the start of s
// (which follows a '%'), or 0 when it is invalid.
func convLen(s string) int {
	switch {
	case s == "":
		return 0
	case strings.IndexByte(convSingle, s[0]) >= 0:
		return 1
	case len(s) >= 2 && s[0] == 'E' && strings.IndexByte(convE, s[1]) >= 0:
		return 2
	case len(s) >= 2 && s[0] == 'O' && strings.IndexByte(convO, s[1]) >= 0:
		return 2
	}
	return 0
}

package luastd

import (
	lua "github.com/Shopify/go-lua"
)

// The table functions as Lua 5.2 defines them (reference manual §6.5):
// elements are read and written raw, lengths honour __len.

// concat implements table.concat(list [, sep [, i [, j]]]).
func (lib *library) concat(l *lua.State) int {
	checkTable(l, 1, "concat")
	sep := optString(l, 2, "concat", "")
	i := optInt(l, 3, "concat", 1)
	var last int
	if l.IsNoneOrNil(4) {
		last = lua.LengthEx(l, 1)
	} else {
		last = checkInt(l, 4, "concat")
	}
	b := lib.limits(l).budget(l)
	var out []byte
	for ; i <= last; i++ {
		l.RawGetInt(1, i)
		s, ok := "", l.IsString(-1) // numbers count as strings
		if ok {
			s, _ = l.ToString(-1)
		} else {
			lua.Errorf(l, "invalid value (%s) at index %d in table for 'concat'", lua.TypeNameOf(l, -1), i)
		}
		l.Pop(1)
		n := len(out) + len(s)
		if i < last {
			n += len(sep)
		}
		if !lib.limits(l).fits(n) || n > maxLen {
			lib.limits(l).tooLong(l)
		}
		out = append(out, s...)
		if i < last {
			out = append(out, sep...)
		}
		b.step(1 + (len(s)+len(sep))/64)
	}
	b.flush()
	l.PushString(string(out))
	return 1
}

// insert implements table.insert(list, [pos,] value).
func (lib *library) insert(l *lua.State) int {
	checkTable(l, 1, "insert")
	e := lua.LengthEx(l, 1) + 1 // first empty element
	pos := e
	switch l.Top() {
	case 2:
	case 3:
		pos = checkInt(l, 2, "insert")
		argCheck(l, 1 <= pos && pos <= e, 2, "insert", "position out of bounds")
		b := lib.limits(l).budget(l)
		for i := e; i > pos; i-- {
			l.RawGetInt(1, i-1)
			l.RawSetInt(1, i)
			b.step(1)
		}
		b.flush()
	default:
		lua.Errorf(l, "wrong number of arguments to 'insert'")
	}
	l.RawSetInt(1, pos)
	return 0
}

// remove implements table.remove(list [, pos]). Like the reference
// interpreter, a bad position is reported as argument #1.
func (lib *library) remove(l *lua.State) int {
	checkTable(l, 1, "remove")
	size := lua.LengthEx(l, 1)
	pos := optInt(l, 2, "remove", size)
	if pos != size {
		argCheck(l, 1 <= pos && pos <= size+1, 1, "remove", "position out of bounds")
	}
	l.RawGetInt(1, pos)
	b := lib.limits(l).budget(l)
	for ; pos < size; pos++ {
		l.RawGetInt(1, pos+1)
		l.RawSetInt(1, pos)
		b.step(1)
	}
	b.flush()

	l.PushNil()
	l.RawSetInt(1, pos)
	return 1
}

// maxUnpack bounds table.unpack's results (like LUAI_MAXSTACK).
const maxUnpack = 1000000

// unpack implements table.unpack(list [, i [, j]]), charging one step per
// value pushed.
func (lib *library) unpack(l *lua.State) int {
	checkTable(l, 1, "unpack")
	i := optInt(l, 2, "unpack", 1)
	var e int
	if l.IsNoneOrNil(3) {
		e = lua.LengthEx(l, 1)
	} else {
		e = checkInt(l, 3, "unpack")
	}
	if i > e {
		return 0
	}
	n := e - i + 1
	lib.reserveResults(l, n, "too many results to unpack")
	for ; i <= e; i++ {
		l.RawGetInt(1, i)
	}
	return n
}

// reserveResults makes room on the stack for n results and charges one
// step per result, raising tooMany when n is out of range (table.unpack,
// string.byte).
func (lib *library) reserveResults(l *lua.State, n int, tooMany string) {
	if n <= 0 || n >= maxUnpack || !l.CheckStack(n) {
		lua.Errorf(l, "%s", tooMany)
	}
	b := lib.limits(l).budget(l)
	b.step(n)
	b.flush()
}

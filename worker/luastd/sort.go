package luastd

import (
	lua "github.com/Shopify/go-lua"
)

// table.sort as a merge sort over positions: at most about n·log2(n)
// comparisons whatever the comparator does, so an inconsistent order
// function cannot make it loop or index out of range. A final pass checks
// that no adjacent pair is out of order; with a valid strict order that
// never fails, so when it does the order function is invalid and the
// call raises "invalid order function for sorting" as Lua 5.2 does.

// maxSort bounds the length table.sort accepts (a __len metamethod can
// claim any length; the position arrays take 16 bytes per element).
const maxSort = 1 << 24

// sorter compares and moves the elements of the table at stack index 1.
type sorter struct {
	l       *lua.State
	hasFunc bool
	b       budget
}

// less reports whether t[i] < t[j], calling the order function (stack
// index 2) when there is one.
func (s *sorter) less(i, j int) bool {
	l := s.l
	s.b.step(1)
	if s.hasFunc {
		l.PushValue(2)
		l.RawGetInt(1, i)
		l.RawGetInt(1, j)
		l.Call(2, 1)
		r := l.ToBoolean(-1)
		l.Pop(1)
		return r
	}
	l.RawGetInt(1, i)
	l.RawGetInt(1, j)
	var r bool
	// Numbers and strings compare in Go (strings bytewise, as strcoll
	// does in the C locale); anything else goes through the VM's "<"
	// for metamethods and errors.
	switch ta, tb := l.TypeOf(-2), l.TypeOf(-1); {
	case ta == lua.TypeNumber && tb == lua.TypeNumber:
		a, _ := l.ToNumber(-2)
		b, _ := l.ToNumber(-1)
		r = a < b
	case ta == lua.TypeString && tb == lua.TypeString:
		a, _ := l.ToString(-2)
		b, _ := l.ToString(-1)
		r = a < b
	default:
		r = l.Compare(-2, -1, lua.OpLT)
	}
	l.Pop(2)
	return r
}

// sort implements table.sort(list [, comp]).
func (lib *library) sort(l *lua.State) int {
	checkTable(l, 1, "sort")
	n := lua.LengthEx(l, 1)
	hasFunc := !l.IsNoneOrNil(2)
	if hasFunc {
		if l.TypeOf(2) != lua.TypeFunction {
			typeError(l, 2, "sort", "function")
		}
	}
	l.SetTop(2)
	if n < 2 {
		return 0
	}
	if n > maxSort {
		lua.Errorf(l, "array too big")
	}
	s := &sorter{l: l, hasFunc: hasFunc, b: lib.limits(l).budget(l)}
	s.b.step(n / 8) // the position arrays
	// perm[k] is the position (1-based) whose value goes to position k+1.
	perm := make([]int, n)
	tmp := make([]int, n)
	for k := range perm {
		perm[k] = k + 1
	}
	for width := 1; width < n; width *= 2 {
		for lo := 0; lo < n-width; lo += 2 * width {
			mid, hi := lo+width, min(lo+2*width, n)
			s.merge(perm[lo:mid], perm[mid:hi], tmp[lo:hi])
			copy(perm[lo:hi], tmp[lo:hi])
		}
	}
	s.permute(perm)
	for k := 1; k < n; k++ {
		if s.less(k+1, k) {
			lua.Errorf(l, "invalid order function for sorting")
		}
	}
	s.b.flush()
	return 0
}

// merge merges the sorted runs a and b into out, taking from a on ties.
func (s *sorter) merge(a, b, out []int) {
	i, j, k := 0, 0, 0
	for i < len(a) && j < len(b) {
		if s.less(b[j], a[i]) {
			out[k] = b[j]
			j++
		} else {
			out[k] = a[i]
			i++
		}
		k++
	}
	k += copy(out[k:], a[i:])
	copy(out[k:], b[j:])
}

// permute rearranges the table so that t[k] becomes the old t[perm[k-1]],
// following each cycle of the permutation with one value held on the
// stack.
func (s *sorter) permute(perm []int) {
	l := s.l
	done := make([]bool, len(perm))
	for start := range perm {
		if done[start] || perm[start] == start+1 {
			done[start] = true
			continue
		}
		l.RawGetInt(1, start+1) // the value overwritten first
		k := start
		for {
			done[k] = true
			from := perm[k] - 1
			if from == start {
				l.RawSetInt(1, k+1) // the saved value
				break
			}
			l.RawGetInt(1, from+1)
			l.RawSetInt(1, k+1)
			k = from
		}
		s.b.step(1)
	}
}

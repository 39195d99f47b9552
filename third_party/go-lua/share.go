package lua

// This file is the "share" patch (see PATCHES.md): library tables built
// once per process and shared, copy on write, by every State.

import (
	"fmt"
	"maps"
)

// SharedTable is a table frozen so that many States may use its contents:
// each State gets its own table (PushShared) whose array and hash parts
// are the frozen ones until its first write, which copies them. Its values
// are nil, booleans, numbers, strings, light userdata and Go functions
// without upvalues, none of which a State can modify, so no State can see
// another's changes and concurrent reads from States on different
// goroutines are safe.
type SharedTable struct {
	t *table
	// closures: some values are Go closures (with shareable upvalues),
	// which carry a per-State mark: the table can only be copied.
	closures bool
}

// Share freezes the table at index and returns it. It fails when a key
// or value could be modified through a State or carries per-State data: a
// table, a Lua function, a userdata or a thread. A Go closure whose
// upvalues are shareable is accepted, but such a table can only be copied
// (CopyShared), each copy getting its own closures. The table at index
// stays l's: a later write to it copies the parts first, as in any State.
func Share(l *State, index int) (*SharedTable, error) {
	t, ok := l.indexToValue(index).(*table)
	if !ok {
		return nil, fmt.Errorf("share: value at %d is not a table", index)
	}
	if t.metaTable != nil {
		return nil, fmt.Errorf("share: table has a metatable")
	}
	s := &SharedTable{t: t}
	check := func(v value) error {
		if c, ok := v.(*goClosure); ok {
			for _, u := range c.upValues {
				if err := shareable(u); err != nil {
					return err
				}
			}
			s.closures = true
			return nil
		}
		return shareable(v)
	}
	for _, v := range t.array {
		if err := check(v); err != nil {
			return nil, err
		}
	}
	for k, v := range t.hash {
		if err := shareable(k); err != nil {
			return nil, err
		}
		if err := check(v); err != nil {
			return nil, fmt.Errorf("%w (field %v)", err, k)
		}
	}
	// The frozen parts get a table of their own: a later write through l
	// copies them into t (shared from now on), leaving s intact.
	s.t = &table{array: t.array, hash: t.hash, hashPeak: t.hashPeak, shared: true}
	t.shared = true
	return s, nil
}

// shareable says whether v may be seen by several States.
func shareable(v value) error {
	switch v.(type) {
	case nil, bool, float64, string, *goFunction:
		return nil
	case *table, *luaClosure, *goClosure, *userData, *State:
		return fmt.Errorf("share: a %T cannot be shared", v)
	}
	return nil // light userdata: an opaque Go value
}

// Len is the number of entries of the shared table's hash part plus its
// array length.
func (s *SharedTable) Len() int { return len(s.t.array) + len(s.t.hash) }

// PushShared pushes onto l's stack a new table with the contents of s. The
// table is l's own: its metatable, iteration state and identity are not
// shared, and its first write copies the contents (charged to l then).
//
// It panics when s holds Go closures (use CopyShared).
func (l *State) PushShared(s *SharedTable) {
	if s.closures {
		panic("PushShared: the shared table holds Go closures; copy it with CopyShared")
	}
	t := &table{array: s.t.array, hash: s.t.hash, hashPeak: len(s.t.hash), shared: true}
	l.apiPush(t)
	l.allocated(tableBytes)
}

// CopyShared sets every entry of s into the table at index (raw sets, no
// metamethods), each Go closure of s copied: the table owns what it got.
// A table with entries gets room for s's entries and extra more; an empty
// one becomes a copy of s's hash part with its capacity.
func CopyShared(l *State, s *SharedTable, index, extra int) {
	t, ok := l.indexToValue(index).(*table)
	if !ok {
		panic("CopyShared: the value at index is not a table")
	}
	if t.shared {
		t.unshare(l)
	}
	fresh := len(t.hash) == 0 && len(t.array) == 0
	if fresh {
		// maps.Clone copies the map's groups as they are, much faster than
		// inserting entry by entry; the copy has the frozen map's capacity
		// (extra is ignored: size the frozen table for what copies add).
		if t.hash = maps.Clone(s.t.hash); t.hash == nil {
			t.hash = make(map[value]value)
		}
	} else if len(t.hash) == 0 && len(s.t.hash) > 0 {
		t.hash = make(map[value]value, len(s.t.hash)+max(extra, 0))
	}
	own := func(v value) value {
		if c, ok := v.(*goClosure); ok {
			u := make([]value, len(c.upValues))
			copy(u, c.upValues)
			l.allocated(goClosureBytes + int64(len(u))*arraySlotBytes)
			return &goClosure{function: c.function, upValues: u}
		}
		return v
	}
	for i, v := range s.t.array {
		if v != nil {
			t.putAtInt(l, i+1, own(v))
		}
	}
	if fresh {
		l.allocated(int64(len(s.t.hash)) * hashEntryBytes)
		t.hashPeak = len(t.hash)
		for k, v := range s.t.hash {
			if c, ok := v.(*goClosure); ok {
				t.hash[k] = own(c)
			}
		}
	} else {
		for k, v := range s.t.hash {
			t.put(l, k, own(v))
		}
	}
	t.invalidateTagMethodCache()
}

// unshare gives t its own copy of the array and hash parts it shares with
// other tables (share patch). Every write to a table's parts calls it first.
func (t *table) unshare(l *State) {
	t.shared = false
	array := make([]value, len(t.array))
	copy(array, t.array)
	hash := maps.Clone(t.hash)
	if hash == nil {
		hash = make(map[value]value)
	}
	t.array, t.hash, t.hashPeak = array, hash, len(hash)
	l.allocated(int64(len(array))*arraySlotBytes + int64(len(hash))*hashEntryBytes)
}

// SetHost associates v with l's global state (every thread of it): host
// functions shared by many States find their own State's host data with
// Host instead of capturing it in a closure per State.
func SetHost(l *State, v any) { l.global.host = v }

// Host returns the value SetHost associated with l's global state, or nil.
func Host(l *State) any { return l.global.host }

// ClearStale drops the values left in l's stack slots above its top (they
// stay reachable for Go's collector until overwritten): an idle State
// keeps no garbage of its last call alive.
//
// limits patch: it writes only the slots that hold a value. Most of the
// stack above the top is already nil (cleared by the previous call), and a
// write of a pointer slot costs a write barrier while the collector marks,
// where the read that finds it nil costs none.
func ClearStale(l *State) {
	s := l.stack[l.top:]
	for i := range s {
		if s[i] != nil {
			s[i] = nil
		}
	}
}

// BoxedString is a Lua string value made once (BoxString) and pushed by
// any number of States without allocating (PushBoxedString): PushString
// boxes its string into a new value on every push. Strings are immutable,
// so States on different goroutines may push the same one (share patch).
type BoxedString struct{ v value }

// BoxString makes the BoxedString of s.
func BoxString(s string) BoxedString { return BoxedString{v: s} }

// PushBoxedString pushes s, a string of a BoxedString made beforehand. It
// is PushString without the allocation; nothing is added to the State's
// memory estimate (the string is not the State's own: it is shared).
func (l *State) PushBoxedString(s BoxedString) {
	if s.v == nil {
		l.PushString("") // the zero BoxedString is the empty string
		return
	}
	l.apiPush(s.v)
}

package lua

import (
	"math"
)

type table struct {
	array     []value
	hash      map[value]value
	metaTable *table
	// iter is next's snapshot of the hash part, nil until a traversal
	// (share patch: out of line, so that a table not iterated is small).
	iter     *iteration
	hashPeak int    // most entries the hash has held; Go maps never shrink (limits patch)
	mark     uint32 // ReachableBytes walk epoch (limits patch)
	flags    byte   // next to mark: the struct is 64 bytes (share patch)
	// shared: array and hash are a SharedTable's, copied by the first
	// write (share patch, share.go).
	shared bool
}

// iteration is a snapshot of a table's hash keys for next.
type iteration struct {
	keys []value
	// limits patch: where next resumes in keys, and an index of it built
	// when a traversal does not resume where the last one stopped.
	pos   int
	index map[value]int
	// values are the values of keys when snapshotted, dropped by the first
	// write to the hash part after that.
	values []value
}

func newTable() *table                     { return &table{hash: make(map[value]value)} }
func (t *table) invalidateTagMethodCache() { t.flags = 0 }
func (t *table) atString(k string) value   { return t.hash[k] }

func newTableWithSize(arraySize, hashSize int) *table {
	t := new(table)
	if arraySize > 0 {
		t.array = make([]value, arraySize)
	}
	if hashSize > 0 {
		t.hash = make(map[value]value, hashSize)
		t.hashPeak = hashSize
	} else {
		t.hash = make(map[value]value)
	}
	return t
}

func (l *State) fastTagMethod(table *table, event tm) value {
	if table == nil || table.flags&1<<event != 0 {
		return nil
	}
	return table.tagMethod(event, l.global.tagMethodNames[event])
}

func (t *table) extendArray(l *State, last int) {
	if t.shared {
		t.unshare(l)
	}
	// limits patch: account before allocating, and allocate the new array
	// directly instead of append(t.array, make(...)...), which also
	// allocated a temporary slice as big as the growth.
	l.reserve(int64(last-len(t.array)) * arraySlotBytes)
	array := make([]value, last)
	copy(array, t.array)
	t.array = array
	for k, v := range t.hash {
		if f, ok := k.(float64); ok {
			if i := int(f); float64(i) == f {
				if 0 < i && i <= len(t.array) {
					t.array[i-1] = v
					delete(t.hash, k)
					t.hashWritten()
				}
			}
		}
	}
}

func (t *table) atInt(k int) value {
	if 0 < k && k <= len(t.array) {
		return t.array[k-1]
	}
	return t.hash[float64(k)]
}

func (t *table) maybeResizeArray(l *State, key int) bool {
	// Precondition: key > len(t.array).
	occupancy := 0
	for _, v := range t.array {
		if v != nil {
			occupancy++
		}
	}
	for k, v := range t.hash {
		if f, ok := k.(float64); ok && v != nil {
			if i := int(f); i <= key && float64(i) == f {
				occupancy++
			}
		}
	}
	if occupancy >= key>>1 {
		t.extendArray(l, max(occupancy*2, key)) // TODO Tune growth function.
		return true
	}
	return false
}

func (t *table) addOrInsertHash(l *State, k, v value) {
	if t.shared {
		t.unshare(l)
	}
	if _, ok := t.hash[k]; !ok {
		t.iter = nil // invalidate iterations when adding an entry
		t.hash[k] = v
		// limits patch: account for the new entry (Go maps never shrink).
		if n := len(t.hash); n > t.hashPeak {
			t.hashPeak = n
			l.allocated(hashEntryBytes)
		}
		return
	}
	t.hash[k] = v
	t.hashWritten() // limits patch
}

func (t *table) putAtInt(l *State, k int, v value) {
	if t.shared {
		t.unshare(l)
	}
	if 0 < k && k <= len(t.array) {
		t.array[k-1] = v
	} else if k > 0 && v != nil && t.maybeResizeArray(l, k) {
		t.array[k-1] = v
	} else if v == nil {
		delete(t.hash, float64(k))
		t.hashWritten()
	} else {
		t.addOrInsertHash(l, float64(k), v)
	}
}

func (t *table) at(k value) value {
	switch k := k.(type) {
	case nil:
		return nil
	case float64:
		if i := int(k); float64(i) == k { // OPT: Inlined copy of atInt.
			if 0 < i && i <= len(t.array) {
				return t.array[i-1]
			}
			return t.hash[k]
		}
	case string:
		return t.hash[k]
	}
	return t.hash[k]
}

// put and tryPut use the key as they got it, boxed: the typed key of the
// switch would be boxed again (an allocation per string key stored).
func (t *table) put(l *State, k, v value) {
	if t.shared {
		t.unshare(l)
	}
	switch kk := k.(type) {
	case nil:
		l.runtimeError("table index is nil")
	case float64:
		if i := int(kk); float64(i) == kk {
			t.putAtInt(l, i, v)
		} else if math.IsNaN(kk) {
			l.runtimeError("table index is NaN")
		} else if v == nil {
			delete(t.hash, k)
			t.hashWritten()
		} else {
			t.addOrInsertHash(l, k, v)
		}
	case string:
		if v == nil {
			delete(t.hash, k)
			t.hashWritten()
		} else {
			t.addOrInsertHash(l, k, v)
		}
	default:
		if v == nil {
			delete(t.hash, k)
			t.hashWritten()
		} else {
			t.addOrInsertHash(l, k, v)
		}
	}
}

// OPT: tryPut is an optimized variant of the at/put pair used by setTableAt to avoid hashing the key twice.
func (t *table) tryPut(l *State, k, v value) bool {
	if t.shared {
		t.unshare(l)
	}
	switch kk := k.(type) {
	case nil:
	case float64:
		if i := int(kk); float64(i) == kk && 0 < i && i <= len(t.array) && t.array[i-1] != nil {
			t.array[i-1] = v
			return true
		} else if math.IsNaN(kk) {
			return false
		} else if t.hash[k] != nil && v != nil {
			t.hash[k] = v
			t.hashWritten()
			return true
		}
	case string:
		if t.hash[k] != nil && v != nil {
			t.hash[k] = v
			t.hashWritten()
			return true
		}
	default:
		if t.hash[k] != nil && v != nil {
			t.hash[k] = v
			t.hashWritten()
			return true
		}
	}
	return false
}

func (t *table) unboundSearch(j int) int {
	i := j
	for j++; nil != t.atInt(j); {
		i = j
		if j *= 2; j < 0 {
			for i = 1; nil != t.atInt(i); i++ {
			}
			return i - 1
		}
	}
	for j-i > 1 {
		m := (i + j) / 2
		if nil == t.atInt(m) {
			j = m
		} else {
			i = m
		}
	}
	return i
}

func (t *table) length() int {
	j := len(t.array)
	if j > 0 && t.array[j-1] == nil {
		i := 0
		for j-i > 1 {
			m := (i + j) / 2
			if t.array[m-1] == nil {
				j = m
			} else {
				i = m
			}
		}
		return i
	} else if t.hash == nil {
		return j
	}
	return t.unboundSearch(j)
}

func arrayIndex(k value) int {
	if n, ok := k.(float64); ok {
		if i := int(n); float64(i) == n {
			return i
		}
	}
	return -1
}

func (l *State) next(t *table, key int) bool {
	// limits patch: linear traversal and clearing fields during traversal.
	// Upstream searched the key snapshot from its start at every call
	// (quadratic: 9,000 keys took seconds) and rejected a key that had just
	// been assigned nil ("invalid key to 'next'"), which Lua allows. The
	// snapshot position of the key last returned is remembered
	// (iterationPos), so a traversal resumes there; a key found neither
	// there nor in the snapshot is looked up in an index of the snapshot
	// (built at most once per snapshot), so interleaved traversals stay
	// linear too. Deleted keys stay in the snapshot and are skipped.
	i, k := 0, l.stack[key]
	start := 0    // snapshot position to resume the hash part from
	if k == nil { // first iteration
	} else if i = arrayIndex(k); 0 < i && i <= len(t.array) {
		k = nil
	} else {
		pos := t.iterationKeyPosition(l, k)
		if pos < 0 {
			if _, ok := t.hash[k]; !ok {
				l.runtimeError("invalid key to 'next'") // key not found
			}
			t.buildIterationKeys(l)
			if pos = t.iterationKeyPosition(l, k); pos < 0 {
				l.runtimeError("invalid key to 'next'")
			}
		}
		start, i = pos+1, len(t.array)
	}
	for ; i < len(t.array); i++ {
		if t.array[i] != nil {
			l.stack[key] = float64(i + 1)
			l.stack[key+1] = t.array[i]
			return true
		}
	}
	if t.iter == nil {
		t.buildIterationKeys(l)
	}
	it := t.iter
	keys := it.keys
	if it.values != nil {
		// Nothing was written since the snapshot: every key is present
		// with its snapshotted value, no lookup needed.
		if start < len(keys) {
			l.stack[key] = keys[start]
			l.stack[key+1] = it.values[start]
			it.pos = start
			return true
		}
		return false
	}
	for j := start; j < len(keys); j++ {
		hk := keys[j]
		if v, present := t.hash[hk]; present {
			l.stack[key] = hk
			l.stack[key+1] = v
			it.pos = j
			return true
		}
	}
	return false // no more elements
}

// buildIterationKeys snapshots the keys of t's hash part (limits patch:
// split out of next, and accounted).
func (t *table) buildIterationKeys(l *State) {
	l.allocated(int64(len(t.hash)) * 2 * arraySlotBytes)
	l.chargeWork(len(t.hash) / workPerStep)
	j, keys, values := 0, make([]value, len(t.hash)), make([]value, len(t.hash))
	for hk, hv := range t.hash {
		keys[j], values[j] = hk, hv
		j++
	}
	t.iter = &iteration{keys: keys, values: values}
}

// hashWritten drops the snapshot's values, which a write to the hash part
// may have made stale (and which would keep old values alive unseen).
func (t *table) hashWritten() {
	if t.iter != nil && t.iter.values != nil {
		t.iter.values = nil
	}
}

// iterationKeyPosition returns the position of k in t's key snapshot, or -1
// (limits patch).
func (t *table) iterationKeyPosition(l *State, k value) int {
	it := t.iter
	if it == nil {
		return -1
	}
	keys := it.keys
	if p := it.pos; p < len(keys) && keys[p] == k {
		return p
	}
	if it.index == nil {
		l.allocated(int64(len(keys)) * hashEntryBytes)
		l.chargeWork(len(keys) / workPerStep)
		it.index = make(map[value]int, len(keys))
		for p, hk := range keys {
			it.index[hk] = p
		}
	}
	if p, ok := it.index[k]; ok {
		return p
	}
	return -1
}

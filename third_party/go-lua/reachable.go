package lua

// This file is part of the "limits" patch (see PATCHES.md).

import "unsafe"

// dedupStringLength is the shortest string whose bytes ReachableBytes
// counts once however many values refer to it; shorter strings are counted
// at every reference (cheaper than remembering them).
const dedupStringLength = 32

// ReachableBytes walks everything reachable from the State (registry,
// globals, the stack and call frames of every thread, upvalues, closures,
// prototypes, metatables including the per-type ones such as the string
// metatable) and returns an estimate of its size in bytes. Strings count
// their length plus a header; tables their header, array slots, the most
// hash entries they ever held (Go maps do not shrink) and boxed keys and
// values; userdata a fixed estimate (their Go data is opaque). Each object
// is counted once; cycles are handled.
//
// It must not run concurrently with anything else using l. It costs time
// proportional to the number of reachable objects.
func ReachableBytes(l *State) int64 {
	g := l.global
	if g.walkEpoch++; g.walkEpoch == 0 {
		g.walkEpoch = 1 // objects start with mark 0
	}
	w := walker{epoch: g.walkEpoch}
	w.value(l)
	for t := l; t.coroutine != nil && t.coroutine.resumer != nil; t = t.coroutine.resumer {
		w.value(t.coroutine.self) // the running chain (coroutine patch)
		w.value(t.coroutine.resumer)
	}
	w.value(g.mainThread)
	w.value(g.registry)
	for _, mt := range g.metaTables {
		if mt != nil {
			w.value(mt)
		}
	}
	w.drain()
	return w.total
}

// walker is an iterative (explicit work list) reachability walk, so deeply
// nested data cannot overflow the Go stack.
type walker struct {
	epoch   uint32
	total   int64
	strings map[*byte]struct{}
	work    []interface{}
	shared  map[*prototype]struct{} // compile cache patch: shared prototypes seen
}

func (w *walker) value(v value) {
	switch v := v.(type) {
	case string:
		w.string(v)
	case float64:
		w.total += numberBytes
	case *table:
		if v.mark != w.epoch {
			v.mark = w.epoch
			w.work = append(w.work, v)
		}
	case *luaClosure:
		if v.mark != w.epoch {
			v.mark = w.epoch
			w.work = append(w.work, v)
		}
	case *goClosure:
		if v.mark != w.epoch {
			v.mark = w.epoch
			w.work = append(w.work, v)
		}
	case *goFunction:
		w.total += goFunctionBytes
	case *userData:
		if v.mark != w.epoch {
			v.mark = w.epoch
			w.work = append(w.work, v)
		}
	case *State:
		if v != nil && v.mark != w.epoch {
			v.mark = w.epoch
			w.work = append(w.work, v)
		}
	case *coroutineHandle: // coroutine patch
		if v != nil && v.mark != w.epoch {
			v.mark = w.epoch
			w.total += coroutineBytes
			w.value(v.thread)
		}
	}
}

func (w *walker) string(s string) {
	w.total += stringHeaderBytes
	if len(s) < dedupStringLength {
		w.total += int64(len(s))
		return
	}
	p := unsafe.StringData(s)
	if w.strings == nil {
		w.strings = make(map[*byte]struct{})
	}
	if _, seen := w.strings[p]; !seen {
		w.strings[p] = struct{}{}
		w.total += int64(len(s))
	}
}

func (w *walker) prototype(p *prototype) {
	if p.shared { // compile cache patch: other States walk it too
		if _, seen := w.shared[p]; seen {
			return
		}
		if w.shared == nil {
			w.shared = map[*prototype]struct{}{}
		}
		w.shared[p] = struct{}{}
		w.work = append(w.work, p)
		return
	}
	if p.mark == w.epoch {
		return
	}
	p.mark = w.epoch
	w.work = append(w.work, p)
}

func (w *walker) drain() {
	for len(w.work) > 0 {
		o := w.work[len(w.work)-1]
		w.work = w.work[:len(w.work)-1]
		switch o := o.(type) {
		case *table:
			w.table(o)
		case *luaClosure:
			w.total += luaClosureBytes + int64(len(o.upValues))*upValueBytes
			for _, uv := range o.upValues {
				if uv == nil {
					continue
				}
				if _, open := uv.home.(stackLocation); !open { // open ones live on a stack
					w.value(uv.home)
				}
			}
			w.prototype(o.prototype)
		case *goClosure:
			w.total += goClosureBytes + int64(len(o.upValues))*arraySlotBytes
			for _, v := range o.upValues {
				w.value(v)
			}
		case *userData:
			w.total += userDataBytes
			if o.metaTable != nil {
				w.value(o.metaTable)
			}
			if o.env != nil {
				w.value(o.env)
			}
		case *State:
			w.thread(o)
		case *prototype:
			w.total += prototypeOwnBytes(o) + int64(len(o.source))
			for _, k := range o.constants {
				w.value(k)
			}
			for i := range o.prototypes {
				w.prototype(&o.prototypes[i])
			}
			if o.cache != nil {
				w.value(o.cache)
			}
		}
	}
}

func (w *walker) table(t *table) {
	w.total += tableBytes + int64(cap(t.array))*arraySlotBytes +
		int64(max(len(t.hash), t.hashPeak))*hashEntryBytes
	if it := t.iter; it != nil {
		w.total += int64(cap(it.keys)+cap(it.values))*arraySlotBytes + int64(len(it.index))*hashEntryBytes
	}
	for _, v := range t.array {
		w.value(v)
	}
	for k, v := range t.hash {
		w.value(k)
		w.value(v)
	}
	if t.metaTable != nil {
		w.value(t.metaTable)
	}
}

// thread counts a thread's whole stack slice: slots above top may still
// hold stale values, which Go's garbage collector keeps alive too.
func (w *walker) thread(l *State) {
	w.total += stateBytes + int64(cap(l.stack))*arraySlotBytes
	for _, v := range l.stack {
		w.value(v)
	}
	for ci := &l.baseCallInfo; ci != nil; ci = ci.next {
		w.total += callInfoBytes
	}
	for uv := l.upValues; uv != nil; uv = uv.next {
		w.total += openUpValueBytes
	}
	if c := l.coroutine; c != nil && c.link != nil { // coroutine patch
		c.link.mark = w.epoch                           // reached: a sweep keeps it
		if c.status != coDead && !c.link.ended.Load() { // an ended goroutine holds no stack
			w.total += goroutineBytes + int64(l.nestedGoCallCount-l.nestedBase)*nestedCallBytes
		}
	}
}

package lua

// This file is part of the "coroutine" patch (see PATCHES.md): the
// coroutine library of Lua 5.2 (lcorolib.c).

// coroutineArg returns the coroutine at index, or nil with main set when
// it is a main thread; it raises the argument error for anything else.
func coroutineArg(l *State, index int) (h *coroutineHandle, main *State) {
	switch v := l.indexToValue(index).(type) {
	case *coroutineHandle:
		return v, nil
	case *State:
		return nil, v
	}
	ArgumentError(l, index, "coroutine expected")
	panic("unreachable")
}

// auxResume resumes the coroutine (h, or main thread main) with the narg
// values on top of the stack; it returns the number of results pushed, or
// -1 with the error value pushed.
func auxResume(l *State, h *coroutineHandle, narg int) int {
	if h == nil { // a main thread is always running or normal
		l.top -= narg
		l.push("cannot resume non-suspended coroutine")
		return -1
	}
	return l.resume(h, narg)
}

var coroutineLibrary = []RegistryFunction{
	{"create", func(l *State) int {
		CheckType(l, 1, TypeFunction)
		h := l.newCoroutine(l.stack[l.callInfo.function+1])
		l.apiPush(h)
		return 1
	}},
	{"resume", func(l *State) int {
		h, _ := coroutineArg(l, 1)
		r := auxResume(l, h, l.Top()-1)
		if r < 0 {
			l.PushBoolean(false)
			l.Insert(-2)
			return 2 // false, error value
		}
		l.PushBoolean(true)
		l.Insert(-(r + 1))
		return r + 1 // true, the values passed to yield or returned
	}},
	{"running", func(l *State) int {
		l.PushBoolean(l.PushThread())
		return 2
	}},
	{"status", func(l *State) int {
		h, main := coroutineArg(l, 1)
		switch {
		case main != nil && main == l:
			l.PushString("running")
		case main != nil:
			l.PushString("normal")
		case h.thread == l:
			l.PushString("running")
		default:
			c := h.thread.coroutine
			switch {
			case c.status == coDead || c.link != nil && c.link.killed():
				l.PushString("dead")
			case c.status == coNormal:
				l.PushString("normal")
			case c.status == coRunning: // not reachable: the running one is l
				l.PushString("running")
			default:
				l.PushString("suspended")
			}
		}
		return 1
	}},
	{"wrap", func(l *State) int {
		CheckType(l, 1, TypeFunction)
		l.apiPush(l.newCoroutine(l.stack[l.callInfo.function+1]))
		l.PushGoClosure(auxWrap, 1)
		return 1
	}},
	{"yield", func(l *State) int {
		return l.yield()
	}},
}

// auxWrap is the function coroutine.wrap returns: it resumes its
// coroutine and propagates an error, with position information added to
// a string error.
func auxWrap(l *State) int {
	h, _ := l.indexToValue(UpValueIndex(1)).(*coroutineHandle)
	r := auxResume(l, h, l.Top())
	if r < 0 {
		if l.IsString(-1) {
			Where(l, 1)
			l.Insert(-2)
			l.Concat(2)
		}
		l.Error()
	}
	return r
}

// CoroutineOpen opens the coroutine library. Usually passed to Require.
//
// http://www.lua.org/manual/5.2/manual.html#6.2
func CoroutineOpen(l *State) int {
	NewLibrary(l, coroutineLibrary)
	return 1
}

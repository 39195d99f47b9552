package lua

// This file is the "coroutine" patch (see PATCHES.md): Lua 5.2 coroutines.
//
// go-lua's interpreter recurses on the Go stack whenever Go code calls Lua
// (pcall, metamethods, for iterators), so a coroutine cannot be suspended
// by unwinding its frames as PUC-Rio Lua does with continuations. Each
// started coroutine runs instead on a goroutine of its own, with its own
// State sharing the global state, and control is handed over with
// channels: the resumer blocks until the coroutine yields, returns or
// fails, so exactly one goroutine runs Lua of a global state at any time.
//
// A suspended coroutine's goroutine is parked in yield. It is ended (with
// runtime.Goexit, which runs deferred calls but recovers nothing) when
//   - the Lua value of the coroutine becomes unreachable for Go's garbage
//     collector (a cleanup on the handle), or
//   - a sweep finds it unreachable from the Lua roots: the sweep runs with
//     every memory measurement of the limits patch and whenever the number
//     of live goroutines doubles; it catches what the cleanup cannot, a
//     coroutine whose own stack refers to its handle (a parked goroutine's
//     stack is a garbage-collection root), or
//   - CloseCoroutines is called (the host discards the state).

import (
	"runtime"
	"sync"
	"sync/atomic"
	"weak"
)

// coStatus is the state of a coroutine as coroutine.status reports it.
type coStatus uint8

const (
	coInitial   coStatus = iota // created, body not started ("suspended")
	coRunning                   // running
	coNormal                    // resumed another coroutine
	coSuspended                 // yielded
	coDead                      // returned, failed or ended
)

// Estimated sizes of a coroutine (see limits.go): the handle, coroutine
// and link structs with their channels; the goroutine of a started one
// (its stack and the runtime's g); and, for each nested Go-level call
// (pcall, metamethod) it is suspended in, the goroutine stack and the
// heap that call holds (measured: 7 KiB for a coroutine suspended in its
// body, 96 KiB in 50 nested pcalls; see coroutine_mem_test.go).
const (
	coroutineBytes  = 512
	goroutineBytes  = 8 << 10
	nestedCallBytes = 2560
)

// What a resume and the start of a coroutine's goroutine count as, in
// instructions, for a count hook (about their cost in time).
const (
	resumeCost = 100
	startCost  = 400
)

// coroutineHandle is the Lua value (type thread) of a coroutine. It is
// distinct from the coroutine's State, which its goroutine references, so
// that it can become unreachable while the goroutine is parked.
type coroutineHandle struct {
	thread *State
	mark   uint32 // ReachableBytes walk epoch
}

// coroutine is the per-thread part of a coroutine's State.
type coroutine struct {
	status  coStatus
	self    *coroutineHandle // strong while running or normal
	handle  weak.Pointer[coroutineHandle]
	resumer *State  // while running or normal
	link    *coLink // once started
}

// coLink is what a coroutine's goroutine shares with its resumers. It
// references neither the handle nor the State, so a cleanup holding it
// does not keep the handle alive.
type coLink struct {
	wake     chan struct{}  // a resumer hands control to the coroutine
	back     chan coEvent   // the coroutine hands control back
	kill     chan struct{}  // receives once to end a parked coroutine
	done     sync.WaitGroup // the goroutine has exited
	killOnce sync.Once
	ended    atomic.Bool // ended: it can no longer be resumed
	mark     uint32      // walk epoch in which its State was reached
	parked   bool        // suspended in yield
}

type coEventKind uint8

const (
	coYielded coEventKind = iota
	coReturned
	coFailed
	coPanicked
)

type coEvent struct {
	kind  coEventKind
	panic interface{} // coPanicked: the value, re-panicked in the resumer
}

// stop ends the goroutine (if it is parked) and waits until it has exited.
// (The package's io.go defines a function close, hiding the builtin: the
// link uses a one-shot buffered channel and a WaitGroup instead.)
func (k *coLink) stop() {
	k.signal()
	k.done.Wait()
}

func (k *coLink) signal() {
	k.killOnce.Do(func() {
		k.ended.Store(true)
		k.kill <- struct{}{}
	})
}

func (k *coLink) killed() bool { return k.ended.Load() }

// coroutineSet is the set of the live goroutines of a global state.
type coroutineSet struct {
	mu      sync.Mutex
	live    map[*coLink]struct{}
	closed  bool
	sweepAt int // live count above which a start sweeps first
}

// minSweep is the smallest number of live goroutines that triggers a sweep.
const minSweep = 1024

func (g *globalState) coroutineSet() *coroutineSet {
	if g.coroutines == nil {
		g.coroutines = &coroutineSet{live: make(map[*coLink]struct{}), sweepAt: minSweep}
	}
	return g.coroutines
}

func (s *coroutineSet) remove(k *coLink) {
	s.mu.Lock()
	delete(s.live, k)
	s.mu.Unlock()
}

func (s *coroutineSet) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.live)
}

func (s *coroutineSet) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// newCoroutine creates a coroutine whose body is f.
func (l *State) newCoroutine(f value) *coroutineHandle {
	l.reserve(stateBytes + basicStackSize*arraySlotBytes + coroutineBytes)
	t := &State{global: l.global, allowHook: true}
	t.initializeStack()
	// Like lua_newthread: the new thread inherits the creator's hook (the
	// host's instruction count hook covers every coroutine).
	t.hooker, t.hookMask, t.baseHookCount = l.hooker, l.hookMask, l.baseHookCount
	t.resetHookCount()
	t.coroutine = &coroutine{}
	h := &coroutineHandle{thread: t}
	t.coroutine.handle = weak.Make(h)
	t.push(f)
	return h
}

// resume runs h with the narg values on top of l's stack as arguments, as
// lua_resume plus lcorolib's auxresume do. It pops the arguments and
// pushes the results, returning their number, or pushes the error value
// and returns -1.
func (l *State) resume(h *coroutineHandle, narg int) int {
	co := h.thread
	c := co.coroutine
	fail := func(msg string) int {
		l.top -= narg
		l.push(msg)
		return -1
	}
	set := l.global.coroutineSet()
	if !co.CheckStack(narg) {
		return fail("too many arguments to resume")
	}
	switch {
	case c.status == coDead || set.isClosed() || c.link != nil && c.link.killed():
		return fail("cannot resume dead coroutine")
	case c.status != coInitial && c.status != coSuspended:
		return fail("cannot resume non-suspended coroutine")
	}
	// The chain of resumes is one Go call stack for the limit of nested Go
	// calls: the coroutine's count continues the resumer's.
	// (+1: the call of the body, or the yield's own frame.)
	level := l.nestedGoCallCount + 1
	if level+co.nestedGoCallCount-co.nestedBase+1 >= maxCallCount {
		l.nestedCallsExceeded()
		return fail("C stack overflow")
	}
	if c.link == nil {
		l.reserve(goroutineBytes) // may raise the memory error, in l
		if set.count() >= set.sweepAt {
			l.collectCoroutines()
			set.sweepAt = max(minSweep, 2*set.count())
		}
	}
	copy(co.stack[co.top:], l.stack[l.top-narg:l.top])
	co.top += narg
	clear(l.stack[l.top-narg : l.top])
	l.top -= narg
	co.nestedGoCallCount += level - co.nestedBase
	co.nestedBase = level
	co.depthBase = l.callInfo.depth + l.depthBase // one call depth budget
	if l.hookMask&MaskCount != 0 {
		// Charge the hand-over (and a goroutine's start) to the count, as
		// that many instructions: it costs Go work no instruction counts.
		cost := resumeCost
		if c.link == nil {
			cost += startCost
		}
		l.hookCount = max(1, l.hookCount-cost)
	}
	shareCount := l.hookMask&MaskCount != 0 && co.hookMask == l.hookMask && co.baseHookCount == l.baseHookCount
	if shareCount { // one instruction count for all threads
		co.hookCount = l.hookCount
	}
	if lc := l.coroutine; lc != nil {
		lc.status = coNormal
	}
	c.status, c.self, c.resumer = coRunning, h, l
	var ev coEvent
	if c.link == nil {
		ev = l.startCoroutine(h)
	} else {
		c.link.parked = false
		c.link.wake <- struct{}{}
		ev = <-c.link.back
	}
	if shareCount {
		l.hookCount = co.hookCount
	}
	if lc := l.coroutine; lc != nil {
		lc.status = coRunning
	}
	c.self, c.resumer = nil, nil
	switch ev.kind {
	case coYielded:
		c.status, c.link.parked = coSuspended, true
		return l.moveResults(co, co.top-(co.callInfo.function+1))
	case coReturned:
		l.finishCoroutine(co)
		return l.moveResults(co, co.top-1)
	case coFailed:
		l.finishCoroutine(co)
		co.top--
		l.push(co.stack[co.top])
		co.stack[co.top] = nil
		return -1
	default: // a Go panic the coroutine's protection did not handle
		l.finishCoroutine(co)
		panic(ev.panic) // continues in the resumer, as if raised there
	}
}

func (l *State) finishCoroutine(co *State) {
	c := co.coroutine
	c.status = coDead
	l.global.coroutines.remove(c.link)
	c.link.done.Wait() // the goroutine has exited: nothing of it runs on
}

// moveResults moves the top n values of co to l.
func (l *State) moveResults(co *State, n int) int {
	from := co.top - n
	if !l.CheckStack(n + 1) {
		clear(co.stack[from:co.top])
		co.top = from
		l.push("too many results to resume")
		return -1
	}
	copy(l.stack[l.top:], co.stack[from:co.top])
	l.top += n
	clear(co.stack[from:co.top])
	co.top = from
	return n
}

// startCoroutine starts h's goroutine and waits until it hands control back.
func (l *State) startCoroutine(h *coroutineHandle) coEvent {
	co := h.thread
	set := l.global.coroutines
	k := &coLink{
		wake: make(chan struct{}, 1),
		back: make(chan coEvent, 1),
		kill: make(chan struct{}, 1),
	}
	k.done.Add(1)
	co.coroutine.link = k
	set.mu.Lock()
	set.live[k] = struct{}{}
	set.mu.Unlock()
	// A cleanup, not a finalizer: a finalizer would never run for a
	// handle in a reference cycle (its coroutine's closure referring to it).
	runtime.AddCleanup(h, func(k *coLink) {
		set.remove(k)
		k.stop()
	}, k)
	go co.runCoroutine(k)
	return <-k.back
}

// runCoroutine is the body of a coroutine's goroutine: it calls the
// function at stack index 1 with the arguments above it, in protected mode
// as the main thread's calls are.
func (l *State) runCoroutine(k *coLink) {
	defer k.done.Done()
	defer func() {
		// Runtime.Goexit (the coroutine was ended) recovers nil.
		if r := recover(); r != nil {
			k.back <- coEvent{kind: coPanicked, panic: r}
		}
	}()
	err := l.protectedCall(func() { l.call(1, MultipleReturns, true) }, 1, 0)
	if err != nil {
		k.back <- coEvent{kind: coFailed}
		return
	}
	k.back <- coEvent{kind: coReturned}
}

// yield suspends the running coroutine l with its function's values as
// the results of the resume, and returns the number of values the next
// resume passes (they are on the stack).
func (l *State) yield() int {
	if l.nonYieldableCallCount > 0 {
		if l.coroutine == nil {
			l.runtimeError("attempt to yield from outside a coroutine")
		}
		l.runtimeError("attempt to yield across a C-call boundary")
	}
	k := l.coroutine.link
	k.back <- coEvent{kind: coYielded}
	select {
	case <-k.wake:
	case <-k.kill:
		runtime.Goexit()
	}
	return l.top - (l.callInfo.function + 1)
}

// collectCoroutines ends the parked coroutines that nothing reachable
// from the roots of l's global state refers to.
func (l *State) collectCoroutines() {
	ReachableBytes(l)
	l.global.sweepCoroutines()
}

// CollectCoroutines ends the suspended coroutines of l's global state that
// nothing reachable from its roots refers to (including those whose own
// stack refers to them, which Go's collector cannot reclaim), and returns
// the number of coroutines left alive. It walks everything reachable, like
// ReachableBytes. A host may call it between calls, from the goroutine
// that runs the state's Lua. It is part of the coroutine patch.
func CollectCoroutines(l *State) int {
	if l.global.coroutines == nil {
		return 0
	}
	l.collectCoroutines()
	return LiveCoroutines(l)
}

// sweepCoroutines ends the parked coroutines the last ReachableBytes walk
// did not reach. It runs on the goroutine running Lua.
func (g *globalState) sweepCoroutines() {
	s := g.coroutines
	if s == nil {
		return
	}
	var victims []*coLink
	s.mu.Lock()
	for k := range s.live {
		if k.parked && k.mark != g.walkEpoch {
			victims = append(victims, k)
			delete(s.live, k)
		}
	}
	s.mu.Unlock()
	stopAll(victims)
}

func stopAll(links []*coLink) {
	for _, k := range links {
		k.signal()
	}
	for _, k := range links {
		k.done.Wait()
	}
}

// CloseCoroutines ends every suspended coroutine of l's global state and
// waits until their goroutines have exited; afterwards no coroutine of the
// state can be resumed ("cannot resume dead coroutine"). A host calls it
// when it discards a state, from the goroutine that runs the state's Lua
// (with no coroutine running). It is part of the coroutine patch.
func CloseCoroutines(l *State) {
	s := l.global.coroutines
	if s == nil {
		return
	}
	var links []*coLink
	s.mu.Lock()
	s.closed = true
	for k := range s.live {
		if k.parked { // a running chain ends by itself; it cannot resume
			links = append(links, k)
			delete(s.live, k)
		}
	}
	s.mu.Unlock()
	stopAll(links)
}

// LiveCoroutines returns the number of goroutines the coroutines of l's
// global state hold (started, not yet dead or ended). It is part of the
// coroutine patch.
func LiveCoroutines(l *State) int {
	if s := l.global.coroutines; s != nil {
		return s.count()
	}
	return 0
}

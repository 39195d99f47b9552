package lua

// This file is part of the "limits" patch (see PATCHES.md): it lets the host
// bound what a script running on a State may make the VM allocate.

import (
	"fmt"
	"math"
)

// Limits bounds what scripts running on a State (and all its threads) may
// do. Zero fields mean unlimited.
//
// Exceeding a limit raises an ordinary Lua runtime error (catchable by
// pcall) with one of these messages:
//
//	string length exceeds limit (N bytes)
//	stack overflow (call depth limit N)
//	not enough memory (limit N bytes)
type Limits struct {
	// MaxStringLength is the longest string the VM may build with the
	// concatenation operator (..), Concat, string.rep, string.format and
	// table.concat. The check happens before the string is allocated.
	MaxStringLength int

	// MaxCallDepth is the most nested Lua and Go call frames (CallInfo
	// depth). Deeper recursion raises an error instead of growing the Lua
	// stack without bound. Tail calls do not add frames. Independently of
	// this limit, go-lua refuses more than 200 nested Go-to-Lua re-entries
	// (metamethods, pcall, sort comparators) with "Go stack overflow"; that
	// error is also reported through OnLimit with kind "stack".
	MaxCallDepth int

	// MaxMemory is a ceiling on the estimated live bytes of the VM. The VM
	// counts its allocations cheaply; once the count passes MaxMemory it
	// measures the live size with ReachableBytes and raises the error only
	// if that exceeds MaxMemory, so garbage never causes a false positive.
	// The next measurement happens after max(MaxMemory/8, live/4) further
	// bytes, so the estimated live size may overshoot MaxMemory by up to a
	// quarter before the error.
	MaxMemory int64

	// OnLimit, if set, is called just before a limit error is raised; kind
	// is "string", "stack" or "memory" and limit the value that was
	// exceeded. It must only record the event: it must not call into l.
	OnLimit func(l *State, kind string, limit int64)
}

// Estimated sizes, in bytes, of the objects the VM allocates (measured with
// Go 1.26 on amd64; see limits_test.go for the heap checks).
const (
	stringHeaderBytes = 16  // a string boxed in an interface
	numberBytes       = 8   // a float64 boxed in an interface
	arraySlotBytes    = 16  // one []value slot
	hashEntryBytes    = 72  // one map[value]value entry, including growth slack
	tableBytes        = 144 // table struct plus an empty map
	luaClosureBytes   = 48
	upValueBytes      = 40 // the *upValue slot plus the upValue itself
	goClosureBytes    = 48
	goFunctionBytes   = 16
	userDataBytes     = 64 // userData struct plus a fixed estimate for its Go data
	callInfoBytes     = 160
	openUpValueBytes  = 48
	stateBytes        = 512
	prototypeBytes0   = 192 // prototype struct and slice headers
)

// limitState is embedded in globalState.
type limitState struct {
	limits         Limits
	maxCallDepth   int   // limits.MaxCallDepth, or math.MaxInt when unlimited
	allocatedBytes int64 // estimated bytes allocated since the last check or reset
	allocCheckAt   int64 // allocatedBytes above which the live size is measured
	walkEpoch      uint32
}

var unlimited = limitState{maxCallDepth: math.MaxInt, allocCheckAt: math.MaxInt64}

// SetLimits sets the limits of l's global state, shared by all its threads.
// It may be called at any time; it does not reset the allocation count.
func SetLimits(l *State, lim Limits) {
	g := l.global
	g.limits = lim
	g.maxCallDepth = math.MaxInt
	if lim.MaxCallDepth > 0 {
		g.maxCallDepth = lim.MaxCallDepth
	}
	g.allocCheckAt = math.MaxInt64
	if lim.MaxMemory > 0 {
		g.allocCheckAt = lim.MaxMemory
	}
}

// Limits returns the limits set with SetLimits.
func (l *State) Limits() Limits { return l.global.limits }

// Allocated returns the running estimate of bytes allocated by the VM since
// the last ResetAllocated or memory check (a memory check sets it to the
// measured live size).
func Allocated(l *State) int64 { return l.global.allocatedBytes }

// ResetAllocated sets the running allocation estimate to zero.
func ResetAllocated(l *State) { l.global.allocatedBytes = 0 }

// AddAllocated lets host Go functions account for n bytes they are about to
// create on behalf of the script (for example a Go-side buffer). Call it
// before allocating: if the count passes MaxMemory, the live size plus n is
// measured and, if that exceeds MaxMemory, the memory error is raised and
// AddAllocated does not return. Values pushed with PushString, CreateTable,
// NewTable, PushUserData and PushGoClosure are counted automatically.
func AddAllocated(l *State, n int64) { l.reserve(n) }

// CheckStringLength raises the string length error if n exceeds
// MaxStringLength. Host functions that build strings for scripts call it
// before building them.
func CheckStringLength(l *State, n int) { l.checkStringLength(n) }

// allocated counts n bytes of a new object that is already reachable.
func (l *State) allocated(n int64) {
	g := l.global
	if g.allocatedBytes += n; g.allocatedBytes > g.allocCheckAt {
		l.checkMemory(0)
	}
}

// reserve counts n bytes of an object that is about to be allocated.
func (l *State) reserve(n int64) { l.reservePending(n, n) }

// reservePending counts n more bytes of an object being built that will
// hold pending bytes in all and is not reachable yet.
func (l *State) reservePending(n, pending int64) {
	g := l.global
	if g.allocatedBytes += n; g.allocatedBytes > g.allocCheckAt {
		l.checkMemory(pending)
	}
}

// checkMemory measures the live size of the VM plus pending bytes not yet
// reachable and raises the memory error when it exceeds MaxMemory.
func (l *State) checkMemory(pending int64) {
	g := l.global
	lim := g.limits.MaxMemory
	if lim <= 0 {
		g.allocCheckAt = math.MaxInt64
		return
	}
	live := ReachableBytes(l) + pending
	g.sweepCoroutines() // coroutine patch: end the parked coroutines the walk did not reach
	g.allocatedBytes = live
	if live <= lim {
		// Measure again after max(MaxMemory/8, live/4) more bytes: the
		// walk costs time proportional to the live objects, so this bounds
		// its amortized cost per allocated byte, at the price of letting
		// the estimated live size overshoot MaxMemory by up to a quarter.
		g.allocCheckAt = max64(lim, live+max64(lim/8, live/4))
		return
	}
	if l.protectFunction == nil {
		// Not inside a protected call: raising would panic the host. The
		// next allocation measures again and raises if protected.
		g.allocCheckAt = live
		return
	}
	g.allocCheckAt = lim // stay over: every further allocation rechecks
	l.limitError("memory", lim, fmt.Sprintf("not enough memory (limit %d bytes)", lim))
}

func (l *State) checkStringLength(n int) {
	if lim := l.global.limits.MaxStringLength; lim > 0 && n > lim {
		l.limitError("string", int64(lim), fmt.Sprintf("string length exceeds limit (%d bytes)", lim))
	}
}

// callDepthExceeded is called when a frame at depth > maxCallDepth is about
// to be pushed. The first time, it raises the stack error; while that error
// is being handled, the error handler gets MaxCallDepth/8+callDepthSlack
// extra frames, beyond which "error in error handling" is thrown.
func (l *State) callDepthExceeded(depth int) {
	lim := l.global.limits.MaxCallDepth
	if lim <= 0 {
		return
	}
	if l.callDepthErrorRaised {
		if depth <= lim+lim>>3+callDepthSlack {
			return
		}
		l.throw(ErrorError)
	}
	l.callDepthErrorRaised = true
	l.limitError("stack", int64(lim), fmt.Sprintf("stack overflow (call depth limit %d)", lim))
}

const callDepthSlack = 20

// nestedCallsExceeded reports go-lua's own limit on nested Go calls.
func (l *State) nestedCallsExceeded() {
	if f := l.global.limits.OnLimit; f != nil {
		f(l, "stack", maxCallCount)
	}
}

func (l *State) limitError(kind string, limit int64, message string) {
	if f := l.global.limits.OnLimit; f != nil {
		f(l, kind, limit)
	}
	l.runtimeError(message)
}

func max64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

func tableAllocBytes(arraySize, hashSize int) int64 {
	return tableBytes + int64(arraySize)*arraySlotBytes + int64(hashSize)*hashEntryBytes
}

// prototypeOwnBytes estimates a prototype without its nested prototypes.
func prototypeOwnBytes(p *prototype) int64 {
	return prototypeBytes0 + int64(len(p.code))*4 + int64(len(p.constants))*arraySlotBytes +
		int64(len(p.lineInfo))*4 + int64(len(p.localVariables))*48 + int64(len(p.upValues))*40
}

// prototypeBytes estimates a prototype and its nested prototypes,
// including string constants.
func prototypeBytes(p *prototype) int64 {
	n := prototypeOwnBytes(p)
	for _, k := range p.constants {
		if s, ok := k.(string); ok {
			n += int64(len(s)) + stringHeaderBytes
		}
	}
	for i := range p.prototypes {
		n += prototypeBytes(&p.prototypes[i])
	}
	return n
}

package lua

// This file is part of the "limits" patch (see PATCHES.md): it lets the host
// bound what a script running on a State may make the VM allocate.

import (
	"fmt"
	"io"
	"math"
	"sync"
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

	// Pool, if set, is a ceiling shared with other States (see
	// MemoryPool): the State's measured live size counts toward it, and
	// the State whose measurement takes the pool over its ceiling gets
	// "not enough memory (worker limit N bytes)" (OnLimit kind "pool").
	Pool *MemoryPool

	// MaxSourceLength is the longest chunk, in bytes of source text, that
	// Load, LoadBuffer and load accept; a longer one fails to load with
	// "chunk too long (limit N bytes)" (OnLimit kind "source"), before it
	// is parsed when its length is known, else as soon as the reader has
	// produced more.
	MaxSourceLength int

	// Charge, if set, is called with an estimate, in instruction-equivalent
	// steps, of work the VM does that runs no Lua instruction and so is
	// not seen by a count hook: parsing and compiling a chunk (every
	// ChargeEvery steps of it, one step per token scanned plus per
	// instruction emitted, times parseStepCost), and snapshotting a
	// table's keys or indexing the snapshot for next (one step per
	// workPerStep keys). Like a count hook it may raise an error (Error,
	// Errorf) to stop the work: a parse stopped so fails to load with that
	// error. It is only called inside a protected call.
	Charge func(l *State, steps int)

	// OnLimit, if set, is called just before a limit error is raised; kind
	// is "string", "stack", "memory", "pool" or "source" and limit the value that was
	// exceeded. It must only record the event: it must not call into l.
	OnLimit func(l *State, kind string, limit int64)
}

// MemoryPool is a memory ceiling shared by several States (limits patch),
// such as all the tenant VMs of one worker, whose own MaxMemory limits may
// add up to more. It holds each member's last measured live size
// (ReachableBytes, taken at the member's memory checks). A member checks
// at least every max(Max/64, live/4) allocated bytes and then compares
// the sum of its new size and the other members' allocation counts (their
// last size plus what they allocated since) with Max; over it, the other
// members are measured again (their last size may be stale: a script that
// dropped its data allocates nothing, so garbage never causes a false
// positive) and the checking member gets the error if the measured sum is
// still over. The sum may so overshoot Max by up to what the checking
// member allocated since its previous check: max(Max/64, live/4).
//
// Members may run concurrently if the host brackets each run with
// EnterPool and ExitPool (concurrency patch): a running member is never
// measured by another one — its last measured size plus what it may
// allocate before its own next check, max(Max/64, live/4), stands for it
// in the estimate, and its last measured size in the final sum — so the
// sum may overshoot Max by up to that step for each member running at
// the time. A member that runs without EnterPool must not run while
// another member checks. A pool itself is safe for concurrent use.
type MemoryPool struct {
	max     int64
	mu      sync.Mutex
	used    int64
	members map[*globalState]*poolMember
}

// poolMember is what a pool knows of one member.
type poolMember struct {
	share   int64 // last measured live size
	running bool  // between EnterPool and ExitPool: not to be measured by others
}

// NewMemoryPool returns a pool with the ceiling max bytes.
func NewMemoryPool(max int64) *MemoryPool {
	return &MemoryPool{max: max, members: make(map[*globalState]*poolMember)}
}

// Max returns the pool's ceiling.
func (p *MemoryPool) Max() int64 { return p.max }

// Used returns the sum of the members' last measured live sizes.
func (p *MemoryPool) Used() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.used
}

// LeavePool removes l's State from its pool (its share no longer counts).
// A State that joined a pool (at its first memory check, or EnterPool)
// must leave it when it is discarded: the pool refers to its members, so
// one that never leaves stays alive and counted.
func LeavePool(l *State) {
	g := l.global
	p := g.limits.Pool
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if m := p.members[g]; m != nil {
		p.used -= m.share
		delete(p.members, g)
	}
}

// EnterPool marks l's State as running (concurrency patch): until
// ExitPool, other members checking the pool do not measure it, and it may
// run while they do. No-op without a pool.
func EnterPool(l *State) { setRunning(l, true) }

// ExitPool ends EnterPool: l's State is idle again, measurable by the
// member that checks next.
func ExitPool(l *State) { setRunning(l, false) }

func setRunning(l *State, running bool) {
	g := l.global
	p := g.limits.Pool
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	m := p.members[g]
	if m == nil {
		m = &poolMember{}
		p.members[g] = m
	}
	m.running = running
}

// update records g's measured live size and reports whether the pool is
// over its ceiling. The sum is estimated with each other idle member's
// allocation count (its last measured size plus what it allocated since:
// an upper bound of its live size) and each running member's next check
// point; only when that estimate is over the ceiling are the other idle
// members measured again.
func (p *MemoryPool) update(g *globalState, live int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	self := p.members[g]
	if self == nil {
		self = &poolMember{}
		p.members[g] = self
	}
	p.used += live - self.share
	self.share = live
	est := live
	for mg, m := range p.members {
		switch {
		case mg == g:
		case m.running:
			est += m.share + max64(p.poolStep(), m.share/4)
		default:
			est += max64(m.share, mg.allocatedBytes)
		}
	}
	if est <= p.max {
		return false
	}
	for mg, m := range p.members {
		if mg == g || m.running {
			continue
		}
		now := ReachableBytes(mg.mainThread)
		mg.measured(now)
		p.used += now - m.share
		m.share = now
	}
	return p.used > p.max
}

// poolStep is how many bytes a pool member may allocate between checks
// (at least; see measured).
func (p *MemoryPool) poolStep() int64 { return max64(p.max/64, 1) }

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
	if lim.Pool != nil {
		g.allocCheckAt = min64(g.allocCheckAt, g.allocatedBytes+lim.Pool.poolStep())
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
// reachable and raises the memory error when it exceeds MaxMemory, or the
// pool's when the pool goes over its ceiling.
func (l *State) checkMemory(pending int64) {
	g := l.global
	lim, pool := g.limits.MaxMemory, g.limits.Pool
	if lim <= 0 && pool == nil {
		g.allocCheckAt = math.MaxInt64
		return
	}
	live := ReachableBytes(l) + pending
	g.sweepCoroutines() // coroutine patch: end the parked coroutines the walk did not reach
	over := lim > 0 && live > lim
	poolOver := !over && pool != nil && pool.update(g, live) // limits patch: pool
	g.measured(live)
	if !over && !poolOver {
		return
	}
	if l.protectFunction == nil {
		// Not inside a protected call: raising would panic the host. The
		// next allocation measures again and raises if protected.
		g.allocCheckAt = live
		return
	}
	if poolOver {
		// The next check is at the usual distance: re-measuring every
		// member at every allocation would be too costly.
		l.limitError("pool", pool.max, fmt.Sprintf("not enough memory (worker limit %d bytes)", pool.max))
	}
	g.allocCheckAt = lim // stay over: every further allocation rechecks
	l.limitError("memory", lim, fmt.Sprintf("not enough memory (limit %d bytes)", lim))
}

// measured records a measurement of the live size and sets the threshold
// of the next one: after max(MaxMemory/8, live/4) more bytes (the walk
// costs time proportional to the live objects, so this bounds its
// amortized cost per allocated byte, at the price of letting the estimated
// live size overshoot MaxMemory by up to a quarter), or sooner, after
// max(pool ceiling/64, live/4), for a pool member.
func (g *globalState) measured(live int64) {
	g.allocatedBytes = live
	lim, pool := g.limits.MaxMemory, g.limits.Pool
	next := int64(math.MaxInt64)
	if lim > 0 {
		next = max64(lim, live+max64(lim/8, live/4))
	}
	if pool != nil {
		next = min64(next, live+max64(pool.poolStep(), live/4))
	}
	g.allocCheckAt = next
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

// Work charged through Limits.Charge (limits patch).
const (
	// ChargeEvery is how many steps of parsing are gathered between two
	// calls of Limits.Charge.
	ChargeEvery = 1000
	// parseStepCost is the steps charged per token scanned and per
	// instruction emitted. Measured on 2 shared cores: a token or an
	// emitted instruction costs about 190 ns of parsing, a VM instruction
	// of a plain loop 80-90 ns, so a unit of parsing is charged as about
	// four instructions (up to twice its cost: on the safe side).
	parseStepCost = 4
	// workPerStep is how many keys next snapshots or indexes per step
	// (copying a key costs about as much as a VM instruction).
	workPerStep = 1
	// bytesPerStep and chargeBytesMin: a VM instruction that copies,
	// compares or builds a string of chargeBytesMin bytes or more (..,
	// ==, <, <=) is charged one step per bytesPerStep bytes besides the
	// instruction itself, so that 8 MiB strings cannot make each
	// instruction cost milliseconds (limits patch). Copying 4 KiB costs a
	// few instructions' time: the charge bounds the count hook's interval
	// to about a millisecond of copying without making legitimate string
	// building expensive.
	bytesPerStep   = 4096
	chargeBytesMin = 16 << 10
)

// Estimated bytes of what the compiler builds, with append's slack
// (limits patch: parseWork.grow).
const (
	instructionBytes     = 16                               // one code and one lineInfo entry, each 4 bytes, doubled
	constantBytes        = 104                              // a constants slot (doubled) and a constantLookup entry
	localVariableBytes   = 96                               // a localVariables entry, doubled
	upValueDescBytes     = 80                               // an upValues entry, doubled
	nestedPrototypeBytes = 2*prototypeBytes0 + 2*tableBytes // a prototypes entry (doubled) and its function state
)

// parseWork is the compiler's account of its work (limits patch), kept in
// the scanner: steps not yet passed to Limits.Charge, and the estimated
// bytes of the prototypes being built, which nothing reachable holds yet.
type parseWork struct {
	steps int
	bytes int64
}

// step counts n steps of parsing and passes them to Limits.Charge every
// ChargeEvery steps.
func (w *parseWork) step(l *State, n int) {
	if w.steps += n; w.steps >= ChargeEvery {
		steps := w.steps
		w.steps = 0
		l.chargeWork(steps)
	}
}

// grow accounts n more bytes of the chunk being compiled: when the
// allocation count passes its threshold, the live size plus everything
// compiled so far is checked against MaxMemory.
func (w *parseWork) grow(l *State, n int64) {
	w.bytes += n
	l.reservePending(n, w.bytes)
}

// sourceLimiter fails the parse once its reader has produced more than
// MaxSourceLength bytes (limits patch).
type sourceLimiter struct {
	l    *State
	r    io.Reader
	left int
}

func (s *sourceLimiter) Read(b []byte) (int, error) {
	if len(b) > s.left+1 {
		b = b[:s.left+1]
	}
	n, err := s.r.Read(b)
	if s.left -= n; s.left < 0 {
		s.l.sourceTooLong()
	}
	return n, err
}

// limitSource returns r bounded by MaxSourceLength; a reader that tells
// its length (LoadBuffer's) is refused before anything is read.
func (l *State) limitSource(r io.Reader) io.Reader {
	max := l.global.limits.MaxSourceLength
	if max <= 0 {
		return r
	}
	if n, ok := r.(interface{ Len() int }); ok && n.Len() > max {
		l.sourceTooLong()
	}
	return &sourceLimiter{l: l, r: r, left: max}
}

func (l *State) sourceTooLong() {
	max := l.global.limits.MaxSourceLength
	l.limitError("source", int64(max), fmt.Sprintf("chunk too long (limit %d bytes)", max))
}

// chargeBytes charges the work of copying or comparing n bytes of string,
// when n is large enough to matter (see bytesPerStep).
func (l *State) chargeBytes(n int) {
	if n >= chargeBytesMin {
		l.chargeWork(n / bytesPerStep)
	}
}

// chargeWork passes steps of work to Limits.Charge, inside protected calls
// only (raising outside one would panic the host).
func (l *State) chargeWork(steps int) {
	if f := l.global.limits.Charge; f != nil && steps > 0 && l.protectFunction != nil {
		f(l, steps)
	}
}

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

func min64(a, b int64) int64 {
	if a < b {
		return a
	}
	return b
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

package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	lua "github.com/Shopify/go-lua"
	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/mesophyll"
	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/worker/luastd"
)

// VM is one tenant's Lua state: the sandboxed libraries, the host API bound
// to the tenant, and its compiled templates. A VM is owned by one worker
// goroutine; nothing else may touch it.
type VM struct {
	l        *lua.State
	tenant   proto.Id
	store    Store
	log      zerolog.Logger
	limits   Limits
	compiled []string // template names; the i-th is at i+1 in the registry's templates table
	broken   bool
	created  time.Time

	call callState // the call in progress, if any
	// shared, while active, is the budget the templates of one dispatch
	// share: one --lua-timeout from the first template's start, one
	// instruction budget across them all.
	shared sharedBudget
	// stop, when set by the worker, ends the call at the next count hook:
	// the worker abandoned this VM (its watchdog fired).
	stop *atomic.Bool

	coroutinesAfterSweep int // live coroutines after the last end-of-call sweep

	std luastd.Limits // what the shared luastd functions charge (stdLimits)

	// logs, when set, is the tenant's log volume over time (the Manager
	// sets it: it outlives the VM), read with logNow.
	logs   *logBucket
	logNow func() time.Time

	// meterFn is vm.meter, boxed once: a method value passed to the JSON
	// code allocates its closure on every call.
	meterFn func(steps int) error
}

// sharedBudget is what the calls of one dispatch have spent together.
type sharedBudget struct {
	active bool
	start  time.Time
	steps  int64
}

// shareBudget makes the calls until unshareBudget one call for the limits,
// starting at start (now): a dispatch's templates cannot each take a
// whole --lua-timeout.
func (vm *VM) shareBudget(start time.Time) { vm.shared = sharedBudget{active: true, start: start} }

// unshareBudget ends shareBudget.
func (vm *VM) unshareBudget() { vm.shared = sharedBudget{} }

// callState is the per-call budget and outcome, read by the count hook and
// the host functions.
type callState struct {
	ctx      context.Context
	active   bool
	steps    int64
	deadline time.Time
	// callerBudget is set when the caller's context deadline, not
	// Limits.Timeout, is the sooner one: the time it left the call.
	callerBudget time.Duration
	// abort is set once a limit is hit: the call is ending, pcall must not
	// swallow it, and the VM is discarded afterwards.
	abort *proto.Error
	// hostErr is the last store error a host function raised, so that an
	// unhandled store failure surfaces with its own code.
	hostErr *proto.Error
	// log accounts the call's log volume (see vmlog.go).
	log logState
	// onLong, when the call runs on a process worker's reading goroutine,
	// hands that reading to another goroutine; spend calls it once the
	// call has run past longAt (mesophyll.InlineHandoff).
	onLong func()
	longAt time.Time
}

// inlineHandoffAfter is how long a call may run on a process worker's
// reading goroutine before the reading moves to another one.
const inlineHandoffAfter = time.Millisecond

// templatesKey is the registry field holding compiled template functions,
// a sequence indexed by VM.compiled.
const templatesKey = "templateworker.templates"

// Registry keys boxed once: looking them up with RawGetValue costs no
// allocation on the dispatch path (Field converts its key on every call).
var (
	templatesKeyValue any = templatesKey
	ctxKeyValue       any = ctxKey
)

// newVM builds a sandboxed VM for tenant.
func newVM(tenant proto.Id, store Store, limits Limits, log zerolog.Logger) (*VM, error) {
	vm := &VM{
		l:       lua.NewState(),
		tenant:  tenant,
		store:   store,
		limits:  limits,
		log:     log,
		created: time.Now(),
	}
	vm.meterFn = vm.meter
	if err := vm.openSandbox(); err != nil {
		return nil, fmt.Errorf("open libraries for %s: %w", tenant, err)
	}
	vm.setLimits(nil)
	lua.SetDebugHook(vm.l, vm.hook, lua.MaskCount, hookEvery)
	vm.l.NewTable()
	vm.l.SetField(lua.RegistryIndex, templatesKey)
	return vm, nil
}

// setLimits applies the VM's limits, sharing pool (nil: none) with the
// other VMs of its worker.
func (vm *VM) setLimits(pool *lua.MemoryPool) {
	lua.SetLimits(vm.l, lua.Limits{
		MaxStringLength: vm.limits.MaxString,
		MaxCallDepth:    vm.limits.MaxCallDepth,
		MaxMemory:       vm.limits.MaxMemory,
		Pool:            pool,
		MaxSourceLength: vm.limits.maxSource(),
		Charge:          vm.charge, // parsing and next's snapshots, charged like instructions
		OnLimit:         vm.onLimit,
	})
}

// liveBytes is the VM's own estimate of the memory it holds: what it
// measured at its last memory check plus what it allocated since.
func (vm *VM) liveBytes() int64 { return lua.Allocated(vm.l) }

// Compile checks that code is valid Lua, returning the syntax error (with
// its line) if not. It runs nothing.
func Compile(name, code string) error {
	l := lua.NewState()
	// Bounded like a worker's compilation with the default limits.
	lua.SetLimits(l, lua.Limits{MaxMemory: DefaultLimits.MaxMemory, MaxSourceLength: DefaultLimits.maxSource()})
	if err := lua.LoadBuffer(l, code, "="+name, "t"); err != nil {
		msg, _ := l.ToString(-1)
		return proto.Errorf(proto.CodeCompileError, "%s", msg)
	}
	return nil
}

// load compiles code and leaves the function on the stack. Compiling is
// charged to the call's budget (begin must have been called): a limit hit
// while compiling is the call's error.
func (vm *VM) load(name, code string) error {
	if err := lua.LoadBuffer(vm.l, code, "="+name, "t"); err != nil {
		msg, _ := vm.l.ToString(-1)
		vm.l.Pop(1)
		if a := vm.call.abort; a != nil {
			return a
		}
		return proto.Errorf(proto.CodeCompileError, "%s", msg)
	}
	return nil
}

// pushTemplate pushes the compiled function of t, compiling it once per VM.
func (vm *VM) pushTemplate(t *proto.Template) error {
	l := vm.l
	l.RawGetValue(lua.RegistryIndex, templatesKeyValue)
	// A tenant has a few templates: a scan costs less than a map per VM.
	for i, name := range vm.compiled {
		if name == t.Name {
			l.RawGetInt(-1, i+1)
			l.Remove(-2)
			return nil
		}
	}
	if err := vm.loadTemplate(t.Name, t.Code); err != nil {
		l.Pop(1)
		return err
	}
	n := len(vm.compiled) + 1
	l.PushValue(-1)
	l.RawSetInt(-3, n)
	l.Remove(-2)
	vm.compiled = append(vm.compiled, t.Name)
	return nil
}

// begin starts a call's budget.
func (vm *VM) begin(ctx context.Context) {
	c := &vm.call
	*c = callState{ctx: ctx, active: true}
	// A dispatch's templates start at the dispatch's start: the clock is
	// read here only for a call of its own or a caller's deadline.
	var now, start time.Time
	if vm.shared.active {
		start, c.steps = vm.shared.start, vm.shared.steps
	} else {
		now = time.Now()
		start = now
	}
	if vm.limits.Timeout > 0 {
		c.deadline = start.Add(vm.limits.Timeout)
	}
	if d, ok := ctx.Deadline(); ok && (c.deadline.IsZero() || d.Before(c.deadline)) {
		if now.IsZero() {
			now = time.Now()
		}
		c.deadline = d
		c.callerBudget = max(d.Sub(now), time.Millisecond)
	}
	if c.onLong = mesophyll.InlineHandoff(ctx); c.onLong != nil {
		c.longAt = start.Add(inlineHandoffAfter)
	}
}

// end finishes a call; an aborted call breaks the VM.
func (vm *VM) end() {
	if vm.shared.active {
		vm.shared.steps = vm.call.steps
	}
	vm.endLog()
	if vm.call.abort != nil {
		vm.broken = true
	} else {
		vm.sweepCoroutines()
	}
	vm.call.active = false
	vm.call.ctx = nil
}

// invoke calls the function below nargs arguments on the stack in protected
// mode, leaving one result. It returns the call's error, if any.
func (vm *VM) invoke(nargs int) error {
	l := vm.l
	err := l.ProtectedCall(nargs, 1, 0)
	if vm.call.abort != nil {
		if err == nil {
			l.Pop(1)
		} else {
			l.Pop(1)
		}
		return vm.call.abort
	}
	if err != nil {
		msg := errorText(l, -1)
		l.Pop(1)
		if h := vm.call.hostErr; h != nil && strings.Contains(msg, h.Message) {
			return &proto.Error{Code: h.Code, Message: msg}
		}
		return errors.New(msg)
	}
	return nil
}

// maxErrorText bounds an error message taken from a script.
const maxErrorText = 4 << 10

// errorText renders a Lua error value, truncated to maxErrorText.
func errorText(l *lua.State, idx int) string {
	if s, ok := l.ToString(idx); ok {
		if len(s) > maxErrorText {
			return s[:maxErrorText] + fmt.Sprintf("... (truncated, %d bytes)", len(s))
		}
		return s
	}
	if l.IsNil(idx) {
		return "nil"
	}
	return "(error object is a " + lua.TypeNameOf(l, idx) + " value)"
}

// hook runs every hookEvery instructions: it charges the budget and ends
// the call when a limit is passed.
func (vm *VM) hook(l *lua.State, _ lua.Debug) {
	vm.charge(l, hookEvery)
}

// charge accounts steps of work to the call and raises the limit error when
// the call is over budget. Library functions implemented in Go call it too.
func (vm *VM) charge(l *lua.State, steps int) {
	if e := vm.spend(steps); e != nil {
		vm.raise(l, e.Message)
	}
}

// spend accounts steps of work to the call like charge, but returns the
// limit error (recorded as the call's abort) instead of raising it: host
// code running outside a protected call (event decoding, result encoding)
// uses it, where raising would panic the host.
func (vm *VM) spend(steps int) *proto.Error {
	c := &vm.call
	if !c.active {
		return nil
	}
	if c.abort != nil {
		return c.abort
	}
	if vm.stop != nil && vm.stop.Load() {
		c.abort = proto.Errorf(proto.CodeWorkerUnavailable, "the worker abandoned this VM (watchdog)")
		return c.abort
	}
	c.steps += int64(steps)
	var now time.Time
	if !c.deadline.IsZero() || c.onLong != nil {
		now = time.Now()
	}
	if c.onLong != nil && now.After(c.longAt) {
		handOff := c.onLong
		c.onLong = nil
		handOff()
	}
	if max := vm.limits.MaxInstructions; max > 0 && c.steps > max {
		c.abort = proto.Errorf(proto.CodeCPULimit, "instruction limit exceeded (%d instructions)", max)
	} else if !c.deadline.IsZero() && now.After(c.deadline) {
		c.abort = proto.Errorf(proto.CodeTimeout, "time limit exceeded (%s)", vm.timeoutText())
	} else if c.ctx != nil && c.ctx.Err() != nil {
		c.abort = proto.Errorf(proto.CodeTimeout, "call cancelled: %v", c.ctx.Err())
	}
	return c.abort
}

// meter is spend as the JSON code's charge function.
func (vm *VM) meter(steps int) error {
	if e := vm.spend(steps); e != nil {
		return e
	}
	return nil
}

// timeoutText names the deadline that ended the call: the caller's when it
// was the sooner one, else Limits.Timeout.
func (vm *VM) timeoutText() string {
	if b := vm.call.callerBudget; b > 0 {
		return "caller deadline " + b.Round(time.Millisecond).String()
	}
	if vm.limits.Timeout > 0 {
		return vm.limits.Timeout.String()
	}
	return "caller deadline"
}

// onLimit is called by the VM just before it raises a limit error: it
// records the limit so the call ends with the limit's code. It must not
// touch the State.
func (vm *VM) onLimit(_ *lua.State, kind string, limit int64) {
	if vm.call.abort != nil {
		return
	}
	switch kind {
	case "string":
		vm.call.abort = proto.Errorf(proto.CodeMemoryLimit, "string length limit exceeded (%d bytes)", limit)
	case "memory":
		vm.call.abort = proto.Errorf(proto.CodeMemoryLimit, "memory limit exceeded (%d bytes)", limit)
	case "pool":
		vm.call.abort = proto.Errorf(proto.CodeMemoryLimit,
			"worker memory limit exceeded (%d bytes across the tenants of this worker, --lua-max-worker-memory)", limit)
	case "stack":
		vm.call.abort = proto.Errorf(proto.CodeStackOverflow, "call depth limit exceeded (%d nested calls)", limit)
	case "source":
		vm.call.abort = proto.Errorf(proto.CodeMemoryLimit, "source length limit exceeded (%d bytes)", limit)
	default:
		vm.call.abort = proto.Errorf(proto.CodeMemoryLimit, "%s limit exceeded (%d)", kind, limit)
	}
}

// raise raises msg as a Lua error with position information. It does not
// return.
func (vm *VM) raise(l *lua.State, msg string) {
	lua.Where(l, 1)
	l.PushString(msg)
	l.Concat(2)
	l.Error()
}

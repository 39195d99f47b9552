package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	lua "github.com/Shopify/go-lua"
	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
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
	compiled map[string]int // template name → its index in the registry's templates table
	broken   bool
	created  time.Time

	call callState // the call in progress, if any

	coroutinesAfterSweep int // live coroutines after the last end-of-call sweep
}

// callState is the per-call budget and outcome, read by the count hook and
// the host functions.
type callState struct {
	ctx      context.Context
	active   bool
	steps    int64
	deadline time.Time
	// abort is set once a limit is hit: the call is ending, pcall must not
	// swallow it, and the VM is discarded afterwards.
	abort *proto.Error
	// hostErr is the last store error a host function raised, so that an
	// unhandled store failure surfaces with its own code.
	hostErr *proto.Error
}

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
		l:        lua.NewState(),
		tenant:   tenant,
		store:    store,
		limits:   limits,
		log:      log,
		compiled: make(map[string]int),
		created:  time.Now(),
	}
	if err := vm.openSandbox(); err != nil {
		return nil, fmt.Errorf("open libraries for %s: %w", tenant, err)
	}
	lua.SetLimits(vm.l, lua.Limits{
		MaxStringLength: limits.MaxString,
		MaxCallDepth:    limits.MaxCallDepth,
		MaxMemory:       limits.MaxMemory,
		OnLimit:         vm.onLimit,
	})
	lua.SetDebugHook(vm.l, vm.hook, lua.MaskCount, hookEvery)
	vm.l.NewTable()
	vm.l.SetField(lua.RegistryIndex, templatesKey)
	return vm, nil
}

// Compile checks that code is valid Lua, returning the syntax error (with
// its line) if not. It runs nothing.
func Compile(name, code string) error {
	l := lua.NewState()
	if err := lua.LoadBuffer(l, code, "="+name, "t"); err != nil {
		msg, _ := l.ToString(-1)
		return proto.Errorf(proto.CodeCompileError, "%s", msg)
	}
	return nil
}

// load compiles code and leaves the function on the stack.
func (vm *VM) load(name, code string) error {
	if err := lua.LoadBuffer(vm.l, code, "="+name, "t"); err != nil {
		msg, _ := vm.l.ToString(-1)
		vm.l.Pop(1)
		return proto.Errorf(proto.CodeCompileError, "%s", msg)
	}
	return nil
}

// pushTemplate pushes the compiled function of t, compiling it once per VM.
func (vm *VM) pushTemplate(t *proto.Template) error {
	l := vm.l
	l.RawGetValue(lua.RegistryIndex, templatesKeyValue)
	if n, ok := vm.compiled[t.Name]; ok {
		l.RawGetInt(-1, n)
		l.Remove(-2)
		return nil
	}
	if err := vm.load(t.Name, t.Code); err != nil {
		l.Pop(1)
		return err
	}
	n := len(vm.compiled) + 1
	l.PushValue(-1)
	l.RawSetInt(-3, n)
	l.Remove(-2)
	vm.compiled[t.Name] = n
	return nil
}

// begin starts a call's budget.
func (vm *VM) begin(ctx context.Context) {
	c := &vm.call
	*c = callState{ctx: ctx, active: true}
	if vm.limits.Timeout > 0 {
		c.deadline = time.Now().Add(vm.limits.Timeout)
	}
	if d, ok := ctx.Deadline(); ok && (c.deadline.IsZero() || d.Before(c.deadline)) {
		c.deadline = d
	}
}

// end finishes a call; an aborted call breaks the VM.
func (vm *VM) end() {
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
	c := &vm.call
	if !c.active {
		return
	}
	if c.abort != nil {
		vm.raise(l, c.abort.Message)
	}
	c.steps += int64(steps)
	if max := vm.limits.MaxInstructions; max > 0 && c.steps > max {
		vm.abortCall(l, proto.Errorf(proto.CodeCPULimit, "instruction limit exceeded (%d instructions)", max))
	}
	if !c.deadline.IsZero() && time.Now().After(c.deadline) {
		vm.abortCall(l, proto.Errorf(proto.CodeTimeout, "time limit exceeded (%s)", vm.timeoutText()))
	}
	if c.ctx != nil && c.ctx.Err() != nil {
		vm.abortCall(l, proto.Errorf(proto.CodeTimeout, "call cancelled: %v", c.ctx.Err()))
	}
}

func (vm *VM) timeoutText() string {
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
	case "stack":
		vm.call.abort = proto.Errorf(proto.CodeStackOverflow, "call depth limit exceeded (%d nested calls)", limit)
	default:
		vm.call.abort = proto.Errorf(proto.CodeMemoryLimit, "%s limit exceeded (%d)", kind, limit)
	}
}

// abortCall records why the call ends and raises it as a Lua error; pcall
// re-raises it (see safePcall), so the script cannot swallow it.
func (vm *VM) abortCall(l *lua.State, e *proto.Error) {
	if vm.call.abort == nil {
		vm.call.abort = e
	}
	vm.raise(l, vm.call.abort.Message)
}

// raise raises msg as a Lua error with position information. It does not
// return.
func (vm *VM) raise(l *lua.State, msg string) {
	lua.Where(l, 1)
	l.PushString(msg)
	l.Concat(2)
	l.Error()
}

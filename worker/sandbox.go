package worker

import (
	"strings"

	lua "github.com/Shopify/go-lua"
	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/worker/luastd"
)

// The sandbox: which libraries a tenant VM gets. Only base (without
// dofile, loadfile and binary chunks; collectgarbage limited to "count";
// print going to the log), coroutine, string, table, math, bit32,
// os.time/clock/date, json and the ctx host API. No io, debug, package or anything that reads
// files, the environment or the network.

// removedGlobals are base functions a tenant must not have.
var removedGlobals = []string{"dofile", "loadfile", "require", "module", "loadstring"}

// gcOptions are the options Lua 5.2's collectgarbage knows; templates may
// use "count" only.
var gcOptions = map[string]bool{
	"stop": true, "restart": true, "collect": true, "count": true, "step": true,
	"setpause": true, "setstepmul": true, "setmajorinc": true, "isrunning": true,
	"generational": true, "incremental": true,
}

// keptOS are the os functions a tenant keeps.
var keptOS = []string{"time", "clock", "date", "difftime"}

// openSandbox gives the VM its globals: a copy of the shared base
// functions, the shared library tables (each the VM's own table, copied on
// its first write: see vmproto.go), the string metatable, and the ctx
// host API bound to the VM's tenant.
func (vm *VM) openSandbox() error {
	libs, err := sharedLibraries()
	if err != nil {
		return err
	}
	l := vm.l
	lua.SetHost(l, vm)
	vm.std = luastd.Limits{MaxString: vm.limits.MaxString, Charge: vm.charge, OnLimit: vm.onStdLimit}
	l.PushGlobalTable()
	lua.CopyShared(l, libs.base, -1, len(libs.tables)+1)
	for _, lib := range libs.tables {
		l.PushShared(lib.table)
		l.SetField(-2, lib.name)
	}
	l.PushValue(-1)
	l.SetField(-2, "_G")
	l.Pop(1)
	luastd.SetStringMetatable(l)
	vm.openCtx(libs)
	return nil
}

// onStdLimit is the luastd libraries' OnLimit.
func (vm *VM) onStdLimit(l *lua.State, kind string, limit int) { vm.onLimit(l, kind, int64(limit)) }

// hostVM returns the VM a shared host function runs for: the one whose
// State (or coroutine of it) l is.
func hostVM(l *lua.State) *VM { return lua.Host(l).(*VM) }

// stdLimits is the luastd libraries' per-State limits lookup.
func stdLimits(l *lua.State) *luastd.Limits { return &hostVM(l).std }

// overrideBase replaces, in the shared base library being built in l, the
// functions that need the host's control.
func overrideBase(l *lua.State) {
	l.Global("load")
	origLoad := l.ToGoFunction(-1)
	l.Pop(1)
	l.Register("load", func(l *lua.State) int {
		// Text chunks only: binary chunks can crash the VM.
		if l.Top() < 3 {
			l.SetTop(3)
		}
		if mode, ok := l.ToString(3); ok && !strings.Contains(mode, "t") {
			l.PushNil()
			l.PushString("attempt to load a binary chunk (only text chunks are allowed)")
			return 2
		}
		l.PushString("t")
		l.Replace(3)
		return origLoad(l)
	})
	l.Register("collectgarbage", func(l *lua.State) int {
		opt := lua.OptString(l, 1, "collect")
		if !gcOptions[opt] {
			// Not an option at all: the reference interpreter's message.
			lua.ArgumentError(l, 1, "invalid option '"+opt+"'")
		}
		if opt != "count" {
			lua.Errorf(l, "collectgarbage: only \"count\" is allowed in templates")
		}
		// The VM's own allocation estimate, in KiB: never the process heap,
		// which would tell a tenant about the others.
		n := lua.Allocated(l)
		l.PushNumber(float64(n) / 1024)
		l.PushInteger(int(n % 1024))
		return 2
	})
	l.Register("print", func(l *lua.State) int {
		vm := hostVM(l)
		var m messageBuilder
		n := l.Top()
		vm.charge(l, n)
		for i := 1; i <= n; i++ {
			if i > 1 {
				m.WriteString("\t")
			}
			s, _ := lua.ToStringMeta(l, i)
			l.Pop(1)
			m.WriteString(s)
		}
		vm.emitLog(l, zerolog.InfoLevel, &m)
		return 0
	})
	l.Global("pcall")
	origPcall := l.ToGoFunction(-1)
	l.Pop(1)
	l.Register("pcall", guardProtected(origPcall))
	l.Global("xpcall")
	origXpcall := l.ToGoFunction(-1)
	l.Pop(1)
	l.Register("xpcall", guardProtected(origXpcall))
}

// guardProtected wraps pcall/xpcall so that a limit error raised inside
// them propagates: an aborted call must end, whatever the script does.
func guardProtected(orig lua.Function) lua.Function {
	return func(l *lua.State) int {
		n := orig(l)
		if vm := hostVM(l); vm.call.abort != nil {
			vm.raise(l, vm.call.abort.Message)
		}
		return n
	}
}

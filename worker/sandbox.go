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

func (vm *VM) openSandbox() error {
	l := vm.l
	for _, lib := range []lua.RegistryFunction{
		{Name: "_G", Function: lua.BaseOpen},
		{Name: "string", Function: lua.StringOpen},
		{Name: "table", Function: lua.TableOpen},
		{Name: "math", Function: lua.MathOpen},
		{Name: "bit32", Function: lua.Bit32Open},
		{Name: "coroutine", Function: lua.CoroutineOpen},
	} {
		lua.Require(l, lib.Name, lib.Function, true)
		l.Pop(1)
	}
	// os: a fresh table with the harmless functions only.
	lua.Require(l, "os", lua.OSOpen, false)
	l.NewTable()
	for _, name := range keptOS {
		l.Field(-2, name)
		if !l.IsNil(-1) {
			l.SetField(-2, name)
		} else {
			l.Pop(1)
		}
	}
	l.SetGlobal("os")
	l.Pop(1)
	// The rest of Lua 5.2's string, table and os functions (patterns,
	// format, sort, time/date), bounded by the call's budget.
	luastd.Open(l, luastd.Limits{
		MaxString: vm.limits.MaxString,
		Charge:    vm.charge,
		OnLimit: func(l *lua.State, kind string, limit int) {
			vm.onLimit(l, kind, int64(limit))
		},
	})
	// The loaded-libraries registry table would let a script reach the
	// unfiltered os library through package.loaded; drop it.
	l.PushNil()
	l.SetField(lua.RegistryIndex, "_LOADED")

	for _, name := range removedGlobals {
		l.PushNil()
		l.SetGlobal(name)
	}
	vm.overrideBase()
	vm.guardResume()
	vm.openJSON()
	vm.openCtx()
	return nil
}

// overrideBase replaces the base functions that need the host's control.
func (vm *VM) overrideBase() {
	l := vm.l
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
	l.Register("pcall", vm.guardProtected(origPcall))
	l.Global("xpcall")
	origXpcall := l.ToGoFunction(-1)
	l.Pop(1)
	l.Register("xpcall", vm.guardProtected(origXpcall))
}

// guardProtected wraps pcall/xpcall so that a limit error raised inside
// them propagates: an aborted call must end, whatever the script does.
func (vm *VM) guardProtected(orig lua.Function) lua.Function {
	return func(l *lua.State) int {
		n := orig(l)
		if a := vm.call.abort; a != nil {
			vm.raise(l, a.Message)
		}
		return n
	}
}

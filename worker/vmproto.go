package worker

import (
	"fmt"
	"sync"

	lua "github.com/Shopify/go-lua"

	"github.com/templateworker/templateworker/worker/luastd"
)

// The sandbox's libraries are built once per process, in a State of their
// own that never runs, and frozen with lua.Share: every tenant VM gets its
// own table for each library (its identity, metatable and iteration state
// are the VM's), whose contents are the shared ones until the VM's first
// write to it, which copies them for that VM alone. A tenant cannot change
// another's libraries, and an idle VM costs a few small tables instead of
// a few hundred map entries and closures. The shared functions hold no
// VM: they find the one they run for with hostVM (lua.Host).

// libraries are the frozen tables.
type libraries struct {
	// base is _G's functions and values (not its tables), copied into each
	// VM's globals (pairs and ipairs are Go closures: each VM gets its own).
	base *lua.SharedTable
	// tables are the library tables, by global name.
	tables []sharedLibrary
	// kv and log are ctx.kv and ctx.log.
	kv, log *lua.SharedTable
}

type sharedLibrary struct {
	name  string
	table *lua.SharedTable
}

// sharedLibraries builds the libraries on first use.
var sharedLibraries = sync.OnceValues(buildLibraries)

// buildLibraries opens the sandbox's libraries in a new State and freezes
// them. Only base (without dofile, loadfile and binary chunks;
// collectgarbage limited to "count"; print going to the log), coroutine,
// string, table, math, bit32, os.time/clock/date/difftime, json and the
// ctx host API. No io, debug, package or anything that reads files, the
// environment or the network.
func buildLibraries() (*libraries, error) {
	l := lua.NewState()
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
	// format, sort, time/date), bounded by the calling VM's budget.
	luastd.OpenShared(l, stdLimits)
	for _, name := range removedGlobals {
		l.PushNil()
		l.SetGlobal(name)
	}
	overrideBase(l)
	guardResume(l)
	openJSON(l)

	libs := &libraries{}
	// Split _G: its tables are shared, the rest copied.
	l.PushGlobalTable()
	l.CreateTable(0, 48) // base: its copies get the libraries too (lua.CopyShared)
	l.PushNil()
	for l.Next(-3) {
		name, _ := l.ToString(-2)
		switch {
		case name == "_G":
			l.Pop(1)
		case l.IsTable(-1):
			s, err := lua.Share(l, -1)
			if err != nil {
				return nil, fmt.Errorf("library %s: %w", name, err)
			}
			libs.tables = append(libs.tables, sharedLibrary{name: name, table: s})
			l.Pop(1)
		default:
			l.PushValue(-2)
			l.Insert(-2)
			l.RawSet(-4)
		}
	}
	var err error
	if libs.base, err = lua.Share(l, -1); err != nil {
		return nil, fmt.Errorf("base library: %w", err)
	}
	l.Pop(2)
	if libs.kv, err = shareFunctions(l, kvLibrary); err != nil {
		return nil, fmt.Errorf("ctx.kv: %w", err)
	}
	if libs.log, err = shareFunctions(l, logLibrary); err != nil {
		return nil, fmt.Errorf("ctx.log: %w", err)
	}
	return libs, nil
}

// shareFunctions freezes a table of fns.
func shareFunctions(l *lua.State, fns []lua.RegistryFunction) (*lua.SharedTable, error) {
	lua.NewLibrary(l, fns)
	defer l.Pop(1)
	return lua.Share(l, -1)
}

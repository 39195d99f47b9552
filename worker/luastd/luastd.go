// Package luastd completes the Lua 5.2 standard library that
// github.com/Shopify/go-lua leaves out or implements differently: the
// pattern-matching string functions, string.format, string.rep,
// table.concat/sort/insert/remove/unpack, os.time, os.date and os.clock.
//
// Every function installed here bounds its work and output through
// Limits: strings it builds are capped by Limits.MaxString and its
// long-running loops report their steps to Limits.Charge, so an untrusted
// script cannot make them run or allocate without bound.
//
// Known differences from the reference interpreter (Lua 5.2.4):
//   - the matcher stops at 200 nested calls with "pattern too complex"
//     (as Lua 5.3 does; 5.2 recurses on the C stack without a bound);
//   - table.sort is a merge sort followed by an order check: equal
//     elements may end in a different order, and an order function that is
//     not a strict order (such as a <= b with repeated values) is always
//     reported as "invalid order function for sorting";
//   - string.format("%s") keeps strings with embedded zeros whole (C's
//     sprintf stops at the first zero);
//   - os.time ignores isdst, resolving ambiguous or skipped local times
//     the way time.Date does.
package luastd

import (
	lua "github.com/Shopify/go-lua"
)

// library carries the limits the installed functions share: fixed ones
// (Open), or looked up per State (OpenShared).
type library struct {
	lim Limits
	of  func(l *lua.State) *Limits
}

// limits returns the limits of the call running in l.
func (lib *library) limits(l *lua.State) *Limits {
	if lib.of != nil {
		return lib.of(l)
	}
	return &lib.lim
}

// Open installs into the already-opened string, table and os global
// tables (creating os if absent) the functions of this package, adds the
// global unpack (an alias of table.unpack) and makes the string metatable's
// __index the string table so that method calls such as ("x"):match(p)
// reach them.
func Open(l *lua.State, lim Limits) {
	open(l, &library{lim: lim})
	SetStringMetatable(l)
}

// OpenShared is Open for library tables shared by many States (see
// lua.Share): the functions installed hold no State's data and find the
// limits of the State calling them with of. It does not touch the string
// metatable, which is each State's own: see SetStringMetatable.
func OpenShared(l *lua.State, of func(l *lua.State) *Limits) {
	open(l, &library{of: of})
}

// open installs lib's functions.
func open(l *lua.State, lib *library) {
	install(l, "string", []lua.RegistryFunction{
		{Name: "find", Function: lib.find},
		{Name: "match", Function: lib.match},
		{Name: "gmatch", Function: lib.gmatch},
		{Name: "gsub", Function: lib.gsub},
		{Name: "format", Function: lib.format},
		{Name: "rep", Function: lib.rep},
		{Name: "char", Function: lib.char},
		{Name: "reverse", Function: lib.reverse},
		{Name: "lower", Function: lib.lower},
		{Name: "upper", Function: lib.upper},
		{Name: "byte", Function: lib.byte},
		{Name: "sub", Function: lib.sub},
	})
	install(l, "table", []lua.RegistryFunction{
		{Name: "concat", Function: lib.concat},
		{Name: "sort", Function: lib.sort},
		{Name: "insert", Function: lib.insert},
		{Name: "remove", Function: lib.remove},
		{Name: "unpack", Function: lib.unpack},
	})
	install(l, "os", []lua.RegistryFunction{
		{Name: "time", Function: osTime},
		{Name: "date", Function: lib.date},
		{Name: "clock", Function: osClock},
	})
	l.Global("table")
	l.Field(-1, "unpack")
	l.SetGlobal("unpack")
	l.Pop(1)
}

// SetStringMetatable makes the string metatable's __index the global
// string table, so that method calls such as ("x"):match(p) reach it.
func SetStringMetatable(l *lua.State) {
	l.PushString("")
	if !l.MetaTable(-1) {
		l.NewTable()
		l.PushValue(-1)
		l.SetMetaTable(-3)
	}
	l.Global("string")
	l.SetField(-2, "__index")
	l.Pop(2)
}

// install sets functions into the global table name, creating it when
// it is absent.
func install(l *lua.State, name string, fns []lua.RegistryFunction) {
	l.Global(name)
	if !l.IsTable(-1) {
		l.Pop(1)
		l.NewTable()
		l.PushValue(-1)
		l.SetGlobal(name)
	}
	lua.SetFunctions(l, fns, 0)
	l.Pop(1)
}

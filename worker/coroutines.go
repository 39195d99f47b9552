package worker

import (
	lua "github.com/Shopify/go-lua"
)

// Coroutines in tenant VMs (the patched go-lua runs each started coroutine
// on a goroutine of its own, handing control back and forth, so only one
// goroutine runs a VM's Lua at a time). Everything a coroutine does is
// charged to the call that resumed it: the threads of a VM share the
// instruction count hook, the call depth and the memory ceiling (a
// suspended coroutine counts its goroutine's stack).

// guardResume wraps coroutine.resume like pcall: a limit hit inside a
// coroutine ends the call even though resume returns it as a result.
// (coroutine.wrap re-raises errors by itself.)
func guardResume(l *lua.State) {
	l.Global("coroutine")
	l.Field(-1, "resume")
	orig := l.ToGoFunction(-1)
	l.Pop(1)
	l.PushGoFunction(guardProtected(orig))
	l.SetField(-2, "resume")
	l.Pop(1)
}

// close discards the VM: its suspended coroutines are ended (their
// goroutines exit), it leaves the worker's memory pool, and it must not
// run again.
func (vm *VM) close() {
	vm.broken = true
	lua.CloseCoroutines(vm.l)
	lua.LeavePool(vm.l)
}

// minIdleSweep is the number of live coroutines above which the end of a
// call sweeps the VM for unreachable ones (when the number has doubled
// since the last sweep): what Go's collector cannot reclaim (a coroutine
// whose own stack refers to it) does not wait for the VM's next call.
const minIdleSweep = 64

// sweepCoroutines runs at the end of a call.
func (vm *VM) sweepCoroutines() {
	if n := lua.LiveCoroutines(vm.l); n >= minIdleSweep && n >= 2*vm.coroutinesAfterSweep {
		vm.coroutinesAfterSweep = lua.CollectCoroutines(vm.l)
	}
}

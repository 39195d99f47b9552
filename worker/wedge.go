package worker

import lua "github.com/Shopify/go-lua"

// installWedge gives the VM a global function name that blocks in Go until
// released is closed (forever when it is nil), so the count hook never
// runs while it blocks: a VM that misbehaves, for the watchdog's tests
// (Options.TestWedgeFunction). No tenant can install it: it exists only
// when the operator's environment asks for it.
func installWedge(l *lua.State, name string, released <-chan struct{}) {
	l.Register(name, func(l *lua.State) int {
		<-released
		return 0
	})
}

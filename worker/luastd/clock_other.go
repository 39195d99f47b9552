//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package luastd

import (
	lua "github.com/Shopify/go-lua"
)

// osClock implements os.clock(): without a portable CPU clock here, the
// seconds elapsed since the process started.
func osClock(l *lua.State) int {
	l.PushNumber(sinceStart())
	return 1
}

//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package luastd

import (
	"syscall"

	lua "github.com/Shopify/go-lua"
)

// osClock implements os.clock(): the CPU time (user + system) the process
// has used, in seconds, like C's clock().
func osClock(l *lua.State) int {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		l.PushNumber(sinceStart())
		return 1
	}
	sec := float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
	l.PushNumber(sec)
	return 1
}

package worker

import (
	"fmt"
	"time"
)

// DefaultSchedSlice is the scheduler slice a process worker asks the
// kernel for its threads (SetSchedSlice): short, so that a thread woken to
// serve a tenant's call does not wait behind a thread running another
// tenant's long call for the kernel's default slice (1.4 ms on a 2-CPU
// Linux 6.x, the neighbour's tail latency it would otherwise get).
const DefaultSchedSlice = 100 * time.Microsecond

// Bounds of a scheduler slice the kernel honours (EEVDF clamps to them).
const (
	MinSchedSlice = 100 * time.Microsecond
	MaxSchedSlice = 100 * time.Millisecond
)

// CheckSchedSlice validates a --worker-sched-slice value: 0 (keep the
// kernel's default) or between MinSchedSlice and MaxSchedSlice.
func CheckSchedSlice(d time.Duration) error {
	if d != 0 && (d < MinSchedSlice || d > MaxSchedSlice) {
		return fmt.Errorf("--worker-sched-slice must be 0 (the kernel's default) or between %v and %v, got %v", MinSchedSlice, MaxSchedSlice, d)
	}
	return nil
}

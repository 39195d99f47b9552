//go:build !linux

package worker

import "time"

// SetSchedSlice is Linux's alone (sched_setattr); elsewhere it changes
// nothing.
func SetSchedSlice(d time.Duration) error { return nil }

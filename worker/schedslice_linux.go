package worker

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// SetSchedSlice asks the kernel for a scheduler slice of d for every
// thread of this process (sched_setattr's sched_runtime, which Linux's
// EEVDF scheduler, 6.6 and later, takes as the thread's slice; older
// kernels ignore it). Threads created afterwards inherit it from the
// thread that creates them. A thread woken with the CPU held by one of
// ours then runs after at most d, not after the kernel's default slice.
// It needs no privilege; d of 0 changes nothing.
func SetSchedSlice(d time.Duration) error {
	if d <= 0 {
		return nil
	}
	attr := &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_NORMAL, Runtime: uint64(d.Nanoseconds())}
	done := map[int]bool{}
	// Until a pass finds no thread it has not set: a thread the runtime
	// starts meanwhile may have been cloned from one not yet set.
	for {
		ents, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return fmt.Errorf("set scheduler slice: %w", err)
		}
		fresh := 0
		for _, e := range ents {
			tid, err := strconv.Atoi(e.Name())
			if err != nil || done[tid] {
				continue
			}
			fresh++
			done[tid] = true
			// Nice stays 0 (the attr's zero): a worker's nice is its
			// operator's, which this must keep.
			attr.Nice = int32(getNice(tid))
			if err := unix.SchedSetAttr(tid, attr, 0); err != nil && err != unix.ESRCH {
				return fmt.Errorf("set scheduler slice of thread %d: %w", tid, err)
			}
		}
		if fresh == 0 {
			return nil
		}
	}
}

// getNice returns thread tid's nice value (0 if it cannot be read).
func getNice(tid int) int {
	prio, err := unix.Getpriority(unix.PRIO_PROCESS, tid)
	if err != nil {
		return 0
	}
	return 20 - prio // the raw syscall returns 20 - nice
}

package main

import (
	"os"
	"testing"

	"github.com/templateworker/templateworker/internal/procsched"
)

// TestWorkerSchedSlice: a process worker's threads run with
// --worker-sched-slice (100µs by default), the master's keep the kernel's
// slice, and --worker-sched-slice 0 leaves the worker's alone too.
func TestWorkerSchedSlice(t *testing.T) {
	kernel := procsched.Of(t, os.Getpid()) // this test process: the kernel's default
	var def int64
	for _, ns := range kernel {
		def = ns
	}
	if def == 100_000 {
		t.Skip("the kernel's default slice is already 100µs here: nothing to tell apart")
	}
	for _, c := range []struct {
		args []string
		want int64
	}{{nil, 100_000}, {[]string{"--worker-sched-slice", "250us"}, 250_000}, {[]string{"--worker-sched-slice", "0"}, def}} {
		m := startMaster(t, "", append([]string{"--process-workers", "1"}, c.args...)...)
		rows := m.waitReady(t)
		got := procsched.Of(t, rows[0].PID)
		for tid, ns := range got {
			if ns != c.want {
				t.Errorf("%v: worker %d thread %d has slice %d ns, want %d", c.args, rows[0].PID, tid, ns, c.want)
			}
		}
		for tid, ns := range procsched.Of(t, m.cmd.Process.Pid) {
			if ns != def {
				t.Errorf("%v: master thread %d has slice %d ns, want the kernel's %d", c.args, tid, ns, def)
			}
		}
		t.Logf("%v: %d worker threads at %d ns; the kernel's default %d ns", c.args, len(got), c.want, def)
		m.stop(cleanupSignal())
	}
}

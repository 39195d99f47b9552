package main

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
)

// procSlices returns the scheduler slice (ns) of each thread of pid, by
// tid, from /proc/<pid>/task/*/sched; it skips t on a kernel that does not
// show one.
func procSlices(t *testing.T, pid int) map[int]int64 {
	t.Helper()
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]int64{}
	for _, e := range ents {
		f, err := os.Open(dir + "/" + e.Name() + "/sched")
		if err != nil {
			if os.IsNotExist(err) {
				continue
			}
			t.Skipf("this kernel does not show a thread's scheduler state: %v", err)
		}
		tid, _ := strconv.Atoi(e.Name())
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "se.slice" {
				out[tid], _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			}
		}
		f.Close()
		if _, ok := out[tid]; !ok {
			t.Skip("this kernel has no per-thread scheduler slice (se.slice: Linux 6.6's EEVDF and later)")
		}
	}
	return out
}

// TestWorkerSchedSlice: a process worker's threads run with
// --worker-sched-slice (100µs by default), the master's keep the kernel's
// slice, and --worker-sched-slice 0 leaves the worker's alone too.
func TestWorkerSchedSlice(t *testing.T) {
	kernel := procSlices(t, os.Getpid()) // this test process: the kernel's default
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
		got := procSlices(t, rows[0].PID)
		for tid, ns := range got {
			if ns != c.want {
				t.Errorf("%v: worker %d thread %d has slice %d ns, want %d", c.args, rows[0].PID, tid, ns, c.want)
			}
		}
		for tid, ns := range procSlices(t, m.cmd.Process.Pid) {
			if ns != def {
				t.Errorf("%v: master thread %d has slice %d ns, want the kernel's %d", c.args, tid, ns, def)
			}
		}
		t.Logf("%v: %d worker threads at %d ns; the kernel's default %d ns", c.args, len(got), c.want, def)
		m.stop(cleanupSignal())
	}
}

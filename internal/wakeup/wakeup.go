// Package wakeup counts how often the threads of a process went to sleep
// and were woken again — their voluntary context switches, read from /proc
// — so that a benchmark can report the wake-ups one call costs on each side
// of a hand-off. A path whose figure moves a lot between two similar hosts
// usually has wake-ups its floor does not have; these counts show them.
// It also reads the CPU time the threads ran (/proc/<pid>/task/*/schedstat):
// the CPU one call costs on each side, which other load on a shared host
// moves far less than the call's wall time.
package wakeup

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Count returns the voluntary context switches of every live thread of
// process pid (0: this process). Threads that have exited no longer count.
func Count(pid int) (int64, error) {
	if pid == 0 {
		pid = os.Getpid()
	}
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	if err != nil || len(tasks) == 0 {
		return 0, fmt.Errorf("wakeup: no threads of pid %d under /proc", pid)
	}
	var n int64
	for _, path := range tasks {
		b, err := os.ReadFile(path)
		if err != nil {
			continue // the thread exited meanwhile
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "voluntary_ctxt_switches:"); ok {
				c, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				if err != nil {
					return 0, fmt.Errorf("wakeup: %s: %w", path, err)
				}
				n += c
			}
		}
	}
	return n, nil
}

// CPU returns the CPU time every live thread of process pid (0: this
// process) has run, in nanoseconds. Threads that have exited no longer
// count.
func CPU(pid int) (int64, error) {
	if pid == 0 {
		pid = os.Getpid()
	}
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(tasks) == 0 {
		return 0, fmt.Errorf("wakeup: no schedstat of pid %d under /proc", pid)
	}
	var n int64
	for _, path := range tasks {
		b, err := os.ReadFile(path)
		if err != nil {
			continue // the thread exited meanwhile
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			return 0, fmt.Errorf("wakeup: %s is empty", path)
		}
		c, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("wakeup: %s: %w", path, err)
		}
		n += c
	}
	return n, nil
}

// Meter measures the wake-ups and the CPU time of some processes from
// Start to PerOp and CPUPerOp.
type Meter struct {
	pids   []int
	start  []int64
	cpu    []int64
	err    error
	cpuErr error
}

// Start begins counting the wake-ups and CPU time of pids (0: this
// process).
func Start(pids ...int) *Meter {
	m := &Meter{pids: pids, start: make([]int64, len(pids)), cpu: make([]int64, len(pids))}
	for i, pid := range pids {
		if m.start[i], m.err = Count(pid); m.err != nil {
			break
		}
	}
	for i, pid := range pids {
		if m.cpu[i], m.cpuErr = CPU(pid); m.cpuErr != nil {
			break
		}
	}
	return m
}

// CPUPerOp returns the CPU time all the meter's processes ran since
// Start, in microseconds, divided by ops.
func (m *Meter) CPUPerOp(ops int) (float64, error) {
	if m.cpuErr != nil {
		return 0, m.cpuErr
	}
	if ops <= 0 {
		return 0, fmt.Errorf("wakeup: %d operations", ops)
	}
	var total int64
	for i, pid := range m.pids {
		n, err := CPU(pid)
		if err != nil {
			return 0, err
		}
		total += n - m.cpu[i]
	}
	return float64(total) / 1e3 / float64(ops), nil
}

// PerOp returns the wake-ups of all the meter's processes since Start,
// divided by ops.
func (m *Meter) PerOp(ops int) (float64, error) {
	if m.err != nil {
		return 0, m.err
	}
	if ops <= 0 {
		return 0, fmt.Errorf("wakeup: %d operations", ops)
	}
	var total int64
	for i, pid := range m.pids {
		n, err := Count(pid)
		if err != nil {
			return 0, err
		}
		total += n - m.start[i]
	}
	return float64(total) / float64(ops), nil
}

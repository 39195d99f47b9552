// Package procsched reads the kernel's scheduler state of a process's
// threads from /proc, for tests of the worker's scheduler slice.
package procsched

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// ErrNoSlice means the kernel shows no per-thread scheduler slice
// (se.slice, Linux 6.6's EEVDF and later), or no scheduler state at all.
var ErrNoSlice = errors.New("this kernel shows no per-thread scheduler slice (se.slice: Linux 6.6's EEVDF and later)")

// Slices returns the scheduler slice in nanoseconds of every thread of
// process pid, by thread id; threads that end meanwhile are left out.
func Slices(pid int) (map[int]int64, error) {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("threads of %d: %w", pid, err)
	}
	out := map[int]int64{}
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f, err := os.Open(dir + "/" + e.Name() + "/sched")
		if err != nil {
			if os.IsNotExist(err) {
				continue // the thread ended
			}
			return nil, fmt.Errorf("%w: %v", ErrNoSlice, err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "se.slice" {
				out[tid], _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			}
		}
		f.Close()
		if _, ok := out[tid]; !ok {
			return nil, ErrNoSlice
		}
	}
	return out, nil
}

// Of is Slices for a test: it skips tb on a kernel that shows no slice and
// fails it on any other error.
func Of(tb testing.TB, pid int) map[int]int64 {
	tb.Helper()
	out, err := Slices(pid)
	if errors.Is(err, ErrNoSlice) {
		tb.Skip(err)
	}
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

package worker

import (
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/templateworker/templateworker/internal/procsched"
)

// TestSetSchedSliceEveryThreadAndLaterOnes: every thread of the process
// gets the slice, and so do the threads the Go runtime starts afterwards.
// It runs in a child process (the test binary again) under nice 3, which
// the slice must keep: an unprivileged process cannot lower its nice, so
// a call that reset it would fail there and would undo an operator's
// nice where it could.
func TestSetSchedSliceEveryThreadAndLaterOnes(t *testing.T) {
	if os.Getenv("TW_SCHED_SLICE_CHILD") == "1" {
		schedSliceChild(t)
		return
	}
	procsched.Of(t, os.Getpid()) // skips on a kernel without slices
	nice, err := exec.LookPath("nice")
	if err != nil {
		t.Skip("no nice(1) here")
	}
	cmd := exec.Command(nice, "-n", "3", os.Args[0], "-test.run=^TestSetSchedSliceEveryThreadAndLaterOnes$", "-test.v")
	cmd.Env = append(os.Environ(), "TW_SCHED_SLICE_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS") {
		t.Fatalf("child: %v\n%s", err, out)
	}
	t.Logf("child:\n%s", out)
}

func schedSliceChild(t *testing.T) {
	const want = 300 * time.Microsecond
	before := procsched.Of(t, os.Getpid())
	if err := SetSchedSlice(want); err != nil {
		t.Fatal(err)
	}
	// Threads started after the call: goroutines locked to their threads
	// and parked there hold their threads, so each further one needs a
	// thread of its own.
	release := make(chan struct{})
	var started, ended sync.WaitGroup
	for range 8 {
		started.Add(1)
		ended.Add(1)
		go func() {
			defer ended.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			started.Done()
			<-release
		}()
	}
	started.Wait()
	after := procsched.Of(t, os.Getpid())
	close(release)
	ended.Wait()
	if len(after) <= len(before) {
		t.Fatalf("no thread started: %d threads before, %d after", len(before), len(after))
	}
	for tid, ns := range after {
		if ns != want.Nanoseconds() {
			t.Errorf("thread %d has slice %d ns, want %d", tid, ns, want.Nanoseconds())
		}
		if n := getNice(tid); n != 3 {
			t.Errorf("thread %d has nice %d, want the 3 it started with", tid, n)
		}
	}
	t.Logf("%d threads before the call, %d after, all at %v", len(before), len(after), want)
}

func TestCheckSchedSlice(t *testing.T) {
	for _, d := range []time.Duration{0, MinSchedSlice, time.Millisecond, MaxSchedSlice} {
		if err := CheckSchedSlice(d); err != nil {
			t.Errorf("%v: %v", d, err)
		}
	}
	for _, d := range []time.Duration{-1, time.Microsecond, 99 * time.Microsecond, MaxSchedSlice + 1} {
		err := CheckSchedSlice(d)
		if err == nil || !strings.Contains(err.Error(), "--worker-sched-slice must be 0") {
			t.Errorf("%v: %v", d, err)
		}
	}
}

package wakeup

import (
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"
)

// TestCountsSleeps: a thread that sleeps n times is woken n times; a
// child process is counted by its pid.
func TestCountsSleeps(t *testing.T) {
	done := make(chan int64, 1)
	go func() {
		runtime.LockOSThread() // one thread, whose sleeps are all ours
		defer runtime.UnlockOSThread()
		self := Start(0)
		for range 50 {
			time.Sleep(time.Millisecond)
		}
		n, err := self.PerOp(1)
		if err != nil {
			t.Error(err)
		}
		done <- int64(n)
	}()
	if n := <-done; n < 50 {
		t.Fatalf("50 sleeps counted as %d wake-ups", n)
	}

	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Skip("no sleep command:", err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	if _, err := Count(cmd.Process.Pid); err != nil {
		t.Fatalf("count a child: %v", err)
	}
	if _, err := Count(1 << 30); err == nil {
		t.Fatal("a pid that does not exist was counted")
	}
	if _, err := Start(os.Getpid()).PerOp(0); err == nil {
		t.Fatal("PerOp(0) did not fail")
	}
}

// TestCPU: a thread that spins for a while is counted at least that long
// once it has run (the spin is bounded by CPU time, not by the wall clock).
func TestCPU(t *testing.T) {
	m := Start(0)
	before, err := CPU(0)
	if err != nil {
		t.Skip("no schedstat under /proc:", err)
	}
	for {
		now, err := CPU(0)
		if err != nil {
			t.Fatal(err)
		}
		if now-before >= int64(20*time.Millisecond) {
			break
		}
	}
	us, err := m.CPUPerOp(2)
	if err != nil {
		t.Fatal(err)
	}
	if us < 10_000 {
		t.Fatalf("20 ms of CPU counted as %.0f µs per op of 2", us)
	}
	if _, err := m.CPUPerOp(0); err == nil {
		t.Fatal("CPUPerOp(0) did not fail")
	}
	if _, err := CPU(1 << 30); err == nil {
		t.Fatal("a pid that does not exist was measured")
	}
}

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

package drill_test

import (
	"bytes"
	"context"
	"encoding/json"
	"github.com/templateworker/templateworker/internal/testbin"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/templateworker/templateworker/drill"
)

// binary returns the templateworker binary under test.
func binary(t testing.TB) string { return testbin.Path(t) }

// startMaster starts a real master with 2 process workers in its own
// process group and waits until it is ready. It returns its data dir; the
// master and its workers are killed at cleanup.
func startMaster(t *testing.T, extra ...string) string {
	t.Helper()
	dir := t.TempDir()
	args := append([]string{"master", "--process-workers", "2", "--listen", "127.0.0.1:0",
		"--data-dir", dir, "--log-format", "json", "--log-level", "warn"}, extra...)
	cmd := exec.Command(binary(t), args...)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		// SIGTERM under make cover, so that the master and its workers
		// write their coverage counters; SIGKILL after 20 s or otherwise.
		if os.Getenv(testbin.CoverDirEnv) != "" {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(20 * time.Second):
			}
		}
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		if t.Failed() {
			t.Logf("master log:\n%s", log.String())
		}
	})
	deadline := time.Now().Add(time.Minute)
	for {
		select {
		case <-exited:
			t.Fatalf("master exited at start:\n%s", log.String())
		default:
		}
		if b, err := os.ReadFile(filepath.Join(dir, "master.addr")); err == nil {
			addr := strings.TrimSpace(string(b))
			if !strings.Contains(addr, "://") {
				addr = "http://" + addr
			}
			if resp, err := http.Get(addr + "/readyz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return dir
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("master not ready after a minute:\n%s", log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// runDrill runs deploy/drill.sh against the master of dataDir and returns
// its exit error, stdout and stderr.
func runDrill(t *testing.T, dataDir string, args ...string) (error, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "../deploy/drill.sh", args...)
	cmd.Env = append(os.Environ(), "TEMPLATEWORKER_BIN="+binary(t), "TEMPLATEWORKER_DATA_DIR="+dataDir)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return err, stdout.String(), stderr.String()
}

// summary is the JSON line the drill prints last.
type summary struct {
	RunID           string   `json:"run_id"`
	Worker          int      `json:"worker"`
	OldPID          int      `json:"old_pid"`
	NewPID          int      `json:"new_pid"`
	Signal          string   `json:"signal"`
	RecoverySeconds float64  `json:"recovery_seconds"`
	CallsSent       int      `json:"calls_sent"`
	CallsFailed     int      `json:"calls_failed"`
	FailedOnOthers  *int     `json:"failed_on_other_workers"`
	NowaitAccepted  int      `json:"nowait_accepted"`
	NowaitExecuted  int      `json:"nowait_executed"`
	Failures        []string `json:"failures"`
	OK              bool     `json:"ok"`
	Reason          string   `json:"reason"`
}

func lastJSON(t *testing.T, stdout string) summary {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	var s summary
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &s); err != nil {
		t.Fatalf("last line of the drill is not its JSON summary: %v\n%s", err, stdout)
	}
	return s
}

// TestDrillRecovers runs the drill twice against one master: a killed
// worker, then a stopped one (the master's heartbeat check replaces it).
// The heartbeat is the default 1 s: shorter ones take a healthy worker on
// a busy machine for hung, and the drill would count the failures.
func TestDrillRecovers(t *testing.T) {
	dir := startMaster(t, "--restart-backoff", "500ms")
	for _, sig := range []string{"KILL", "STOP"} {
		t.Run(sig, func(t *testing.T) {
			err, stdout, stderr := runDrill(t, dir, "--worker", "1", "--signal", sig, "--load", "50", "--timeout", "30")
			if err != nil {
				t.Fatalf("drill: %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
			}
			s := lastJSON(t, stdout)
			t.Logf("%s: recovered in %.3fs; %d calls, %d failed (%v); nowait %d/%d",
				sig, s.RecoverySeconds, s.CallsSent, s.CallsFailed, s.Failures, s.NowaitExecuted, s.NowaitAccepted)
			switch {
			case !s.OK || s.Signal != sig || s.Worker != 1:
				t.Errorf("summary: ok %v, signal %s, worker %d", s.OK, s.Signal, s.Worker)
			case s.OldPID <= 0 || s.NewPID <= 0 || s.NewPID == s.OldPID:
				t.Errorf("pids: old %d, new %d", s.OldPID, s.NewPID)
			case s.FailedOnOthers == nil || *s.FailedOnOthers != 0:
				t.Errorf("failed_on_other_workers: %v", s.FailedOnOthers)
			case s.NowaitAccepted <= 0 || s.NowaitExecuted < s.NowaitAccepted:
				t.Errorf("nowait: accepted %d, executed %d", s.NowaitAccepted, s.NowaitExecuted)
			case s.CallsSent < 50:
				t.Errorf("only %d calls sent", s.CallsSent)
			}
			if !strings.Contains(stdout, "drill "+s.RunID+": PASS") || !strings.Contains(stdout, "failed on other workers  0") {
				t.Errorf("human-readable summary missing:\n%s", stdout)
			}
			// The process that served before the signal is gone.
			if err := syscall.Kill(s.OldPID, 0); err == nil {
				t.Errorf("old worker pid %d is still alive", s.OldPID)
			}
		})
	}
}

// TestDrillFailsWithoutRecovery: a worker that is not back within
// --timeout fails the drill (exit 1, summary with the reason).
func TestDrillFailsWithoutRecovery(t *testing.T) {
	t.Parallel()
	// A killed worker waits 20s before its restart; the drill gives it 1s.
	dir := startMaster(t, "--restart-backoff", "20s", "--min-uptime", "1h")
	err, stdout, stderr := runDrill(t, dir, "--worker", "0", "--signal", "KILL", "--load", "10", "--timeout", "1")
	if err == nil {
		t.Fatalf("drill passed without a recovery:\n%s", stdout)
	}
	s := lastJSON(t, stdout)
	if s.OK || !strings.Contains(s.Reason, "did not recover within 1s") || s.OldPID <= 0 || s.NewPID != 0 {
		t.Errorf("summary: %+v", s)
	}
	if !strings.Contains(stderr, "drill failed: worker 0 did not recover") {
		t.Errorf("stderr lacks the reason:\n%s", stderr)
	}
}

// TestDrillRefusesBadTargets: refusals happen before anything is signalled.
func TestDrillRefusesBadTargets(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--addr", "http://198.51.100.7:7878", "--api-token", "x"}, "not a loopback address"},
		{[]string{"--addr", "db.example:7878", "--api-token", "x"}, "only runs against a master on this machine"},
		{[]string{"--signal", "HUP"}, "want KILL, TERM or STOP"},
		{[]string{"--worker", "1", "--random"}, "not both"},
		{[]string{"--timeout", "soon"}, "bad --timeout"},
	} {
		err, stdout, stderr := runDrill(t, t.TempDir(), tc.args...)
		if err == nil || !strings.Contains(stderr, tc.want) {
			t.Errorf("drill %v: err %v, want %q in stderr\nstdout:\n%s\nstderr:\n%s", tc.args, err, tc.want, stdout, stderr)
		}
	}
}

func TestCheckLoopback(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:7878": true, "http://127.0.0.1:1/": true, "http://[::1]:7878": true,
		"localhost:7878": true, "127.5.6.7:80": true,
		"10.1.2.3:7878": false, "http://0.0.0.0:7878": false, "example.com": false, "https://[2001:db8::1]:443": false, "": false,
	} {
		if err := drill.CheckLoopback(addr); (err == nil) != ok {
			t.Errorf("CheckLoopback(%q) = %v, want ok %v", addr, err, ok)
		}
	}
}

func TestParseSignal(t *testing.T) {
	for in, want := range map[string]syscall.Signal{"KILL": syscall.SIGKILL, "term": syscall.SIGTERM, "SIGSTOP": syscall.SIGSTOP} {
		if got, err := drill.ParseSignal(in); err != nil || got != want {
			t.Errorf("ParseSignal(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"HUP", "9", ""} {
		if _, err := drill.ParseSignal(in); err == nil {
			t.Errorf("ParseSignal(%q) succeeded", in)
		}
	}
}

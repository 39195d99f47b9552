package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"github.com/templateworker/templateworker/internal/syncbuf"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/templateworker/templateworker/client"
	"github.com/templateworker/templateworker/internal/testbin"
	"github.com/templateworker/templateworker/master"
	"github.com/templateworker/templateworker/worker"
)

// workerConcurrency, when positive, is the --worker-concurrency of every
// master a test starts that does not set its own: `go test
// ./cmd/templateworker -run 'TestHostile|TestSuper' -args
// -worker-concurrency 1` runs the hostile corpus and the neighbour tests
// on serial workers (make test does, besides the default 4).
var workerConcurrency = flag.Int("worker-concurrency", 0, "--worker-concurrency of the masters the tests start (0: the default)")

// testConcurrency is the --worker-concurrency of the masters the tests
// start without their own.
func testConcurrency() int {
	if *workerConcurrency > 0 {
		return *workerConcurrency
	}
	return worker.DefaultConcurrency
}

// binPath is the templateworker binary under test: $TEMPLATEWORKER_BIN, or
// one built once for this test run.
var binPath string

func TestMain(m *testing.M) {
	testbin.ShareCoverDir()
	code := func() int {
		if p := os.Getenv("TEMPLATEWORKER_BIN"); p != "" {
			binPath = p
			return m.Run()
		}
		dir, err := os.MkdirTemp("", "templateworker-bin")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		binPath = filepath.Join(dir, "templateworker")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "build templateworker: %v\n%s", err, out)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

// shortTempDir is a temp directory with a short path, for a master's
// TMPDIR: its Mesophyll Unix socket lives there (a socket path has at most
// 107 bytes), and a master killed with -9 leaves nothing in /tmp.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "tw")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// runningMaster is a master process started by a test.
type runningMaster struct {
	t       *testing.T
	cmd     *exec.Cmd
	dataDir string
	addr    string
	token   string
	out     *syncbuf.Buffer
	exited  chan struct{}
	api     *client.Client
}

// startMaster starts `templateworker master` with a temp (or given) data
// dir on loopback port 0 and waits until it serves. Cleanup stops it.
func startMaster(t *testing.T, dataDir string, args ...string) *runningMaster {
	t.Helper()
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	os.Remove(filepath.Join(dataDir, master.AddrFile))
	full := append([]string{"master", "--listen", "127.0.0.1:0", "--data-dir", dataDir, "--log-format", "json"}, args...)
	if *workerConcurrency > 0 && !slices.Contains(args, "--worker-concurrency") {
		full = append(full, "--worker-concurrency", strconv.Itoa(*workerConcurrency))
	}
	cmd := exec.Command(binPath, full...)
	cmd.Env = append(os.Environ(), "TEMPLATEWORKER_API_TOKEN=", "TMPDIR="+shortTempDir(t))
	out := &syncbuf.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start master: %v", err)
	}
	m := &runningMaster{t: t, cmd: cmd, dataDir: dataDir, out: out, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(m.exited) }()
	t.Cleanup(func() {
		m.stop(cleanupSignal())
		if t.Failed() {
			t.Logf("master output:\n%s", tail(out.String(), 6000))
		}
	})
	deadline := time.Now().Add(time.Minute)
	for {
		b, err := os.ReadFile(filepath.Join(dataDir, master.AddrFile))
		if err == nil && len(b) > 0 {
			m.addr = strings.TrimSpace(string(b))
			break
		}
		select {
		case <-m.exited:
			t.Fatalf("master exited before serving:\n%s", out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("master did not start:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	tok, err := os.ReadFile(filepath.Join(dataDir, master.TokenFile))
	if err != nil {
		t.Fatalf("read token: %v", err)
	}
	m.token = strings.TrimSpace(string(tok))
	m.api = client.New(m.addr, m.token)
	return m
}

// cleanupSignal is how a test's master is stopped at its end: SIGKILL, or
// SIGTERM under make cover, so that the master and its workers exit
// normally and write their coverage counters.
func cleanupSignal() syscall.Signal {
	if os.Getenv(testbin.CoverDirEnv) != "" {
		return syscall.SIGTERM
	}
	return syscall.SIGKILL
}

// stop sends sig to the master and waits for it (SIGKILL after 20s).
func (m *runningMaster) stop(sig syscall.Signal) {
	select {
	case <-m.exited:
		return
	default:
	}
	_ = m.cmd.Process.Signal(sig)
	select {
	case <-m.exited:
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
		<-m.exited
	}
}

// cli runs a client subcommand against this master and returns stdout,
// stderr and the exit code.
func (m *runningMaster) cli(args ...string) (string, string, int) {
	m.t.Helper()
	return m.cliStdin("", args...)
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// cliStdin is cli with stdin.
func (m *runningMaster) cliStdin(stdin string, args ...string) (string, string, int) {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, args...)
	cmd.Env = append(os.Environ(), "TEMPLATEWORKER_DATA_DIR="+m.dataDir, "TEMPLATEWORKER_ADDR=", "TEMPLATEWORKER_API_TOKEN=")
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		m.t.Fatalf("run cli %v: %v", args, err)
	}
	return stdout.String(), stderr.String(), code
}

func httpGet(url string) (*http.Response, error) {
	return (&http.Client{Timeout: 10 * time.Second}).Get(url)
}

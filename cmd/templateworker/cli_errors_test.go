package main

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"

	"github.com/templateworker/templateworker/internal/testbin"
)

// TestCLIErrorsAreOneLine: bad invocations exit 1 with one readable line
// on stderr that names the problem, and print nothing else.
func TestCLIErrorsAreOneLine(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"master", "--thread-workers", "2", "--process-workers", "2", "--data-dir", dir}, "mutually exclusive"},
		{[]string{"master", "--thread-workers", "0", "--data-dir", dir}, "--thread-workers must be positive"},
		{[]string{"master", "--worker-concurrency", "0", "--data-dir", dir}, "--worker-concurrency must be between 1 and 64, got 0"},
		{[]string{"master", "--worker-concurrency", "65", "--data-dir", dir}, "--worker-concurrency must be between 1 and 64, got 65"},
		{[]string{"master", "--worker-sched-slice", "10us", "--data-dir", dir}, "--worker-sched-slice must be 0 (the kernel's default) or between 100µs and 100ms, got 10µs"},
		{[]string{"master", "--lua-max-memory", "lots", "--data-dir", dir}, `bad --lua-max-memory "lots"`},
		{[]string{"master", "--event-dead-letters-tenant", "0", "--data-dir", dir}, "--event-dead-letters-tenant must be at least 1, got 0"},
		{[]string{"master", "--event-max-attempts", "0", "--data-dir", dir}, "--event-max-attempts must be at least 1, got 0"},
		{[]string{"master", "--nope"}, "flag provided but not defined: -nope"},
		{[]string{"dispatch", "--event", "X", "--api-token", "t"}, "missing --tenant"},
		{[]string{"dispatch", "--tenant", "guild:1", "--api-token", "t"}, "missing --event"},
		{[]string{"dispatch", "--tenant", "guild:x", "--event", "X", "--api-token", "t"}, "bad --tenant"},
		{[]string{"dispatch", "--tenant", "guild:1", "--event", "X", "--data", "{bad", "--api-token", "t"}, "bad --data"},
		{[]string{"template", "put", "--tenant", "guild:1", "--api-token", "t"}, "missing --name"},
		{[]string{"template", "put", "--tenant", "guild:1", "--name", "n", "--api-token", "t", "/does/not/exist.lua"}, "no such file"},
		{[]string{"dispatch", "--tenant", "guild:1", "--event", "X", "--api-token", "t", "--addr", "127.0.0.1:1"}, "connection refused"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
	}
	for _, c := range cases {
		cmd := exec.Command(binPath, c.args...)
		cmd.Env = testbin.BareEnv(dir)
		cmd.Dir = dir
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		ee, ok := err.(*exec.ExitError)
		line := strings.TrimSpace(stderr.String())
		if !ok || ee.ExitCode() != 1 || strings.Contains(line, "\n") || !strings.HasPrefix(line, "templateworker: ") ||
			!strings.Contains(line, c.want) || stdout.Len() != 0 {
			t.Errorf("%v: exit %v, stderr %q, stdout %q; want exit 1 and one line containing %q", c.args, err, line, stdout.String(), c.want)
		}
	}
}

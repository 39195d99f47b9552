// Package testbin gives tests that start real processes the templateworker
// binary: $TEMPLATEWORKER_BIN when it is set (make test builds the binary
// once and sets it), otherwise one built once per test process.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// Env is the environment variable naming a prebuilt binary.
const Env = "TEMPLATEWORKER_BIN"

// CoverDirEnv names the directory where the processes a test starts write
// their coverage counters (make cover, with a binary built with -cover).
// go test -cover points the test's own GOCOVERDIR at a directory of its
// own, removed after the run, so the children are given this one instead.
const CoverDirEnv = "TEMPLATEWORKER_COVERDIR"

// ShareCoverDir makes the processes this test process starts from now on
// write their coverage counters to $TEMPLATEWORKER_COVERDIR, when it is
// set. It reports whether it is.
func ShareCoverDir() bool {
	d := os.Getenv(CoverDirEnv)
	if d == "" {
		return false
	}
	os.Setenv("GOCOVERDIR", d)
	return true
}

// BareEnv is an environment with nothing of the test's but PATH and
// HOME=home, for a child whose behaviour must not depend on the caller's
// variables; under make cover it keeps GOCOVERDIR, so a coverage binary
// writes its counters instead of warning on stderr.
func BareEnv(home string) []string {
	env := []string{"PATH=/usr/bin:/bin", "HOME=" + home}
	if d := os.Getenv("GOCOVERDIR"); d != "" {
		env = append(env, "GOCOVERDIR="+d)
	}
	return env
}

var (
	once sync.Once
	path string
	err  error
)

// Path returns the binary's path, failing tb if it cannot be built.
func Path(tb testing.TB) string {
	tb.Helper()
	once.Do(func() {
		ShareCoverDir()
		if p := os.Getenv(Env); p != "" {
			path = p
			return
		}
		dir, e := os.MkdirTemp("", "templateworker-testbin")
		if e != nil {
			err = e
			return
		}
		path = filepath.Join(dir, "templateworker")
		out, e := exec.Command("go", "build", "-o", path, "github.com/templateworker/templateworker/cmd/templateworker").CombinedOutput()
		if e != nil {
			err = fmt.Errorf("build templateworker: %v\n%s", e, out)
		}
	})
	if err != nil {
		tb.Fatal(err)
	}
	return path
}

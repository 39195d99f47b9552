package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"

	"github.com/rs/zerolog"
)

// testProfileEnv names the environment variable of a process worker's
// profiling hook, for benchmarks: when it names a directory, the worker
// writes its CPU profile there, as worker-<pid>.cpu, until it ends. A
// master passes its environment on to its workers, so a benchmark that
// sets it profiles the worker side of its calls beside its own
// -test.cpuprofile. Only an operator's environment can set it.
const testProfileEnv = "TEMPLATEWORKER_TEST_PROFILE_DIR"

// startWorkerProfile starts the CPU profile of testProfileEnv, if set, and
// returns the function that ends it; a profile that cannot be started is
// logged and the worker runs without.
func startWorkerProfile(log zerolog.Logger) (stop func()) {
	dir := os.Getenv(testProfileEnv)
	if dir == "" {
		return func() {}
	}
	path := filepath.Join(dir, fmt.Sprintf("worker-%d.cpu", os.Getpid()))
	f, err := os.Create(path)
	if err != nil {
		log.Warn().Err(err).Str("env", testProfileEnv).Msg("worker CPU profile not started")
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		log.Warn().Err(err).Str("env", testProfileEnv).Msg("worker CPU profile not started")
		return func() {}
	}
	log.Warn().Str("path", path).Msg("test hook: writing the worker's CPU profile")
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			log.Warn().Err(err).Str("path", path).Msg("close the worker CPU profile")
		}
	}
}

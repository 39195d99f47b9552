package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"
)

// TestWorkerProfile: with testProfileEnv naming a directory the worker's
// CPU profile is written there; without it nothing is.
func TestWorkerProfile(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(testProfileEnv, "")
	startWorkerProfile(zerolog.Nop())()
	if files, _ := os.ReadDir(dir); len(files) != 0 {
		t.Fatalf("files written without %s: %v", testProfileEnv, files)
	}
	t.Setenv(testProfileEnv, dir)
	startWorkerProfile(zerolog.Nop())()
	files, _ := filepath.Glob(filepath.Join(dir, "worker-*.cpu"))
	if len(files) != 1 {
		t.Fatalf("profiles written: %v", files)
	}
	if st, err := os.Stat(files[0]); err != nil || st.Size() == 0 {
		t.Fatalf("profile %s: %v (size %d)", files[0], err, st.Size())
	}
}

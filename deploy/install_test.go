package deploy_test

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// runInstall runs install.sh with args and returns its output.
func runInstall(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("./install.sh", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("install.sh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// installedPaths are what a real install creates or replaces under /.
var installedPaths = []string{
	"/usr/local/bin/templateworker",
	"/etc/templateworker",
	"/etc/templateworker/templateworker.env",
	"/var/lib/templateworker",
	"/etc/systemd/system/templateworker.service",
}

// snapshot records what exists at the installed paths.
func snapshot() map[string]string {
	out := make(map[string]string)
	for _, p := range installedPaths {
		if fi, err := os.Stat(p); err == nil {
			out[p] = fi.Mode().String() + " " + fi.ModTime().String()
		}
	}
	return out
}

// TestInstallDryRun: --dry-run into / names every step with "would: " (or
// says it is already done) and changes nothing.
func TestInstallDryRun(t *testing.T) {
	bin := binary(t)
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	before := snapshot()
	out := runInstall(t, "--dry-run", "--binary", bin)
	if after := snapshot(); len(after) != len(before) {
		t.Fatalf("--dry-run changed the system: before %v, after %v", before, after)
	} else {
		for p, s := range before {
			if after[p] != s {
				t.Fatalf("--dry-run changed %s: %s -> %s", p, s, after[p])
			}
		}
	}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.HasPrefix(l, "would: ") && !strings.HasPrefix(l, "ok: ") && !strings.HasPrefix(l, "skip: ") && l != "dry run: nothing was changed" {
			t.Errorf("unexpected dry-run line %q", l)
		}
	}
	// Each step, as an action or as already in place.
	steps := []struct{ would, done string }{
		{"would: install -m 0755 " + bin + " /usr/local/bin/templateworker.new", "ok: /usr/local/bin/templateworker is up to date"},
		{"would: groupadd --system templateworker", "ok: group templateworker exists"},
		{"would: useradd --system --gid templateworker --no-create-home --home-dir /nonexistent --shell ", "ok: user templateworker exists"},
		{"would: install -d -m 0750 -o root -g templateworker /etc/templateworker", "ok: /etc/templateworker exists"},
		{"would: install -m 0640 -o root -g templateworker " + repo + "/deploy/templateworker.env.example /etc/templateworker/templateworker.env", "ok: /etc/templateworker/templateworker.env exists"},
		{"would: install -d -m 0750 -o templateworker -g templateworker /var/lib/templateworker", "ok: /var/lib/templateworker exists"},
		{"would: install -m 0644 " + repo + "/deploy/templateworker.service /etc/systemd/system/templateworker.service", "ok: /etc/systemd/system/templateworker.service is up to date"},
		{"would: systemctl daemon-reload", "skip: systemctl daemon-reload"},
	}
	for _, s := range steps {
		if !strings.Contains(out, s.would) && !strings.Contains(out, s.done) {
			t.Errorf("dry run shows neither %q nor %q:\n%s", s.would, s.done, out)
		}
	}
	// Without --binary it would build one.
	out = runInstall(t, "--dry-run", "--prefix", t.TempDir())
	if !strings.Contains(out, "would: make -C "+repo+" build") {
		t.Errorf("dry run without --binary does not build:\n%s", out)
	}
}

// TestInstallPrefixIdempotent installs into a temporary root twice: the
// files and modes are right, and the second run changes nothing, keeping
// the operator's settings.
func TestInstallPrefixIdempotent(t *testing.T) {
	bin := binary(t)
	root := t.TempDir()
	out := runInstall(t, "--prefix", root, "--binary", bin)
	if !strings.Contains(out, "skip: system user and group templateworker") || !strings.Contains(out, "systemctl enable --now templateworker") {
		t.Errorf("first run output lacks the user skip or the next steps:\n%s", out)
	}
	want := map[string]fs.FileMode{
		"usr/local/bin/templateworker":              0o755,
		"etc/templateworker":                        fs.ModeDir | 0o750,
		"etc/templateworker/templateworker.env":     0o640,
		"var/lib/templateworker":                    fs.ModeDir | 0o750,
		"etc/systemd/system/templateworker.service": 0o644,
	}
	check := func() {
		t.Helper()
		for p, mode := range want {
			fi, err := os.Stat(filepath.Join(root, p))
			if err != nil {
				t.Errorf("%s: %v", p, err)
				continue
			}
			if fi.Mode() != mode {
				t.Errorf("%s has mode %v, want %v", p, fi.Mode(), mode)
			}
		}
		for src, dst := range map[string]string{
			bin:                      "usr/local/bin/templateworker",
			"templateworker.service": "etc/systemd/system/templateworker.service",
		} {
			if readFile(t, src) != readFile(t, filepath.Join(root, dst)) {
				t.Errorf("%s is not a copy of %s", dst, src)
			}
		}
		if _, err := os.Stat(filepath.Join(root, "usr/local/bin/templateworker.new")); err == nil {
			t.Error("the temporary templateworker.new was left behind")
		}
	}
	check()
	envPath := filepath.Join(root, "etc/templateworker/templateworker.env")
	if readFile(t, envPath) != readFile(t, "templateworker.env.example") {
		t.Error("the env file is not a copy of the example")
	}

	// The operator edits the settings; a second run keeps them and does nothing.
	edited := readFile(t, envPath) + "TEMPLATEWORKER_LOG_LEVEL=debug\n"
	if err := os.WriteFile(envPath, []byte(edited), 0o640); err != nil {
		t.Fatal(err)
	}
	out = runInstall(t, "--prefix", root, "--binary", bin)
	if strings.Contains(out, "run: ") {
		t.Errorf("second run acted:\n%s", out)
	}
	check()
	if readFile(t, envPath) != edited {
		t.Error("the second run overwrote the operator's env file")
	}
}

// TestDrillScriptFindsBinary: drill.sh runs `templateworker drill` from
// $TEMPLATEWORKER_BIN and passes its arguments on.
func TestDrillScriptFindsBinary(t *testing.T) {
	cmd := exec.Command("./drill.sh", "--help")
	cmd.Env = append(os.Environ(), "TEMPLATEWORKER_BIN="+binary(t))
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "templateworker drill") || !strings.Contains(string(out), "--signal") {
		t.Fatalf("drill.sh --help: %v\n%s", err, out)
	}
	cmd = exec.Command("./drill.sh", "--addr", "192.0.2.1:7878", "--api-token", "x")
	cmd.Env = append(os.Environ(), "TEMPLATEWORKER_BIN="+binary(t))
	out, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "not a loopback address") {
		t.Fatalf("drill.sh against a non-loopback address: %v\n%s", err, out)
	}
}

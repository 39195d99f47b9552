package deploy_test

import (
	"bufio"
	"bytes"
	"github.com/templateworker/templateworker/internal/testbin"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// binary returns the templateworker binary under test.
func binary(t testing.TB) string { return testbin.Path(t) }

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestUnitVerifies runs systemd-analyze verify on the unit. verify checks
// that the ExecStart binary exists, so it runs on a temporary copy whose
// ExecStart points at the binary built for the test instead of
// /usr/local/bin/templateworker; nothing else is changed. Any output
// (e.g. an unknown or misspelled directive) fails the test.
func TestUnitVerifies(t *testing.T) {
	// Tests never install anything: .ci/run installs systemd (which ships
	// systemd-analyze on Debian 12) before make test.
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true but systemd-analyze is not on PATH: .ci/run must install it (Debian package systemd)")
		}
		t.Skip("systemd-analyze is not on PATH (Debian package systemd; .ci/run installs it): the unit was not verified")
	}
	unit := readFile(t, "templateworker.service")
	const installed = "ExecStart=/usr/local/bin/templateworker "
	if !strings.Contains(unit, installed) {
		t.Fatalf("unit has no %q line", installed)
	}
	unit = strings.Replace(unit, installed, "ExecStart="+binary(t)+" ", 1)
	dir := t.TempDir()
	copyPath := filepath.Join(dir, "templateworker.service")
	if err := os.WriteFile(copyPath, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", copyPath).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}

	// The check must be able to fail: a misspelled directive is reported.
	bad := strings.Replace(unit, "ProtectHome=yes", "ProtectHome=yes\nProtectHomme=yes", 1)
	if err := os.WriteFile(copyPath, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, _ := exec.Command(analyze, "verify", copyPath).CombinedOutput(); !bytes.Contains(out, []byte("ProtectHomme")) {
		t.Fatalf("systemd-analyze verify did not report a misspelled directive:\n%s", out)
	}
}

// TestUnitDirectives checks the unit file itself (not the test copy) for
// every directive the deployment relies on.
func TestUnitDirectives(t *testing.T) {
	unit := readFile(t, "templateworker.service")
	lines := make(map[string]bool)
	for _, l := range strings.Split(unit, "\n") {
		lines[strings.TrimSpace(l)] = true
	}
	for _, want := range []string{
		"[Unit]", "[Service]", "[Install]",
		"Type=notify",
		"ExecStart=/usr/local/bin/templateworker master --process-workers 8",
		"EnvironmentFile=/etc/templateworker/templateworker.env",
		"Restart=on-failure",
		"WatchdogSec=30s",
		"KillMode=mixed",
		"TimeoutStopSec=30s",
		"ExecReload=/bin/kill -HUP $MAINPID",
		"User=templateworker",
		"Group=templateworker",
		"WorkingDirectory=/var/lib/templateworker",
		"NoNewPrivileges=yes",
		"ProtectSystem=strict",
		"ReadWritePaths=/var/lib/templateworker",
		"PrivateTmp=yes",
		"ProtectHome=yes",
		"LimitNOFILE=65536",
		"ProtectKernelTunables=yes",
		"ProtectControlGroups=yes",
		"RestrictSUIDSGID=yes",
		"LockPersonality=yes",
		"WantedBy=multi-user.target",
	} {
		if !lines[want] {
			t.Errorf("unit lacks the line %q", want)
		}
	}
	// Only the data directory is writable.
	if n := strings.Count(unit, "ReadWritePaths="); n != 1 {
		t.Errorf("unit has %d ReadWritePaths= lines, want exactly 1", n)
	}
}

// masterFlag is one flag of `templateworker master --help`.
type masterFlag struct {
	name, env, def string
}

var helpLine = regexp.MustCompile(`^\s+--([a-z0-9-]+)(?: value)?\s.*?(?:\(default: ("[^"]*"|[^)]*)\) )?\[\$([A-Z0-9_]+)\]\s*$`)

// masterFlags parses `templateworker master --help`.
func masterFlags(t *testing.T) []masterFlag {
	t.Helper()
	out, err := exec.Command(binary(t), "master", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("master --help: %v\n%s", err, out)
	}
	var flags []masterFlag
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(strings.TrimSpace(line), "--") || strings.Contains(line, "--help") {
			continue
		}
		m := helpLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("cannot parse the help line %q", line)
		}
		def := m[2]
		if !strings.HasPrefix(def, `"`) && strings.Contains(def, " ") {
			// Prose in the usage ("default: this executable") of a flag
			// whose value is empty by default.
			def = ""
		}
		flags = append(flags, masterFlag{name: m[1], def: strings.Trim(def, `"`), env: m[3]})
	}
	if len(flags) < 20 {
		t.Fatalf("found only %d flags in master --help:\n%s", len(flags), out)
	}
	return flags
}

// TestEnvExampleCoversMasterFlags: every flag of `templateworker master`
// is in the example as TEMPLATEWORKER_<FLAG>, with a comment line above,
// and a line that is commented out shows the flag's default.
func TestEnvExampleCoversMasterFlags(t *testing.T) {
	example := readFile(t, "templateworker.env.example")
	lines := strings.Split(example, "\n")
	settings := make(map[string]int) // env var -> line index
	for i, l := range lines {
		if m := regexp.MustCompile(`^#?(TEMPLATEWORKER_[A-Z0-9_]+)=`).FindStringSubmatch(l); m != nil {
			if _, dup := settings[m[1]]; dup {
				t.Errorf("%s appears twice", m[1])
			}
			settings[m[1]] = i
		}
	}
	known := make(map[string]bool)
	for _, f := range masterFlags(t) {
		want := "TEMPLATEWORKER_" + strings.ToUpper(strings.ReplaceAll(f.name, "-", "_"))
		if f.env != want {
			t.Errorf("--%s reads $%s, want $%s", f.name, f.env, want)
		}
		known[want] = true
		i, ok := settings[want]
		if !ok {
			t.Errorf("templateworker.env.example lacks --%s as %s", f.name, want)
			continue
		}
		if i == 0 || !strings.HasPrefix(lines[i-1], "# ") {
			t.Errorf("%s has no one-line comment above it", want)
		}
		line := lines[i]
		if value, commented := strings.CutPrefix(line, "#"+want+"="); commented {
			if value != f.def {
				t.Errorf("%s is commented out with %q, but the default of --%s is %q", want, value, f.name, f.def)
			}
		}
	}
	for s := range settings {
		if !known[s] {
			t.Errorf("templateworker.env.example sets %s, which is no flag of templateworker master", s)
		}
	}
	if !strings.Contains(example, "\nTEMPLATEWORKER_DATA_DIR=/var/lib/templateworker\n") {
		t.Error("the example does not set TEMPLATEWORKER_DATA_DIR=/var/lib/templateworker")
	}
}

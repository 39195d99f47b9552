// Command benchreport runs templateworker's benchmark suite against its
// floors and writes the results, with the ratios and targets, to
// BENCHMARKS.md (make bench).
//
// Every package's test binary is compiled once and run -rounds times; each
// figure is the median over the rounds. A ratio is computed per round, from
// a figure and its floor measured in that round (the suites of a round run
// back to back, a figure's floor in the same test binary where the floor
// lives in the same package), and reported as the median of the per-round
// ratios. For each missed target the benchmark
// is run again under the CPU profiler and the top of the profile goes into
// the report.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

func main() {
	out := flag.String("o", "BENCHMARKS.md", "report to write")
	rounds := flag.Int("rounds", 3, "runs of every benchmark; figures are medians")
	flag.Parse()
	ctx := context.Background()
	if err := run(ctx, *out, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
}

// suites are the benchmarks of the report, by package.
func suites() []*suite {
	return []*suite{
		{pkg: "./master", bench: "^Benchmark(RawLuaCall|ChanRoundTrip|ChanRoundTripLocked|DispatchThread|DispatchThreadUnlocked|DispatchThreadEmpty|DispatchProcess|DispatchProcessEmpty|HTTPConst|HTTPDispatch)$"},
		// The transport floors right after the dispatches they are the
		// floors of.
		{pkg: "./mesophyll", bench: "^Benchmark(WSEcho|WSEchoProcess|MesophyllDispatch|MesophyllDispatchParallel|Codec)$"},
		{pkg: "./master", bench: "^BenchmarkHTTPNowait$"},
		{pkg: "./master", bench: "^BenchmarkEventDrain$", benchtime: "100000x"},
		// Issue 19: a neighbour beside a spinning tenant, KV waits that
		// overlap.
		{pkg: "./master", bench: "^BenchmarkNeighbour$", benchtime: "300x"},
		{pkg: "./master", bench: "^BenchmarkKVHeavy$", benchtime: "5000x"},
		{pkg: "./master", bench: "^BenchmarkRecovery$", benchtime: "20x"},
		// Every kill waits for the worker to have run the default
		// --min-uptime (10 s): few kills.
		{pkg: "./master", bench: "^BenchmarkRecoveryDefaultMinUptime$", benchtime: "4x"},
		{pkg: "./worker", bench: "^Benchmark(NewVM|NewVMSharedTemplates|VMCall|TryDispatchEvent)$"},
		{pkg: "./worker", bench: "^BenchmarkIdleTenantHeap$", benchtime: "1x"},
		{pkg: "./store", bench: "^BenchmarkKV(Get|Set)(SQLite|Postgres)$"},
		// Minutes per store (make bench sets TEMPLATEWORKER_BENCH_TENANTS,
		// 1,000,000 on SQLite, and TEMPLATEWORKER_BENCH_TENANTS_PG): once.
		{pkg: "./master", bench: "^BenchmarkManyTenants$", benchtime: "1x", firstRound: true},
		// Seeding 1,000,000 tenants takes seconds; each start is timed 3 times.
		{pkg: "./master", bench: "^BenchmarkStartManyTenants$", benchtime: "3x", firstRound: true},
	}
}

// startTenantsEnv is master's BenchmarkStartManyTenants store size.
const startTenantsEnv = "TEMPLATEWORKER_BENCH_START_TENANTS"

func run(ctx context.Context, out string, rounds int) error {
	start := time.Now()
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "benchreport")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	r := &runner{root: root, tmp: tmp, goBin: goBinary(), results: map[string]result{},
		logf: func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }}
	if os.Getenv(startTenantsEnv) == "" {
		os.Setenv(startTenantsEnv, "1000000") // issue 17: start-to-ready over 1,000,000 tenants
	}
	if os.Getenv("TEMPLATEWORKER_BIN") == "" {
		bin := filepath.Join(tmp, "templateworker")
		cmd := exec.CommandContext(ctx, r.goBin, "build", "-o", bin, "./cmd/templateworker")
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build templateworker: %w\n%s", err, b)
		}
		os.Setenv("TEMPLATEWORKER_BIN", bin)
	}
	ss := suites()
	bins := map[string]*suite{}
	for _, s := range ss {
		if b, ok := bins[s.pkg]; ok {
			s.bin = b.bin
			continue
		}
		r.logf("compiling %s", s.pkg)
		if err := r.compile(ctx, s); err != nil {
			return err
		}
		bins[s.pkg] = s
	}
	for i := 1; i <= rounds; i++ {
		r.logf("round %d/%d", i, rounds)
		for _, s := range ss {
			if err := r.run(ctx, s, i-1); err != nil {
				return err
			}
		}
	}
	rep := newReport(r.results)
	// The wake-up counts on the terminal too, to compare with another host.
	for _, rw := range rep.rows {
		if strings.HasPrefix(rw.what, "wake-ups per call") {
			r.logf("%s: %s (floor %s)", rw.what, rw.figure, rw.floor)
		}
	}
	for _, m := range rep.missed() {
		if m.profile == "" {
			continue
		}
		r.logf("profiling %s (target missed)", m.profile)
		text, err := r.profile(ctx, bins[m.pkg], m.profile, "2s")
		if err != nil {
			text = "profile failed: " + err.Error()
		}
		m.top = text
	}
	info, err := machine(ctx, r.goBin, root)
	if err != nil {
		return err
	}
	info.rounds = rounds
	info.took = time.Since(start).Round(time.Second)
	if err := os.WriteFile(filepath.Join(root, out), []byte(rep.markdown(info)), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	r.logf("wrote %s in %s", out, info.took)
	return nil
}

// moduleRoot is the directory of go.mod.
func moduleRoot() (string, error) {
	out, err := exec.Command(goBinary(), "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside the templateworker module")
	}
	return filepath.Dir(mod), nil
}

func goBinary() string {
	if g := os.Getenv("GO"); g != "" {
		return g
	}
	return "go"
}

// machineInfo describes where the figures were measured.
type machineInfo struct {
	cpu, goVersion, commit string
	cores, rounds          int
	took                   time.Duration
	postgres               bool
}

func machine(ctx context.Context, goBin, root string) (machineInfo, error) {
	m := machineInfo{cpu: "unknown", cores: numCPU(), postgres: os.Getenv("TEMPLATEWORKER_TEST_DATABASE_URL") != ""}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	out, err := exec.CommandContext(ctx, goBin, "env", "GOVERSION").Output()
	if err != nil {
		return m, fmt.Errorf("go env GOVERSION: %w", err)
	}
	m.goVersion = strings.TrimSpace(string(out))
	cmd := exec.CommandContext(ctx, "git", "describe", "--always", "--dirty")
	cmd.Dir = root
	if b, err := cmd.Output(); err == nil {
		m.commit = strings.TrimSpace(string(b))
	}
	return m, nil
}

package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// suite is one package's benchmarks and how they are run.
type suite struct {
	pkg       string // e.g. ./master
	bench     string // -test.bench pattern
	benchtime string // -test.benchtime
	bin       string // compiled test binary
	// firstRound runs the suite in the first round only (a run too long
	// to repeat; its figures are that round's).
	firstRound bool
}

// result is one benchmark's figures: unit → one value per round, NaN for a
// round that did not report it. The benchmark's iteration count is kept
// under the unit "N".
type result map[string][]float64

// set records v as round's value of unit.
func (r result) set(unit string, round int, v float64) {
	s := r[unit]
	for len(s) <= round {
		s = append(s, math.NaN())
	}
	s[round] = v
	r[unit] = s
}

// runner compiles and runs the suites.
type runner struct {
	root    string // module root
	tmp     string // compiled binaries and profiles
	goBin   string
	results map[string]result // by benchmark name without the -N suffix
	logf    func(format string, args ...any)
}

// compile builds s's test binary.
func (r *runner) compile(ctx context.Context, s *suite) error {
	s.bin = filepath.Join(r.tmp, strings.Trim(strings.ReplaceAll(s.pkg, "/", "_"), "._")+".test")
	cmd := exec.CommandContext(ctx, r.goBin, "test", "-c", "-o", s.bin, s.pkg)
	cmd.Dir = r.root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("compile %s: %w\n%s", s.pkg, err, out)
	}
	return nil
}

// run runs s once, as round (from 0), and records its results.
func (r *runner) run(ctx context.Context, s *suite, round int) error {
	if s.firstRound && round > 0 {
		return nil
	}
	args := []string{"-test.run", "^$", "-test.bench", s.bench, "-test.benchmem", "-test.timeout", "30m"}
	if s.benchtime != "" {
		args = append(args, "-test.benchtime", s.benchtime)
	}
	out, err := r.exec(ctx, s, args...)
	if err != nil {
		return fmt.Errorf("run %s benchmarks: %w\n%s", s.pkg, err, tail(out, 40))
	}
	n := r.parse(out, round)
	r.logf("  %s: %d results", s.pkg, n)
	return nil
}

func (r *runner) exec(ctx context.Context, s *suite, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, s.bin, args...)
	cmd.Dir = filepath.Join(r.root, s.pkg)
	cmd.Env = os.Environ()
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	return buf.Bytes(), err
}

// benchLine matches "BenchmarkName-2   1234   56.7 ns/op   8 B/op ...".
var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+(\d+)\s+(.+)$`)

// parse records the benchmark lines of out as round's figures and returns
// how many it saw.
func (r *runner) parse(out []byte, round int) int {
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m := benchLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		fields := strings.Fields(m[3])
		res := r.results[m[1]]
		if res == nil {
			res = result{}
			r.results[m[1]] = res
		}
		if iters, err := strconv.ParseFloat(m[2], 64); err == nil {
			res.set("N", round, iters)
		}
		for i := 0; i+1 < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				continue
			}
			res.set(fields[i+1], round, v)
		}
		n++
	}
	return n
}

// profile runs one benchmark of s with the CPU profiler and returns the
// top of the profile.
func (r *runner) profile(ctx context.Context, s *suite, bench, benchtime string) (string, error) {
	prof := filepath.Join(r.tmp, strings.NewReplacer("/", "_", "$", "", "^", "").Replace(bench)+".prof")
	pattern := "^" + strings.ReplaceAll(bench, "/", "$/^") + "$"
	if out, err := r.exec(ctx, s, "-test.run", "^$", "-test.bench", pattern, "-test.benchtime", benchtime,
		"-test.cpuprofile", prof, "-test.timeout", "10m"); err != nil {
		return "", fmt.Errorf("profile %s: %w\n%s", bench, err, tail(out, 20))
	}
	cmd := exec.CommandContext(ctx, r.goBin, "tool", "pprof", "-top", "-nodecount=18", s.bin, prof)
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("pprof %s: %w", bench, err)
	}
	// Keep the summary line and the table.
	var keep []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if strings.HasPrefix(line, "File:") || strings.HasPrefix(line, "Build ID:") || strings.HasPrefix(line, "Type:") || strings.HasPrefix(line, "Time:") {
			continue
		}
		keep = append(keep, line)
	}
	return strings.Join(keep, "\n"), nil
}

func tail(b []byte, lines int) string {
	l := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

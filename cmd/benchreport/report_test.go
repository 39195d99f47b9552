package main

import (
	"math"
	"strings"
	"testing"
)

// sample is benchmark output as the test binaries print it.
const sample = `goos: linux
goarch: amd64
pkg: github.com/templateworker/templateworker/master
BenchmarkRawLuaCall-2   	  400000	      3012 ns/op	    4848 B/op	     303 allocs/op
BenchmarkDispatchThread/parallel64-2         	     200	     26368 ns/op	        64.00 callers	    3714 B/op	     325 allocs/op
BenchmarkRecovery-2   	      20	         0 extra-restarts	        40.45 max-ms	        19.42 p50-ms	        35.5 p90-ms
BenchmarkRecovery
    bench_recovery_test.go:77: a log line, not a figure
PASS
ok  	github.com/templateworker/templateworker/master	3.1s
`

func TestParse(t *testing.T) {
	r := &runner{results: map[string]result{}}
	if n := r.parse([]byte(sample), 0); n != 3 {
		t.Fatalf("parse saw %d benchmark lines, want 3", n)
	}
	// The second round lacks the raw call.
	if n := r.parse([]byte(strings.Replace(strings.Replace(sample, "3012 ns/op", "9000 ns/op", 1), "BenchmarkRawLuaCall-2", "BenchmarkOther-2", 1)), 1); n != 3 {
		t.Fatalf("second round: %d lines", n)
	}
	rec := r.results["BenchmarkRecovery"]
	for unit, want := range map[string]float64{"N": 20, "p50-ms": 19.42, "p90-ms": 35.5, "max-ms": 40.45, "extra-restarts": 0} {
		if got := rec[unit]; len(got) != 2 || got[0] != want || got[1] != want {
			t.Errorf("BenchmarkRecovery %s = %v, want %v in both rounds", unit, got, want)
		}
	}
	if got := r.results["BenchmarkDispatchThread/parallel64"]["callers"]; len(got) != 2 || got[0] != 64 {
		t.Errorf("sub-benchmark callers = %v, want 64 (name without the -2 suffix)", got)
	}
	raw := series(r.results["BenchmarkRawLuaCall"]["ns/op"])
	if len(raw) != 1 || raw[0] != 3012 || !math.IsNaN(raw.at(1)) {
		t.Errorf("raw call rounds = %v, want [3012] and round 1 missing", raw)
	}
	if m, ok := raw.median(); !ok || m != 3012 {
		t.Errorf("median over the measured rounds = %v %v", m, ok)
	}
}

// rounds builds results: bench → unit → one value per round.
func rounds(m map[string]map[string][]float64) map[string]result {
	out := map[string]result{}
	for b, units := range m {
		res := result{}
		for u, v := range units {
			for i, x := range v {
				res.set(u, i, x)
			}
		}
		out[b] = res
	}
	return out
}

func TestRatioIsMedianOfSameRoundRatios(t *testing.T) {
	// Per round: 10/10, 100/20, 40/40 → ratios 1, 5, 1: median 1. The ratio
	// of the medians (40/20 = 2) mixes rounds and is not what is reported.
	rep := newReport(rounds(map[string]map[string][]float64{
		"BenchmarkRawLuaCall":                {"ns/op": {10, 20, 40}},
		"BenchmarkDispatchThread/sequential": {"ns/op": {10, 100, 40}},
	}))
	rw := findRow(t, rep, "thread dispatch, sequential")
	if rw.ratio != "1.00×" || rw.status != "**met**" {
		t.Fatalf("row %+v: want ratio 1.00× (median of per-round ratios), met", rw)
	}
	// A round where either figure is missing does not count.
	s := series{1, math.NaN(), 3}.over(series{1, 2})
	if len(s) != 3 || s[0] != 1 || !math.IsNaN(s[1]) || !math.IsNaN(s[2]) {
		t.Fatalf("over = %v", s)
	}
}

func findRow(t *testing.T, rep *report, prefix string) row {
	t.Helper()
	for _, rw := range rep.rows {
		if rw.what == prefix {
			return rw
		}
	}
	for _, rw := range rep.rows {
		if strings.HasPrefix(rw.what, prefix) {
			return rw
		}
	}
	t.Fatalf("no row %q", prefix)
	return row{}
}

// run3 is v in each of three rounds.
func run3(v float64) []float64 { return []float64{v, v, v} }

// benchRun returns the figures of a run that meets every target (good) or
// misses every one.
func benchRun(good bool) map[string]result {
	pick := func(g, b float64) []float64 {
		if good {
			return run3(g)
		}
		return run3(b)
	}
	return rounds(map[string]map[string][]float64{
		"BenchmarkRawLuaCall":                       {"ns/op": run3(3000)},
		"BenchmarkWSEcho":                           {"ns/op": run3(14000)},
		"BenchmarkDispatchThread/sequential":        {"ns/op": pick(3500, 40000)},
		"BenchmarkDispatchProcess/sequential":       {"ns/op": pick(20000, 50000)},
		"BenchmarkWSEchoProcess/unix":               {"ns/op": run3(30000)},
		"BenchmarkHTTPConst":                        {"req/s": run3(60000)},
		"BenchmarkHTTPDispatch/process":             {"req/s": pick(40000, 20000)},
		"BenchmarkHTTPNowait":                       {"req/s": pick(30000, 10000), "healthz-req/s": run3(50000), "p50-us": run3(900), "p99-us": run3(5000)},
		"BenchmarkEventDrain":                       {"events/s": run3(20000)},
		"BenchmarkRecovery":                         {"N": run3(20), "p50-ms": pick(20, 200), "p90-ms": run3(30), "max-ms": run3(40), "extra-restarts": {0, 0, pick(0, 1)[0]}},
		"BenchmarkRecoveryDefaultMinUptime":         {"N": run3(4), "p50-ms": pick(20, 3000), "p90-ms": run3(30), "max-ms": run3(40), "extra-restarts": pick(0, 2)},
		"BenchmarkIdleTenantHeap":                   {"bytes/tenant": pick(20<<10, 80<<10)},
		"BenchmarkNewVM":                            {"ns/op": pick(40000, 200000), "B/op": run3(46000)},
		"BenchmarkNewVMSharedTemplates":             {"ns/op": run3(30000), "B/op": run3(9000)},
		"BenchmarkNeighbour/thread/idle":            {"p50-µs": run3(5), "p99-µs": run3(40)},
		"BenchmarkNeighbour/thread/beside-spinner":  {"p50-µs": pick(8, 10000), "p99-µs": pick(600, 20000)},
		"BenchmarkNeighbour/process/idle":           {"p50-µs": run3(100), "p99-µs": run3(400)},
		"BenchmarkNeighbour/process/beside-spinner": {"p50-µs": pick(150, 10000), "p99-µs": pick(1500, 20000)},
		"BenchmarkKVHeavy/sqlite/concurrency-1":     {"events/s": run3(600)},
		"BenchmarkKVHeavy/sqlite/concurrency-4":     {"events/s": run3(1200)},
	})
}

// TestEveryGoalCanBeMissed: every row with a goal is judged, met by good
// figures and marked missed by bad ones.
func TestEveryGoalCanBeMissed(t *testing.T) {
	for _, good := range []bool{true, false} {
		rep := newReport(benchRun(good))
		want := "**missed**"
		if good {
			want = "**met**"
		}
		goals := 0
		for _, rw := range rep.rows {
			if rw.goal == "—" || rw.goal == "" {
				continue
			}
			goals++
			if rw.status != want {
				t.Errorf("good=%v: row %q (goal %s, figure %s, ratio %s) is %q, want %q", good, rw.what, rw.goal, rw.figure, rw.ratio, rw.status, want)
			}
		}
		if goals != 13 {
			t.Errorf("%d rows with a goal, want 13", goals)
		}
		if missed := len(rep.missed()); good && missed != 0 || !good && missed != len(rep.targets) {
			t.Errorf("good=%v: %d targets missed of %d", good, missed, len(rep.targets))
		}
		md := rep.markdown(machineInfo{rounds: 3})
		if !good && !strings.Contains(md, "### no restart beyond one per kill\n") {
			t.Errorf("the report does not explain the missed restarts target:\n%s", md)
		}
	}
}

// TestExtraRestartsWorstRound: one extra restart in any round misses the
// goal, even when the median round had none.
func TestExtraRestartsWorstRound(t *testing.T) {
	rep := newReport(rounds(map[string]map[string][]float64{
		"BenchmarkRecovery": {"N": run3(20), "p50-ms": run3(20), "extra-restarts": {0, 1, 0}},
	}))
	rw := findRow(t, rep, "recovery: restarts beyond one per kill")
	if rw.status != "**missed**" || rw.figure != "1" || !strings.Contains(rw.what, "20 kills") {
		t.Fatalf("row %+v: want 1, missed, 20 kills", rw)
	}
}

// TestNotMeasured: a goal whose benchmark did not run is neither met nor
// missed.
func TestNotMeasured(t *testing.T) {
	rep := newReport(map[string]result{})
	for _, rw := range rep.rows {
		if rw.goal != "—" && rw.status != "not measured" {
			t.Errorf("row %q: %q without figures, want not measured", rw.what, rw.status)
		}
	}
	if len(rep.missed()) != 0 {
		t.Errorf("targets missed without figures: %d", len(rep.missed()))
	}
}

func TestWakeRow(t *testing.T) {
	rep := newReport(rounds(map[string]map[string][]float64{
		"BenchmarkDispatchProcessEmpty/sequential": {"ns/op": run3(40000), "wakeups/op": run3(2.2), "worker-wakeups/op": {1.2, 1.3, 1.25}},
		"BenchmarkWSEchoProcess/unix":              {"ns/op": run3(20000), "wakeups/op": run3(1.1), "worker-wakeups/op": run3(1.1)},
	}))
	rw := findRow(t, rep, "wake-ups per call: process dispatch of `return nil`, sequential")
	if rw.figure != "2.20 + 1.25" || rw.floor != "1.10 + 1.10 (WSEchoProcess/unix)" {
		t.Fatalf("row %+v", rw)
	}
	if rw := findRow(t, rep, "wake-ups per call: thread dispatch, sequential"); rw.figure != "n/a" || rw.floor != "n/a" {
		t.Fatalf("row without figures %+v", rw)
	}
}

// TestNowaitCPURow: the CPU per nowait event, master plus workers, against
// the CPU per GET /healthz.
func TestNowaitCPURow(t *testing.T) {
	rep := newReport(rounds(map[string]map[string][]float64{
		"BenchmarkHTTPNowait": {"master-cpu-us/op": run3(110), "worker-cpu-us/op": run3(30), "healthz-cpu-us/op": run3(56)},
	}))
	rw := findRow(t, rep, "CPU per nowait event (master + 2 workers, until delivered) against one GET /healthz, same run")
	if rw.figure != "110 µs + 30 µs" || rw.floor != "56 µs" || rw.ratio != "40%" {
		t.Fatalf("row %+v", rw)
	}
	rep = newReport(rounds(map[string]map[string][]float64{"BenchmarkHTTPNowait": {"req/s": run3(1)}}))
	if rw := findRow(t, rep, "CPU per nowait event (master + 2 workers, until delivered) against one GET /healthz, same run"); rw.figure != "n/a" || rw.ratio != "n/a" {
		t.Fatalf("row without figures %+v", rw)
	}
}

func TestCPURow(t *testing.T) {
	rep := newReport(rounds(map[string]map[string][]float64{
		"BenchmarkDispatchProcess/sequential": {"ns/op": run3(60000), "cpu-us/op": {30, 32, 31}, "worker-cpu-us/op": run3(40)},
		"BenchmarkWSEchoProcess/unix":         {"ns/op": run3(20000), "cpu-us/op": run3(16.25), "worker-cpu-us/op": run3(16)},
	}))
	rw := findRow(t, rep, "CPU per call: process dispatch, sequential")
	if rw.figure != "31.0 + 40.0 µs" || rw.floor != "16.2 + 16.0 µs (WSEchoProcess/unix)" {
		t.Fatalf("row %+v", rw)
	}
	if rw := findRow(t, rep, "CPU per call: process dispatch of `return nil`, sequential"); rw.figure != "n/a" {
		t.Fatalf("row without figures %+v", rw)
	}
}

// TestConcurrencyRows: the neighbour rows compare with the idle figures of
// the same topology, and the KV-heavy row shows after against before.
func TestConcurrencyRows(t *testing.T) {
	rep := newReport(benchRun(true))
	if rw := findRow(t, rep, "neighbour's dispatch beside a tenant spinning 20 ms calls back to back, process"); rw.ratio != "1.5× / 3.8×" || rw.status != "**met**" {
		t.Fatalf("neighbour row %+v", rw)
	}
	if rw := findRow(t, rep, "KV-heavy template (5 gets + 1 set per event), 64 tenants, 2 process workers, sqlite"); rw.ratio != "2.00×" || rw.figure != "1,200 events/s" {
		t.Fatalf("KV row %+v", rw)
	}
	if rw := findRow(t, rep, "KV-heavy template (5 gets + 1 set per event), 64 tenants, 2 process workers, postgres"); rw.figure != "not run" {
		t.Fatalf("KV row without PostgreSQL %+v", rw)
	}
}

// TestTargetOfTwoRowsMissedByEither: the neighbour goal is judged on both
// topologies; a miss in the first (thread) is not undone by a met second,
// and the missed target is explained once.
func TestTargetOfTwoRowsMissedByEither(t *testing.T) {
	res := benchRun(true)
	res["BenchmarkNeighbour/thread/beside-spinner"] = rounds(map[string]map[string][]float64{
		"x": {"p50-µs": run3(8), "p99-µs": run3(5000)},
	})["x"]
	rep := newReport(res)
	if rw := findRow(t, rep, "neighbour's dispatch beside a tenant spinning 20 ms calls back to back, thread"); rw.status != "**missed**" {
		t.Fatalf("thread neighbour row %+v", rw)
	}
	if rw := findRow(t, rep, "neighbour's dispatch beside a tenant spinning 20 ms calls back to back, process"); rw.status != "**met**" {
		t.Fatalf("process neighbour row %+v", rw)
	}
	if m := rep.missed(); len(m) != 1 || m[0] != tNeighbour {
		t.Fatalf("missed targets %v, want the neighbour's alone", m)
	}
	md := rep.markdown(machineInfo{rounds: 3})
	if n := strings.Count(md, "### "+tNeighbour.name+"\n"); n != 1 {
		t.Fatalf("the neighbour target is explained %d times:\n%s", n, md)
	}
}

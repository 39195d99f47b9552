package main

import (
	"strings"
	"testing"
)

// scaleSample is BenchmarkManyTenants's output as master's test binary
// prints it (a 100,000-tenant SQLite run of this machine, and PostgreSQL at
// 200,000): the latencies' unit is µs.
const scaleSample = `pkg: github.com/templateworker/templateworker/master
BenchmarkManyTenants/sqlite-2         	       1	51255739629 ns/op	      3213 cold-dispatch/s	     14529 cold-p50-µs	     76147 cold-p99-µs	         9.576 heap-KiB/cached-vm	      7674 hit-p50-µs	     47440 hit-p99-µs	       203.7 peak-worker-heap-MiB	       239.6 peak-worker-rss-MiB	        12.11 rss-KiB/cached-vm	         1.783 seed-s	        13.00 start-to-ready-ms	    100000 tenants
BenchmarkManyTenants/postgres-2       	       1	99000000000 ns/op	      2139 cold-dispatch/s	     25000 cold-p50-µs	     90000 cold-p99-µs	         9.6 heap-KiB/cached-vm	      2800 hit-p50-µs	     30000 hit-p99-µs	       203 peak-worker-heap-MiB	       239 peak-worker-rss-MiB	        12.1 rss-KiB/cached-vm	         3.6 seed-s	        16.00 start-to-ready-ms	    200000 tenants
PASS
`

// TestScaleRows: the many-tenants rows show the latencies the benchmark
// printed (in µs), each store with its own size, and the RSS goal is
// judged only at 1,000,000 SQLite tenants.
func TestScaleRows(t *testing.T) {
	r := &runner{results: map[string]result{}}
	if n := r.parse([]byte(scaleSample), 0); n != 2 {
		t.Fatalf("parse saw %d benchmark lines, want 2", n)
	}
	rep := newReport(r.results)
	sq := "100,000 tenants, sqlite, 2 process workers, --vm-cache-max 20000: "
	for what, want := range map[string]string{
		sq + "cold dispatches":         "3,213/s, p50 14.53 ms, p99 76.15 ms",
		sq + "cache hits":              "p50 7.67 ms, p99 47.44 ms",
		sq + "peak worker RSS":         "240 MiB",
		sq + "workers' start to ready": "13 ms (store seeded in 1.8 s)",
		sq + "per cached VM":           "9.6 KiB / 12.1 KiB (204 MiB)",
		"200,000 tenants, postgres, 2 process workers, --vm-cache-max 20000: cold dispatches": "2,139/s, p50 25.00 ms, p99 90.00 ms",
		"200,000 tenants, postgres, 2 process workers, --vm-cache-max 20000: cache hits":      "p50 2.80 ms, p99 30.00 ms",
	} {
		if rw := findRow(t, rep, what); rw.figure != want {
			t.Errorf("row %q: figure %q, want %q", rw.what, rw.figure, want)
		}
	}
	if rw := findRow(t, rep, sq+"peak worker RSS"); rw.status != "not measured" {
		t.Errorf("RSS goal at 100,000 tenants: %q, want not measured (the goal is at 1,000,000)", rw.status)
	}
	if rw := findRow(t, rep, "200,000 tenants, postgres, 2 process workers, --vm-cache-max 20000: peak worker RSS"); rw.status != "info" {
		t.Errorf("PostgreSQL RSS row: %q, want info", rw.status)
	}

	for _, c := range []struct {
		rss  string
		want string
	}{{"239.6", "**met**"}, {"257.0", "**missed**"}} {
		r := &runner{results: map[string]result{}}
		out := strings.Replace(strings.Replace(scaleSample, "100000 tenants", "1000000 tenants", 1), "239.6 peak", c.rss+" peak", 1)
		r.parse([]byte(out), 0)
		rw := findRow(t, newReport(r.results), "1,000,000 tenants, sqlite, 2 process workers, --vm-cache-max 20000: peak worker RSS")
		if rw.status != c.want {
			t.Errorf("1,000,000 tenants, peak RSS %s MiB: %q, want %q", c.rss, rw.status, c.want)
		}
	}
}

// TestSharedTemplatesRow: the VM creation with shared chunks is an info
// row beside the compiled one.
func TestSharedTemplatesRow(t *testing.T) {
	rw := findRow(t, newReport(benchRun(true)), "create a tenant VM, all libraries, its 3 templates already compiled")
	if rw.figure != "30.00 µs, 8.8 KiB allocated" || rw.status != "info" {
		t.Fatalf("row %+v", rw)
	}
}

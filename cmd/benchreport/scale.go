package main

import "fmt"

// The rows of issue 17: many tenants in bounded memory.

// scaleGoalTenants is the store size issue 17's RSS goal is stated at: a
// smaller run (make bench BENCH_TENANTS=…) reports its figures, but the
// goal is then not measured.
const scaleGoalTenants = 1000000

// scaleRows adds the rows of BenchmarkManyTenants (run once), per store:
// each store's row names its own size (make bench runs PostgreSQL smaller,
// BENCH_TENANTS_PG). The benchmark reports its latencies in µs.
func (r *report) scaleRows() {
	for _, st := range []string{"sqlite", "postgres"} {
		b := "BenchmarkManyTenants/" + st
		n, ok := r.get(b, "tenants")
		if !ok {
			r.rows = append(r.rows, row{what: "many tenants, " + st, figure: "not run", floor: "—", ratio: "—", goal: "—", status: "info"})
			continue
		}
		what := fmt.Sprintf("%s tenants, %s, 2 process workers, --vm-cache-max 20000", thousands(n), st)
		rss, okRSS := r.get(b, "peak-worker-rss-MiB")
		rw := row{what: what + ": peak worker RSS over the whole run", figure: fmt.Sprintf("%.0f MiB", rss), floor: "—", ratio: "—", goal: "≤ 256 MiB"}
		if st == "sqlite" {
			r.judge(&rw, tScale, okRSS && n >= scaleGoalTenants, rss <= 256)
		} else {
			rw.status = "info"
		}
		r.rows = append(r.rows, rw)
		cps, _ := r.get(b, "cold-dispatch/s")
		c50, _ := r.get(b, "cold-p50-µs")
		c99, _ := r.get(b, "cold-p99-µs")
		h50, _ := r.get(b, "hit-p50-µs")
		h99, _ := r.get(b, "hit-p99-µs")
		start, _ := r.get(b, "start-to-ready-ms")
		seed, _ := r.get(b, "seed-s")
		r.rows = append(r.rows,
			row{what: what + ": cold dispatches (each tenant once, round robin, 64 clients)", figure: fmt.Sprintf("%s/s, p50 %s, p99 %s", thousands(cps), dur(c50*1000), dur(c99*1000)), floor: "—", ratio: "—", goal: "—", status: "info"},
			row{what: what + ": cache hits (10,000 tenants)", figure: fmt.Sprintf("p50 %s, p99 %s", dur(h50*1000), dur(h99*1000)), floor: "—", ratio: "—", goal: "—", status: "info"},
			row{what: what + ": workers' start to ready over that store", figure: fmt.Sprintf("%.0f ms (store seeded in %.1f s)", start, seed), floor: "—", ratio: "—", goal: "—", status: "info"},
		)
		if heap, ok := r.get(b, "heap-KiB/cached-vm"); ok {
			rss, _ := r.get(b, "rss-KiB/cached-vm")
			peak, _ := r.get(b, "peak-worker-heap-MiB")
			r.rows = append(r.rows, row{what: what + ": per cached VM at the end, Go heap / RSS (peak worker heap)",
				figure: fmt.Sprintf("%.1f KiB / %.1f KiB (%.0f MiB)", heap, rss, peak), floor: "—", ratio: "—", goal: "—", status: "info"})
		}
	}
	for _, st := range []string{"sqlite", "postgres"} {
		b := "BenchmarkStartManyTenants/" + st
		n, ok := r.get(b, "tenants")
		if !ok {
			r.rows = append(r.rows, row{what: "worker start over many tenants, " + st, figure: "not run", floor: "—", ratio: "—", goal: "—", status: "info"})
			continue
		}
		ready, _ := r.get(b, "start-to-ready-ms")
		first, _ := r.get(b, "start-to-first-dispatch-ms")
		seed, _ := r.get(b, "seed-s")
		r.rows = append(r.rows, row{what: fmt.Sprintf("%s tenants in the store (%d for OnStartup), %s: 2 process workers' start to ready / to each one's first (cold) dispatch", thousands(n), 100, st),
			figure: fmt.Sprintf("%.0f ms / %.0f ms (store seeded in %.1f s)", ready, first, seed), floor: "—", ratio: "—", goal: "—", status: "info"})
	}
}

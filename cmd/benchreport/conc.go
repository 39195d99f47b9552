package main

import "fmt"

// The rows of issue 19: no head-of-line blocking.

var tNeighbour = &target{
	name: "neighbour beside a spinning tenant ≤ 2× its idle latency + 1 ms (p50 and p99, both topologies)", pkg: "./master",
	profile: "BenchmarkNeighbour/process/beside-spinner",
	why: "A worker runs calls of different tenants at once (--worker-concurrency, 4 by default), a tenant's one at a " +
		"time: the spinning tenant holds one slot and the neighbour's call takes another. What remains is the two " +
		"sharing 2 vCPUs with the benchmark's own goroutines. The concurrency-1 rows are the serial worker of before, " +
		"where the neighbour waits for the spinning call (20 ms each) to end. In the process topology the neighbour's " +
		"tail was the kernel's scheduler slice (1.4 ms on 2 CPUs under Linux's EEVDF): a worker thread woken to serve " +
		"it on the CPU of the spinning thread waited for the spinner's slice to end. Process workers now ask for " +
		"100µs (--worker-sched-slice); the kernel-slice row is the worker of before.",
}

// concurrencyRows adds the rows of BenchmarkNeighbour and BenchmarkKVHeavy.
func (r *report) concurrencyRows() {
	for _, topo := range []string{"thread", "process"} {
		base := "BenchmarkNeighbour/" + topo + "/"
		i50, ok50 := r.get(base+"idle", "p50-µs")
		i99, ok99 := r.get(base+"idle", "p99-µs")
		r.rows = append(r.rows, row{what: "neighbour's dispatch on an idle worker, " + topo + " topology", figure: pct(i50, ok50, i99, ok99),
			floor: "—", ratio: "—", goal: "—", status: "floor"})
		for _, c := range []struct{ name, what string }{
			{"beside-spinner", "beside a tenant spinning 20 ms calls back to back, " + topo + " topology"},
			{"beside-spinner-concurrency-1", "beside the same spinner, --worker-concurrency 1 (before), " + topo + " topology"},
			{"beside-spinner-kernel-slice", "beside the same spinner, the kernel's scheduler slice (--worker-sched-slice 0, before), " + topo + " topology"},
		} {
			if c.name == "beside-spinner-kernel-slice" && topo != "process" {
				continue
			}
			s50, okS50 := r.get(base+c.name, "p50-µs")
			s99, okS99 := r.get(base+c.name, "p99-µs")
			rw := row{what: "neighbour's dispatch " + c.what, figure: pct(s50, okS50, s99, okS99), floor: pct(i50, ok50, i99, ok99), ratio: "n/a", goal: "—", status: "info"}
			if okS50 && okS99 && ok50 && ok99 && i50 > 0 && i99 > 0 {
				rw.ratio = fmt.Sprintf("%.1f× / %.1f×", s50/i50, s99/i99)
			}
			if c.name == "beside-spinner" {
				rw.goal = "≤ 2× + 1 ms"
				measured := okS50 && okS99 && ok50 && ok99
				r.judge(&rw, tNeighbour, measured, s50 <= 2*i50+1000 && s99 <= 2*i99+1000)
			}
			r.rows = append(r.rows, rw)
		}
	}
	for _, kind := range []string{"sqlite", "postgres"} {
		base := "BenchmarkKVHeavy/" + kind + "/concurrency-"
		before, okB := r.get(base+"1", "events/s")
		after, okA := r.get(base+"4", "events/s")
		what := "KV-heavy template (5 gets + 1 set per event), 64 tenants, 2 process workers, " + kind
		if !okB && !okA {
			r.rows = append(r.rows, row{what: what, figure: "not run", floor: "—", ratio: "—", goal: "—", status: "info"})
			continue
		}
		rw := row{what: what + ", --worker-concurrency 4 against 1 (before)", figure: eps(after, okA), floor: eps(before, okB), ratio: "n/a", goal: "—", status: "info"}
		if okA && okB && before > 0 {
			rw.ratio = fmt.Sprintf("%.2f×", after/before)
		}
		r.rows = append(r.rows, rw)
	}
}

// pct formats a p50 and a p99 in µs.
func pct(p50 float64, ok50 bool, p99 float64, ok99 bool) string {
	if !ok50 || !ok99 {
		return "n/a"
	}
	return "p50 " + dur(p50*1000) + ", p99 " + dur(p99*1000)
}

// eps formats a rate of events.
func eps(v float64, ok bool) string {
	if !ok {
		return "n/a"
	}
	return thousands(v) + " events/s"
}

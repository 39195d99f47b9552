package main

import (
	"fmt"
	"runtime"
	"strings"
)

func numCPU() int { return runtime.NumCPU() }

// target is a goal of issue 9 and where to look when it is missed.
type target struct {
	name     string
	met      bool
	measured bool
	pkg      string // package of the benchmark to profile
	profile  string // benchmark to profile when missed
	why      string // what the profile said when the report was designed
	facts    string // the figures of this run that bear on it
	top      string // the profile of this run
}

// row is one line of the table.
type row struct {
	what, figure, floor, ratio, goal, status string
}

// report turns results into rows and targets.
type report struct {
	res     map[string]result
	rows    []row
	targets []*target
}

func newReport(res map[string]result) *report {
	r := &report{res: res}
	r.build()
	return r
}

func (r *report) get(bench, unit string) (float64, bool) {
	if res, ok := r.res[bench]; ok {
		return res.median(unit)
	}
	return 0, false
}

// ratioRow adds figure/floor (ns/op of both) with an optional target
// (limit > 0: ratio ≤ limit).
func (r *report) ratioRow(what, bench, floorName string, floorNs float64, floorOK bool, limit float64, t *target) {
	ns, ok := r.get(bench, "ns/op")
	rw := row{what: what, figure: "n/a", floor: "n/a", ratio: "n/a", goal: "—", status: "info"}
	if ok {
		rw.figure = dur(ns)
	}
	if floorOK {
		rw.floor = dur(floorNs) + " (" + floorName + ")"
	}
	if ok && floorOK {
		rw.ratio = fmt.Sprintf("%.2f×", ns/floorNs)
	}
	if limit > 0 {
		rw.goal = fmt.Sprintf("≤ %.1f×", limit)
		r.judge(&rw, t, ok && floorOK, ns/floorNs <= limit)
	}
	r.rows = append(r.rows, rw)
}

// judge sets the status of rw from a target's outcome.
func (r *report) judge(rw *row, t *target, measured, met bool) {
	t.measured, t.met = measured, measured && met
	switch {
	case !measured:
		rw.status = "not measured"
	case met:
		rw.status = "**met**"
	default:
		rw.status = "**missed**"
	}
	r.targets = append(r.targets, t)
}

func (r *report) build() {
	raw, rawOK := r.get("BenchmarkRawLuaCall", "ns/op")
	ch, chOK := r.get("BenchmarkChanRoundTrip", "ns/op")
	ws, wsOK := r.get("BenchmarkWSEcho", "ns/op")
	chl, chlOK := r.get("BenchmarkChanRoundTripLocked", "ns/op")
	wsp, wspOK := r.get("BenchmarkWSEchoProcess/unix", "ns/op")
	wspt, wsptOK := r.get("BenchmarkWSEchoProcess/tcp", "ns/op")

	// Lua floor.
	r.rows = append(r.rows, row{what: "raw Lua call (100-iteration loop, bare go-lua State)", figure: durOK(raw, rawOK), floor: "—", ratio: "—", goal: "—", status: "floor"})
	r.ratioRow("thread dispatch, sequential", "BenchmarkDispatchThread/sequential", "raw Lua call", raw, rawOK, 1.3, tThread)
	r.ratioRow("thread dispatch, sequential, against the locked-thread floor", "BenchmarkDispatchThread/sequential", "locked channel round trip + raw Lua call", chl+raw, chlOK && rawOK, 0, nil)
	r.ratioRow("thread dispatch, sequential, worker goroutines not locked to OS threads (not the contract)", "BenchmarkDispatchThreadUnlocked", "raw Lua call", raw, rawOK, 0, nil)
	r.ratioRow("thread dispatch, 64 callers (per call, wall)", "BenchmarkDispatchThread/parallel64", "raw Lua call", raw, rawOK, 0, nil)
	r.ratioRow("process dispatch, sequential", "BenchmarkDispatchProcess/sequential", "WS echo + raw Lua call", ws+raw, wsOK && rawOK, 1.5, tProcess)
	r.ratioRow("process dispatch, sequential, against the cross-process floor", "BenchmarkDispatchProcess/sequential", "cross-process WS echo (Unix socket) + raw Lua call", wsp+raw, wspOK && rawOK, 0, nil)
	r.ratioRow("process dispatch, 64 callers (per call, wall)", "BenchmarkDispatchProcess/parallel64", "WS echo + raw Lua call", ws+raw, wsOK && rawOK, 0, nil)

	th, thOK := r.get("BenchmarkDispatchThread/sequential", "ns/op")
	un, unOK := r.get("BenchmarkDispatchThreadUnlocked", "ns/op")
	if thOK && chlOK && rawOK && unOK {
		tThread.facts = fmt.Sprintf("In this run: the locked round trip alone %s = %.1f× the raw call (%s); thread dispatch %s = %.2f× "+
			"(locked round trip + raw call); with unlocked worker goroutines %s = %.2f× the raw call.",
			dur(chl), chl/raw, dur(raw), dur(th), th/(chl+raw), dur(un), un/raw)
		if chl > 1.3*raw {
			tThread.facts += fmt.Sprintf(" The floor alone is above the target (%s > 1.3 × %s = %s): no implementation of the "+
				"contract can meet it on this machine.", dur(chl), dur(raw), dur(1.3*raw))
		}
	}
	pd, pdOK := r.get("BenchmarkDispatchProcess/sequential", "ns/op")
	if pdOK && wsOK && wspOK && wsptOK && rawOK {
		tProcess.facts = fmt.Sprintf("In this run: WebSocket echo in one process %s; across processes %s over a Unix socket (%.1f×) and %s "+
			"over TCP loopback (%.1f×); process dispatch %s = %.2f× (cross-process echo over a Unix socket + raw call).",
			dur(ws), dur(wsp), wsp/ws, dur(wspt), wspt/ws, dur(pd), pd/(wsp+raw))
		if wsp > 1.5*(ws+raw) {
			tProcess.facts += fmt.Sprintf(" Crossing processes alone is above the target (%s > 1.5 × (%s + %s) = %s): no "+
				"process topology can meet it on this machine.", dur(wsp), dur(ws), dur(raw), dur(1.5*(ws+raw)))
		}
	}

	// Transport floors.
	r.rows = append(r.rows, row{what: "Go channel request + reply", figure: durOK(ch, chOK), floor: "—", ratio: "—", goal: "—", status: "floor"})
	r.rows = append(r.rows, row{what: "Go channel request + reply, serving goroutine locked to its OS thread", figure: durOK(chl, chlOK), floor: "—", ratio: "—", goal: "—", status: "floor"})
	r.rows = append(r.rows, row{what: "WebSocket loopback echo (~200-byte frame)", figure: durOK(ws, wsOK), floor: "—", ratio: "—", goal: "—", status: "floor"})
	r.rows = append(r.rows, row{what: "WebSocket echo, echo server in another process, Unix socket (Mesophyll's default)", figure: durOK(wsp, wspOK), floor: "—", ratio: "—", goal: "—", status: "floor"})
	r.rows = append(r.rows, row{what: "WebSocket echo, echo server in another process, TCP loopback", figure: durOK(wspt, wsptOK), floor: "—", ratio: "—", goal: "—", status: "floor"})
	r.ratioRow("thread dispatch of `return nil`, sequential", "BenchmarkDispatchThreadEmpty/sequential", "channel round trip", ch, chOK, 0, nil)
	r.ratioRow("Mesophyll Conn.DispatchEvent, in-process worker", "BenchmarkMesophyllDispatch", "WS echo", ws, wsOK, 0, nil)
	r.ratioRow("thread dispatch of `return nil`, sequential, against the locked floor", "BenchmarkDispatchThreadEmpty/sequential", "locked channel round trip", chl, chlOK, 0, nil)
	r.ratioRow("process dispatch of `return nil`, sequential", "BenchmarkDispatchProcessEmpty/sequential", "WS echo", ws, wsOK, 0, nil)
	r.ratioRow("process dispatch of `return nil`, sequential, against the cross-process floor", "BenchmarkDispatchProcessEmpty/sequential", "cross-process WS echo (Unix socket)", wsp, wspOK, 0, nil)
	r.ratioRow("process dispatch of `return nil`, 64 callers", "BenchmarkDispatchProcessEmpty/parallel64", "WS echo", ws, wsOK, 0, nil)

	// Mesophyll codec.
	for _, c := range []struct{ what, fast, slow string }{
		{"encode a DispatchEvent frame, by hand", "encode-event/hand", "encode-event/json"},
		{"decode a DispatchEvent frame, fast path", "decode-event/fast", "decode-event/json"},
		{"decode a DispatchResponse frame, fast path", "decode-response/fast", "decode-response/json"},
	} {
		slow, ok := r.get("BenchmarkCodec/"+c.slow, "ns/op")
		r.ratioRow(c.what, "BenchmarkCodec/"+c.fast, "encoding/json", slow, ok, 0, nil)
	}

	// HTTP.
	c, cOK := r.get("BenchmarkHTTPConst", "req/s")
	r.rows = append(r.rows, row{what: "net/http constant JSON reply, 64 keep-alive clients", figure: rps(c, cOK), floor: "—", ratio: "—", goal: "—", status: "floor"})
	for _, topo := range []string{"process", "thread"} {
		v, ok := r.get("BenchmarkHTTPDispatch/"+topo, "req/s")
		rw := row{what: "POST …/events, " + topo + " topology, 2 workers, 64 clients", figure: rps(v, ok), floor: rps(c, cOK), ratio: "n/a", goal: "—", status: "info"}
		if ok && cOK {
			rw.ratio = fmt.Sprintf("%.0f%%", 100*v/c)
		}
		if topo == "process" {
			rw.goal = "≥ 50%"
			r.judge(&rw, tHTTP, ok && cOK, v >= c/2)
		}
		r.rows = append(r.rows, rw)
	}

	// Recovery.
	p50, ok50 := r.get("BenchmarkRecovery", "p50-ms")
	p90, ok90 := r.get("BenchmarkRecovery", "p90-ms")
	pmax, okMax := r.get("BenchmarkRecovery", "max-ms")
	rw := row{what: "recovery: kill -9 → first dispatch served, p50 of 20 kills", figure: ms(p50, ok50), floor: "—", ratio: "—", goal: "≤ 150 ms"}
	r.judge(&rw, tRecovery, ok50, p50 <= 150)
	extra, okExtra := r.get("BenchmarkRecovery", "extra-restarts")
	extraText := "n/a"
	if okExtra {
		extraText = fmt.Sprintf("%.0f", extra)
	}
	r.rows = append(r.rows, rw,
		row{what: "recovery p90 / max", figure: ms(p90, ok90) + " / " + ms(pmax, okMax), floor: "—", ratio: "—", goal: "—", status: "info"},
		row{what: "recovery: restarts beyond one per kill (20 kills)", figure: extraText, floor: "—", ratio: "—", goal: "0", status: "info (see below)"})

	// VM costs.
	heap, okHeap := r.get("BenchmarkIdleTenantHeap", "bytes/tenant")
	rw = row{what: "heap per idle loaded tenant (10,000 tenants)", figure: bytesOK(heap, okHeap), floor: "—", ratio: "—", goal: "≤ 64 KiB"}
	r.judge(&rw, tIdle, okHeap, heap <= 64<<10)
	r.rows = append(r.rows, rw)
	vm, okVM := r.get("BenchmarkNewVM", "ns/op")
	vmB, okB := r.get("BenchmarkNewVM", "B/op")
	rw = row{what: "create a tenant VM, all libraries, 3 templates compiled", figure: durOK(vm, okVM) + ", " + bytesOK(vmB, okB) + " allocated", floor: "—", ratio: "—", goal: "≤ 100 µs"}
	r.judge(&rw, tNewVM, okVM, vm <= 100_000)
	r.rows = append(r.rows, rw)
	for _, part := range []string{"hook", "limits", "template"} {
		bare, okBare := r.get("BenchmarkVMCall/bare", "ns/op")
		r.ratioRow("loop chunk: "+vmCallPart[part], "BenchmarkVMCall/"+part, "bare State", bare, okBare, 0, nil)
	}

	// Store.
	for _, kind := range []string{"SQLite", "Postgres"} {
		for _, op := range []string{"Get", "Set"} {
			ns, ok := r.get("BenchmarkKV"+op+kind, "ns/op")
			fig := "skipped (no TEMPLATEWORKER_TEST_DATABASE_URL)"
			if ok {
				fig = fmt.Sprintf("%s/s (%s per call)", thousands(1e9/ns), dur(ns))
			}
			r.rows = append(r.rows, row{what: "KV " + strings.ToLower(op) + ", " + kind, figure: fig, floor: "—", ratio: "—", goal: "—", status: "info"})
		}
	}
}

var vmCallPart = map[string]string{
	"hook":     "with the count hook",
	"limits":   "with the limits patch's accounting",
	"template": "as a template (event table, pcall, JSON result)",
}

// missed returns the targets missed in this run.
func (r *report) missed() []*target {
	var out []*target
	for _, t := range r.targets {
		if t.measured && !t.met {
			out = append(out, t)
		}
	}
	return out
}

func (r *report) markdown(m machineInfo) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Benchmarks\n\nWritten by `make bench` (`go run ./cmd/benchreport`); do not edit by hand.\n\n")
	fmt.Fprintf(&b, "- machine: %s, %d cores\n- Go: %s\n- commit: %s\n", m.cpu, m.cores, m.goVersion, m.commit)
	fmt.Fprintf(&b, "- method: each benchmark run %d times (each package's test binary run once per round); figures are medians; ratios compare figures of the same run\n- suite time: %s\n\n", m.rounds, m.took)
	b.WriteString("| what | figure | floor | ratio | target | status |\n|---|---|---|---|---|---|\n")
	for _, rw := range r.rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", rw.what, rw.figure, rw.floor, rw.ratio, rw.goal, rw.status)
	}
	b.WriteString(notes)
	missed := r.missed()
	if len(missed) == 0 {
		b.WriteString("\n## Missed targets\n\nNone in this run.\n")
		return b.String()
	}
	b.WriteString("\n## Missed targets\n")
	for _, t := range missed {
		fmt.Fprintf(&b, "\n### %s\n\n%s\n", t.name, t.why)
		if t.facts != "" {
			fmt.Fprintf(&b, "\n%s\n", t.facts)
		}
		fmt.Fprintf(&b, "\nCPU profile of `%s` in this run (`go tool pprof -top`, flat):\n\n```\n%s\n```\n", t.profile, t.top)
	}
	return b.String()
}

func dur(ns float64) string {
	switch {
	case ns >= 1e6:
		return fmt.Sprintf("%.2f ms", ns/1e6)
	case ns >= 1e3:
		return fmt.Sprintf("%.2f µs", ns/1e3)
	}
	return fmt.Sprintf("%.0f ns", ns)
}

func durOK(ns float64, ok bool) string {
	if !ok {
		return "n/a"
	}
	return dur(ns)
}

func ms(v float64, ok bool) string {
	if !ok {
		return "n/a"
	}
	return fmt.Sprintf("%.1f ms", v)
}

func rps(v float64, ok bool) string {
	if !ok {
		return "n/a"
	}
	return thousands(v) + " req/s"
}

func bytesOK(v float64, ok bool) string {
	if !ok {
		return "n/a"
	}
	return fmt.Sprintf("%.1f KiB", v/1024)
}

// thousands formats v rounded, with thin separators: 12 345.
func thousands(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

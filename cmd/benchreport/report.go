package main

import (
	"fmt"
	"math"
	"runtime"
	"slices"
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

// get returns the median over the rounds of bench's figure in unit.
func (r *report) get(bench, unit string) (float64, bool) { return r.series(bench, unit).median() }

// series returns bench's figures in unit, one per round.
func (r *report) series(bench, unit string) series { return series(r.res[bench][unit]) }

// series is one figure per round, NaN for a round without it.
type series []float64

func (s series) at(i int) float64 {
	if i < len(s) {
		return s[i]
	}
	return math.NaN()
}

// values returns the rounds' figures that were measured, sorted.
func (s series) values() []float64 {
	var v []float64
	for _, x := range s {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	slices.Sort(v)
	return v
}

// median is the median of the measured rounds, and whether there was one.
func (s series) median() (float64, bool) {
	v := s.values()
	switch {
	case len(v) == 0:
		return 0, false
	case len(v)%2 == 1:
		return v[len(v)/2], true
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2, true
}

// max is the largest measured round, and whether there was one.
func (s series) max() (float64, bool) {
	v := s.values()
	if len(v) == 0 {
		return 0, false
	}
	return v[len(v)-1], true
}

// with combines s and o round by round; a round missing from either is
// missing from the result.
func (s series) with(o series, f func(a, b float64) float64) series {
	out := make(series, max(len(s), len(o)))
	for i := range out {
		a, b := s.at(i), o.at(i)
		if math.IsNaN(a) || math.IsNaN(b) {
			out[i] = math.NaN()
			continue
		}
		out[i] = f(a, b)
	}
	return out
}

// plus is the round-by-round sum, for a floor made of two figures.
func (s series) plus(o series) series { return s.with(o, func(a, b float64) float64 { return a + b }) }

// over is the round-by-round ratio s/o.
func (s series) over(o series) series { return s.with(o, func(a, b float64) float64 { return a / b }) }

// ratioRow adds figure/floor (ns/op of both) with an optional target
// (limit > 0: ratio ≤ limit). The ratio is the median of the per-round
// ratios, each of a figure and its floor measured in the same round.
func (r *report) ratioRow(what, bench, floorName string, floor series, limit float64, t *target) {
	fig := r.series(bench, "ns/op")
	ns, ok := fig.median()
	floorNs, floorOK := floor.median()
	ratio, ratioOK := fig.over(floor).median()
	rw := row{what: what, figure: "n/a", floor: "n/a", ratio: "n/a", goal: "—", status: "info"}
	if ok {
		rw.figure = dur(ns)
	}
	if floorOK {
		rw.floor = dur(floorNs) + " (" + floorName + ")"
	}
	if ratioOK {
		rw.ratio = fmt.Sprintf("%.2f×", ratio)
	}
	if limit > 0 {
		rw.goal = fmt.Sprintf("≤ %.1f×", limit)
		r.judge(&rw, t, ratioOK, ratio <= limit)
	}
	r.rows = append(r.rows, rw)
}

// callers describes the callers of a parallel benchmark, which reports
// how many it ran (they scale with GOMAXPROCS).
func (r *report) callers(bench string) string {
	if n, ok := r.get(bench, "callers"); ok {
		return fmt.Sprintf("%.0f callers", n)
	}
	return "parallel callers"
}

// judge sets the status of rw from a target's outcome. A target judged on
// several rows (both topologies, say) is met only if every one of them is,
// and is listed once among the missed.
func (r *report) judge(rw *row, t *target, measured, met bool) {
	if slices.Contains(r.targets, t) {
		t.met = t.met && measured && met
		t.measured = t.measured || measured
	} else {
		t.measured, t.met = measured, measured && met
		r.targets = append(r.targets, t)
	}
	switch {
	case !measured:
		rw.status = "not measured"
	case met:
		rw.status = "**met**"
	default:
		rw.status = "**missed**"
	}
}

func (r *report) build() {
	raw, rawOK := r.get("BenchmarkRawLuaCall", "ns/op")
	ch, chOK := r.get("BenchmarkChanRoundTrip", "ns/op")
	ws, wsOK := r.get("BenchmarkWSEcho", "ns/op")
	chl, chlOK := r.get("BenchmarkChanRoundTripLocked", "ns/op")
	wsp, wspOK := r.get("BenchmarkWSEchoProcess/unix", "ns/op")
	wspt, wsptOK := r.get("BenchmarkWSEchoProcess/tcp", "ns/op")
	rawS := r.series("BenchmarkRawLuaCall", "ns/op")
	chS := r.series("BenchmarkChanRoundTrip", "ns/op")
	wsS := r.series("BenchmarkWSEcho", "ns/op")
	chlS := r.series("BenchmarkChanRoundTripLocked", "ns/op")
	wspS := r.series("BenchmarkWSEchoProcess/unix", "ns/op")
	wsptS := r.series("BenchmarkWSEchoProcess/tcp", "ns/op")

	// Lua floor.
	r.rows = append(r.rows, row{what: "raw Lua call (100-iteration loop, bare go-lua State)", figure: durOK(raw, rawOK), floor: "—", ratio: "—", goal: "—", status: "floor"})
	r.ratioRow("thread dispatch, sequential", "BenchmarkDispatchThread/sequential", "raw Lua call", rawS, 1.3, tThread)
	r.ratioRow("thread dispatch, sequential, against the locked-thread floor", "BenchmarkDispatchThread/sequential", "locked channel round trip + raw Lua call", chlS.plus(rawS), 0, nil)
	r.ratioRow("thread dispatch, sequential, worker goroutines not locked to OS threads (not the contract)", "BenchmarkDispatchThreadUnlocked", "raw Lua call", rawS, 0, nil)
	r.ratioRow("thread dispatch, "+r.callers("BenchmarkDispatchThread/parallel64")+" (per call, wall)", "BenchmarkDispatchThread/parallel64", "raw Lua call", rawS, 0, nil)
	r.ratioRow("process dispatch, sequential", "BenchmarkDispatchProcess/sequential", "WS echo + raw Lua call", wsS.plus(rawS), 1.5, tProcess)
	r.ratioRow("process dispatch, sequential, against the cross-process floor", "BenchmarkDispatchProcess/sequential", "cross-process WS echo (Unix socket) + raw Lua call", wspS.plus(rawS), 1.2, tProcessCross)
	r.ratioRow("process dispatch, "+r.callers("BenchmarkDispatchProcess/parallel64")+" (per call, wall)", "BenchmarkDispatchProcess/parallel64", "WS echo + raw Lua call", wsS.plus(rawS), 0, nil)

	thS := r.series("BenchmarkDispatchThread/sequential", "ns/op")
	unS := r.series("BenchmarkDispatchThreadUnlocked", "ns/op")
	th, thOK := thS.median()
	un, unOK := unS.median()
	if thOK && chlOK && rawOK && unOK {
		chlRatio, _ := chlS.over(rawS).median()
		thRatio, _ := thS.over(chlS.plus(rawS)).median()
		unRatio, _ := unS.over(rawS).median()
		tThread.facts = fmt.Sprintf("In this run: the locked round trip alone %s = %.1f× the raw call (%s); thread dispatch %s = %.2f× "+
			"(locked round trip + raw call); with unlocked worker goroutines %s = %.2f× the raw call.",
			dur(chl), chlRatio, dur(raw), dur(th), thRatio, dur(un), unRatio)
		// The locked round trip is the floor of the contract of before
		// (worker goroutines locked to their threads); the dispatch now
		// runs on the caller's goroutine, so what it adds is the worker's
		// own per-call work, which the worker's rows split up.
		bare, okB := r.get("BenchmarkVMCall/bare", "ns/op")
		tpl, okT := r.get("BenchmarkVMCall/template", "ns/op")
		inl, okI := r.get("BenchmarkTryDispatchEvent/loop", "ns/op")
		if okB && okT && okI && bare > 0 {
			tThread.facts += fmt.Sprintf(" What the dispatch adds to the raw call, from the worker's own rows: the chunk called "+
				"as a template (event table, protected call, JSON result) %s against %s on a bare State, the worker's inline "+
				"dispatch %s.", dur(tpl), dur(bare), dur(inl))
			if tpl > 1.3*raw {
				tThread.facts += fmt.Sprintf(" The target allows %s in all: less than the template call alone.", dur(1.3*raw))
			}
		}
	}
	if self, ok := r.get("BenchmarkDispatchProcess/sequential", "wakeups/op"); ok {
		worker, _ := r.get("BenchmarkDispatchProcess/sequential", "worker-wakeups/op")
		echoSelf, _ := r.get("BenchmarkWSEchoProcess/unix", "wakeups/op")
		echoPeer, _ := r.get("BenchmarkWSEchoProcess/unix", "worker-wakeups/op")
		tProcessCross.facts = fmt.Sprintf("In this run a sequential process dispatch costs %.2f thread wake-ups in the master and %.2f in "+
			"the worker per call; the cross-process echo %.2f and %.2f.", self, worker, echoSelf, echoPeer)
	}
	pdS := r.series("BenchmarkDispatchProcess/sequential", "ns/op")
	pd, pdOK := pdS.median()
	if pdOK && wsOK && wspOK && wsptOK && rawOK {
		wspRatio, _ := wspS.over(wsS).median()
		wsptRatio, _ := wsptS.over(wsS).median()
		pdRatio, _ := pdS.over(wspS.plus(rawS)).median()
		floorRatio, _ := wspS.over(wsS.plus(rawS)).median()
		tProcess.facts = fmt.Sprintf("In this run: WebSocket echo in one process %s; across processes %s over a Unix socket (%.1f×) and %s "+
			"over TCP loopback (%.1f×); process dispatch %s = %.2f× (cross-process echo over a Unix socket + raw call).",
			dur(ws), dur(wsp), wspRatio, dur(wspt), wsptRatio, dur(pd), pdRatio)
		if floorRatio > 1.5 {
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
	r.ratioRow("thread dispatch of `return nil`, sequential", "BenchmarkDispatchThreadEmpty/sequential", "channel round trip", chS, 0, nil)
	r.ratioRow("Mesophyll Conn.DispatchEvent, in-process worker", "BenchmarkMesophyllDispatch", "WS echo", wsS, 0, nil)
	r.ratioRow("thread dispatch of `return nil`, sequential, against the locked floor", "BenchmarkDispatchThreadEmpty/sequential", "locked channel round trip", chlS, 0, nil)
	r.ratioRow("process dispatch of `return nil`, sequential", "BenchmarkDispatchProcessEmpty/sequential", "WS echo", wsS, 0, nil)
	r.ratioRow("process dispatch of `return nil`, sequential, against the cross-process floor", "BenchmarkDispatchProcessEmpty/sequential", "cross-process WS echo (Unix socket)", wspS, 0, nil)
	r.ratioRow("process dispatch of `return nil`, "+r.callers("BenchmarkDispatchProcessEmpty/parallel64"), "BenchmarkDispatchProcessEmpty/parallel64", "WS echo", wsS, 0, nil)

	// Wake-ups per call, both sides: what a ratio that moves between hosts
	// is made of.
	r.wakeRow("process dispatch of `return nil`, sequential", "BenchmarkDispatchProcessEmpty/sequential", "BenchmarkWSEchoProcess/unix")
	r.wakeRow("process dispatch, sequential", "BenchmarkDispatchProcess/sequential", "BenchmarkWSEchoProcess/unix")
	r.cpuRow("process dispatch of `return nil`, sequential", "BenchmarkDispatchProcessEmpty/sequential", "BenchmarkWSEchoProcess/unix")
	r.cpuRow("process dispatch, sequential", "BenchmarkDispatchProcess/sequential", "BenchmarkWSEchoProcess/unix")
	r.wakeRow("thread dispatch, sequential", "BenchmarkDispatchThread/sequential", "BenchmarkChanRoundTripLocked")
	r.wakeRow("thread dispatch of `return nil`, sequential", "BenchmarkDispatchThreadEmpty/sequential", "BenchmarkChanRoundTripLocked")

	// Mesophyll codec.
	for _, c := range []struct{ what, fast, slow string }{
		{"encode a DispatchEvent frame, by hand", "encode-event/hand", "encode-event/json"},
		{"decode a DispatchEvent frame, fast path", "decode-event/fast", "decode-event/json"},
		{"decode a DispatchResponse frame, fast path", "decode-response/fast", "decode-response/json"},
	} {
		r.ratioRow(c.what, "BenchmarkCodec/"+c.fast, "encoding/json", r.series("BenchmarkCodec/"+c.slow, "ns/op"), 0, nil)
	}

	// HTTP.
	cS := r.series("BenchmarkHTTPConst", "req/s")
	c, cOK := cS.median()
	r.rows = append(r.rows, row{what: "net/http constant JSON reply, 64 keep-alive clients", figure: rps(c, cOK), floor: "—", ratio: "—", goal: "—", status: "floor"})
	for _, topo := range []string{"process", "thread"} {
		vS := r.series("BenchmarkHTTPDispatch/"+topo, "req/s")
		v, ok := vS.median()
		share, shareOK := vS.over(cS).median()
		rw := row{what: "POST …/events, " + topo + " topology, 2 workers, 64 clients", figure: rps(v, ok), floor: rps(c, cOK), ratio: "n/a", goal: "—", status: "info"}
		if shareOK {
			rw.ratio = fmt.Sprintf("%.0f%%", 100*share)
		}
		if topo == "process" {
			rw.goal = "≥ 50%"
			r.judge(&rw, tHTTP, shareOK, share >= 0.5)
		}
		r.rows = append(r.rows, rw)
	}

	r.eventRows()
	// Concurrency within a worker.
	r.concurrencyRows()

	// Recovery.
	r.recoveryRows("BenchmarkRecovery", "", tRecovery, tRestarts)
	r.recoveryRows("BenchmarkRecoveryDefaultMinUptime", ", default --min-uptime (each worker killed after running 10 s)", tRecoveryDefault, tRestartsDefault)

	// VM costs.
	heap, okHeap := r.get("BenchmarkIdleTenantHeap", "bytes/tenant")
	rw := row{what: "heap per idle loaded tenant (10,000 tenants)", figure: bytesOK(heap, okHeap), floor: "—", ratio: "—", goal: "≤ 64 KiB"}
	r.judge(&rw, tIdle, okHeap, heap <= 64<<10)
	r.rows = append(r.rows, rw)
	vm, okVM := r.get("BenchmarkNewVM", "ns/op")
	vmB, okB := r.get("BenchmarkNewVM", "B/op")
	rw = row{what: "create a tenant VM, all libraries, 3 templates compiled", figure: durOK(vm, okVM) + ", " + bytesOK(vmB, okB) + " allocated", floor: "—", ratio: "—", goal: "≤ 100 µs"}
	r.judge(&rw, tNewVM, okVM, vm <= 100_000)
	r.rows = append(r.rows, rw)
	if sh, ok := r.get("BenchmarkNewVMSharedTemplates", "ns/op"); ok {
		shB, okShB := r.get("BenchmarkNewVMSharedTemplates", "B/op")
		r.rows = append(r.rows, row{what: "create a tenant VM, all libraries, its 3 templates already compiled in the process (shared chunks)",
			figure: dur(sh) + ", " + bytesOK(shB, okShB) + " allocated", floor: "—", ratio: "—", goal: "—", status: "info"})
	}
	for _, part := range []string{"hook", "limits", "template"} {
		r.ratioRow("loop chunk: "+vmCallPart[part], "BenchmarkVMCall/"+part, "bare State", r.series("BenchmarkVMCall/bare", "ns/op"), 0, nil)
	}
	// The worker's own part of a process dispatch, without the connection.
	r.ratioRow("loop chunk: the worker's inline dispatch (Thread.TryDispatchEvent, no connection)", "BenchmarkTryDispatchEvent/loop", "bare State", r.series("BenchmarkVMCall/bare", "ns/op"), 0, nil)
	ie, okIE := r.get("BenchmarkTryDispatchEvent/empty", "ns/op")
	r.rows = append(r.rows, row{what: "`return nil`: the worker's inline dispatch (Thread.TryDispatchEvent, no connection)", figure: durOK(ie, okIE), floor: "—", ratio: "—", goal: "—", status: "info"})

	// Tenant scale.
	r.scaleRows()

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

// wakeRow adds the thread wake-ups one call of bench costs (this process
// + the worker process, when there is one) beside its floor's.
func (r *report) wakeRow(what, bench, floor string) {
	text := func(b string) (string, bool) {
		self, ok := r.get(b, "wakeups/op")
		if !ok {
			return "n/a", false
		}
		if other, ok := r.get(b, "worker-wakeups/op"); ok {
			return fmt.Sprintf("%.2f + %.2f", self, other), true
		}
		return fmt.Sprintf("%.2f", self), true
	}
	fig, _ := text(bench)
	fl, ok := text(floor)
	if ok {
		fl += " (" + strings.TrimPrefix(floor, "Benchmark") + ")"
	}
	r.rows = append(r.rows, row{what: "wake-ups per call: " + what, figure: fig, floor: fl, ratio: "—", goal: "—", status: "info"})
}

// cpuRow adds the CPU time one call of bench costs (this process + the
// worker process) beside its floor's: unlike the call's wall time, other
// load on the host hardly moves it, so it shows which side a figure's
// excess over its floor is spent on.
func (r *report) cpuRow(what, bench, floor string) {
	text := func(b string) (string, bool) {
		self, ok := r.get(b, "cpu-us/op")
		other, ok2 := r.get(b, "worker-cpu-us/op")
		if !ok || !ok2 {
			return "n/a", false
		}
		return fmt.Sprintf("%.1f + %.1f µs", self, other), true
	}
	fig, _ := text(bench)
	fl, ok := text(floor)
	if ok {
		fl += " (" + strings.TrimPrefix(floor, "Benchmark") + ")"
	}
	r.rows = append(r.rows, row{what: "CPU per call: " + what, figure: fig, floor: fl, ratio: "—", goal: "—", status: "info"})
}

// recoveryRows adds the rows of one recovery benchmark: p50 against its
// target, p90 / max, and the restarts beyond one per kill, whose goal is 0
// in every round.
func (r *report) recoveryRows(bench, variant string, p50Target, restartsTarget *target) {
	p50, ok50 := r.get(bench, "p50-ms")
	p90, ok90 := r.get(bench, "p90-ms")
	pmax, okMax := r.get(bench, "max-ms")
	kills := "kills"
	if n, ok := r.get(bench, "N"); ok {
		kills = fmt.Sprintf("%.0f kills", n)
	}
	rw := row{what: "recovery" + variant + ": kill -9 → first dispatch to the killed worker's tenant served by its new process, p50 of " + kills, figure: ms(p50, ok50), floor: "—", ratio: "—", goal: "≤ 150 ms"}
	r.judge(&rw, p50Target, ok50, p50 <= 150)
	r.rows = append(r.rows, rw,
		row{what: "recovery" + variant + ": p90 / max", figure: ms(p90, ok90) + " / " + ms(pmax, okMax), floor: "—", ratio: "—", goal: "—", status: "info"})
	// The worst round counts: one extra restart in any round is a miss.
	extra, okExtra := r.series(bench, "extra-restarts").max()
	extraText := "n/a"
	if okExtra {
		extraText = fmt.Sprintf("%.0f", extra)
	}
	rw = row{what: "recovery" + variant + ": restarts beyond one per kill (" + kills + ", worst round)", figure: extraText, floor: "—", ratio: "—", goal: "0"}
	r.judge(&rw, restartsTarget, okExtra, extra == 0)
	r.rows = append(r.rows, rw)
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
	fmt.Fprintf(&b, "- method: each benchmark run %d times (each package's test binary run once per round); figures are medians; each ratio is the median of the per-round ratios of a figure and its floor measured in the same round\n- suite time: %s\n\n", m.rounds, m.took)
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
		if t.profile != "" {
			fmt.Fprintf(&b, "\nCPU profile of `%s` in this run (`go tool pprof -top`, flat):\n\n```\n%s\n```\n", t.profile, t.top)
		}
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

// eventRows adds the durable queue's rows (issue 16): nowait throughput
// against GET /healthz of the same server in the same run, the accept
// latency, and the drain rate of a backlog.
func (r *report) eventRows() {
	nS := r.series("BenchmarkHTTPNowait", "req/s")
	hS := r.series("BenchmarkHTTPNowait", "healthz-req/s")
	n, nOK := nS.median()
	h, hOK := hS.median()
	share, shareOK := nS.over(hS).median()
	rw := row{what: "POST …/events?wait=false (durable queue, SQLite group commit), process topology, 2 workers, 64 clients",
		figure: rps(n, nOK), floor: rps(h, hOK) + " (GET /healthz, same server and run)", ratio: "n/a", goal: "≥ 50%"}
	if shareOK {
		rw.ratio = fmt.Sprintf("%.0f%%", 100*share)
	}
	r.judge(&rw, tNowait, shareOK, share >= 0.5)
	r.rows = append(r.rows, rw)
	p50, ok50 := r.get("BenchmarkHTTPNowait", "p50-us")
	p99, ok99 := r.get("BenchmarkHTTPNowait", "p99-us")
	lat := "n/a"
	if ok50 && ok99 {
		lat = fmt.Sprintf("p50 %s, p99 %s", dur(p50*1000), dur(p99*1000))
	}
	r.rows = append(r.rows, row{what: "accept latency of a nowait call (202 once committed), same run", figure: lat, floor: "—", ratio: "—", goal: "—", status: "info"})
	r.rows = append(r.rows, nowaitCPURow(r))
	d, dOK := r.get("BenchmarkEventDrain", "events/s")
	fig := "n/a"
	if dOK {
		fig = thousands(d) + " events/s"
	}
	r.rows = append(r.rows, row{what: "drain of a 100,000-event backlog (64 tenants, 2 process workers, SQLite) after a start", figure: fig, floor: "—", ratio: "—", goal: "—", status: "info"})
}

// nowaitCPURow is the CPU one nowait event costs, master and workers,
// against one GET /healthz in the same run: on 2 shared cores their ratio
// is the throughput ratio the goal is about.
func nowaitCPURow(r *report) row {
	rw := row{what: "CPU per nowait event (master + 2 workers, until delivered) against one GET /healthz, same run",
		figure: "n/a", floor: "n/a", ratio: "n/a", goal: "—", status: "info"}
	m, mOK := r.get("BenchmarkHTTPNowait", "master-cpu-us/op")
	w, wOK := r.get("BenchmarkHTTPNowait", "worker-cpu-us/op")
	h, hOK := r.get("BenchmarkHTTPNowait", "healthz-cpu-us/op")
	if mOK && wOK {
		rw.figure = fmt.Sprintf("%.0f µs + %.0f µs", m, w)
	}
	if hOK {
		rw.floor = fmt.Sprintf("%.0f µs", h)
	}
	if mOK && wOK && hOK && m+w > 0 {
		rw.ratio = fmt.Sprintf("%.0f%%", 100*h/(m+w))
	}
	return rw
}

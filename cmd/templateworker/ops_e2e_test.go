package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/templateworker/templateworker/proto"
)

// TestSystemdNotify receives the master's sd_notify messages on a unix
// datagram socket, as systemd would.
func TestSystemdNotify(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var mu sync.Mutex
	var msgs []string
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				return
			}
			mu.Lock()
			msgs = append(msgs, string(buf[:n]))
			mu.Unlock()
		}
	}()
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "600000") // 0.6 s: pings every 0.2 s
	m := startMaster(t, "", "--process-workers", "2")
	m.waitReady(t)
	waitFor(t, 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return strings.Count(strings.Join(msgs, "\n"), "WATCHDOG=1") >= 2
	})
	// Workers must not inherit the socket: only the master notifies.
	for _, r := range m.workers(t) {
		if procEnv(r.PID, "NOTIFY_SOCKET") != "" {
			t.Fatalf("worker %d inherited NOTIFY_SOCKET", r.ID)
		}
	}
	m.stop(syscall.SIGTERM)
	waitFor(t, 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return strings.Contains(strings.Join(msgs, "\n"), "STOPPING=1")
	})
	mu.Lock()
	all := strings.Join(msgs, "\n")
	mu.Unlock()
	ready := strings.Index(all, "READY=1")
	status := strings.Index(all, "STATUS=workers ready 2/2, restarts 0")
	stopping := strings.Index(all, "STOPPING=1")
	if ready < 0 || status < 0 || stopping < ready {
		t.Fatalf("messages out of order or missing:\n%s", all)
	}
}

func scrape(t *testing.T, url string) map[string]*dto {
	t.Helper()
	resp, err := httpGet(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse metrics: %v", err)
	}
	out := map[string]*dto{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			labels := []string{}
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			v := 0.0
			switch {
			case m.Counter != nil:
				v = m.Counter.GetValue()
			case m.Gauge != nil:
				v = m.Gauge.GetValue()
			case m.Histogram != nil:
				v = float64(m.Histogram.GetSampleCount())
			}
			out[name+"{"+strings.Join(labels, ",")+"}"] = &dto{v}
		}
	}
	return out
}

type dto struct{ v float64 }

func metric(ms map[string]*dto, key string) float64 {
	if d, ok := ms[key]; ok {
		return d.v
	}
	return -1
}

// TestMetricsMove scrapes /metrics (on --metrics-listen) before and after
// dispatches and a worker kill.
func TestMetricsMove(t *testing.T) {
	port := freePort(t)
	m := startMaster(t, "", "--process-workers", "2", "--metrics-listen", port, "--restart-backoff", "50ms")
	rows := m.waitReady(t)
	url := "http://" + port + "/metrics"
	before := scrape(t, url)
	for _, k := range []string{"templateworker_worker_up{worker=0}", "templateworker_worker_up{worker=1}", "templateworker_tenants_quarantined{}"} {
		if _, ok := before[k]; !ok {
			t.Fatalf("missing %s in %v", k, keysOf(before))
		}
	}
	id := tenantOn(1, 2, 3)
	ctx := context.Background()
	if err := m.api.PutTemplate(ctx, id, "t", `return 1`, []string{"Ping"}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if _, err := m.api.Dispatch(ctx, id, proto.Event{Name: "Ping"}); err != nil {
			t.Fatal(err)
		}
	}
	_ = syscall.Kill(rows[0].PID, syscall.SIGKILL)
	waitFor(t, 20*time.Second, func() bool {
		r := m.workers(t)[0]
		return r.State == "ready" && r.PID != rows[0].PID
	})
	after := scrape(t, url)
	if got := metric(after, "templateworker_dispatch_total{result=ok,topology=process}"); got < 5 {
		t.Fatalf("dispatch_total ok = %v, want ≥ 5", got)
	}
	if got := metric(after, "templateworker_dispatch_duration_seconds{topology=process}"); got < 5 {
		t.Fatalf("duration histogram count = %v", got)
	}
	if got := metric(after, "templateworker_worker_restarts_total{reason=crash,worker=0}"); got != 1 {
		t.Fatalf("restarts_total{crash,0} = %v, want 1; have %v", got, keysOf(after))
	}
	if metric(after, "go_goroutines{}") <= 0 || metric(after, "process_resident_memory_bytes{}") <= 0 {
		t.Fatal("Go and process collectors missing")
	}
	// The API port serves /metrics too.
	if _, ok := scrape(t, m.addr+"/metrics")["templateworker_worker_up{worker=1}"]; !ok {
		t.Fatal("/metrics missing on the API address")
	}
}

// TestSIGHUPRollingRestartUnderLoad: a rolling restart under load replaces
// every worker with zero failed calls and every nowait event executed.
func TestSIGHUPRollingRestartUnderLoad(t *testing.T) {
	m := startMaster(t, "", "--process-workers", "2")
	rows := m.waitReady(t)
	ctx := context.Background()
	ids := []proto.Id{tenantOn(0, 2, 3), tenantOn(1, 2, 3)}
	code := `local event, ctx = ... ctx.kv.set("ev:" .. event.data.n, true) return event.data.n`
	for _, id := range ids {
		if err := m.api.PutTemplate(ctx, id, "count", code, []string{"Ping"}); err != nil {
			t.Fatal(err)
		}
	}
	var (
		stop     atomic.Bool
		failed   atomic.Int64
		sent     atomic.Int64
		served   [2]atomic.Int64 // waited calls answered, by worker
		accepted sync.Map
		wg       sync.WaitGroup
	)
	t.Cleanup(func() { stop.Store(true); wg.Wait() })
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				id := ids[(g+i)%2]
				n := sent.Add(1)
				ev := proto.Event{Name: "Ping", Data: proto.Value(fmt.Sprintf(`{"n":%d}`, n))}
				var err error
				if i%2 == 0 {
					if err = m.api.DispatchNoWait(ctx, id, ev); err == nil {
						accepted.Store(n, id)
					}
				} else if _, err = m.api.Dispatch(ctx, id, ev); err == nil {
					served[(g+i)%2].Add(1)
				}
				if err != nil {
					failed.Add(1)
					t.Logf("call failed during rolling restart: %v", err)
				}
				time.Sleep(2 * time.Millisecond)
			}
		}(g)
	}
	// The load runs on both workers before the restart...
	waitFor(t, time.Minute, func() bool { return served[0].Load() > 0 && served[1].Load() > 0 })
	if err := m.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	var replaced []workerRow
	waitFor(t, 2*time.Minute, func() bool {
		replaced = m.workers(t)
		for i, r := range replaced {
			if r.State != "ready" || r.PID == rows[i].PID {
				return false
			}
		}
		return true
	})
	// ...and after it, on both new processes.
	then := [2]int64{served[0].Load(), served[1].Load()}
	waitFor(t, time.Minute, func() bool { return served[0].Load() > then[0] && served[1].Load() > then[1] })
	stop.Store(true)
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d of %d calls failed during the rolling restart", failed.Load(), sent.Load())
	}
	waitFor(t, time.Minute, func() bool {
		have := map[string]bool{}
		for _, id := range ids {
			items, err := m.api.KV(ctx, id, "ev:")
			if err != nil {
				return false
			}
			for _, it := range items {
				have[fmt.Sprintf("%d/%s", id.ID, it.Key)] = true
			}
		}
		missing := 0
		accepted.Range(func(k, v any) bool {
			if !have[fmt.Sprintf("%d/ev:%d", v.(proto.Id).ID, k.(int64))] {
				missing++
			}
			return true
		})
		return missing == 0
	})
	t.Logf("%d calls, none failed", sent.Load())
	// The same through the API and CLI: when the command returns, every
	// worker is a new, ready process, and each restart is counted once.
	if _, errOut, code := m.cli("restart-workers"); code != 0 {
		t.Fatalf("restart-workers: %s", errOut)
	}
	after := m.workers(t)
	for i, r := range after {
		if r.State != "ready" || r.PID == 0 || r.PID == replaced[i].PID || r.PID == rows[i].PID {
			t.Errorf("after restart-workers, worker %d is %+v; before it %+v", i, r, replaced[i])
		}
		if r.Restarts != replaced[i].Restarts+1 {
			t.Errorf("worker %d: %d restarts after restart-workers, want %d", i, r.Restarts, replaced[i].Restarts+1)
		}
		if alive(replaced[i].PID) {
			t.Errorf("worker %d: the replaced process %d is still alive", i, replaced[i].PID)
		}
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func keysOf(m map[string]*dto) []string {
	var out []string
	for k := range m {
		if strings.HasPrefix(k, "templateworker_") {
			out = append(out, k)
		}
	}
	return out
}

// TestWorkerLogsRelogged: a worker's log lines reach the master's log, one
// stream, with the worker's worker_id and pid.
func TestWorkerLogsRelogged(t *testing.T) {
	m := startMaster(t, "", "--process-workers", "2")
	rows := m.waitReady(t)
	id := tenantOn(1, 2, 9)
	if _, err := m.api.RunScript(context.Background(), id, "s", `local e, ctx = ... ctx.log.warn("marker-7f3a") return 1`, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() bool { return strings.Contains(m.out.String(), "marker-7f3a") })
	for _, line := range strings.Split(m.out.String(), "\n") {
		if !strings.Contains(line, "marker-7f3a") {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("re-logged line is not JSON: %s", line)
		}
		if rec["message"] != "marker-7f3a" || rec["level"] != "warn" || rec["worker_id"] != float64(1) ||
			rec["pid"] != float64(rows[1].PID) || rec["tenant"] != id.String() {
			t.Fatalf("re-logged line lacks its fields: %s", line)
		}
		return
	}
}

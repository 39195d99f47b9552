package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/templateworker/templateworker/master"
	"github.com/templateworker/templateworker/proto"
)

// recycleLoad runs waited dispatches from one goroutine per tenant of
// waited and nowait events on another until stop is closed, and returns
// the calls that failed, how many waited calls of each tenant answered
// and how many nowait events were accepted.
func recycleLoad(t *testing.T, m *runningMaster, waited []proto.Id, nowait proto.Id, stop <-chan struct{}) (failed []error, answered []int, accepted int) {
	t.Helper()
	ctx := context.Background()
	var mu sync.Mutex
	var wg sync.WaitGroup
	answered = make([]int, len(waited))
	for i, id := range waited {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, err := m.api.Dispatch(ctx, id, proto.Event{Name: "Ping", Data: proto.Value(`{}`)})
				mu.Lock()
				if err != nil {
					failed = append(failed, err)
				} else {
					answered[i]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := m.api.DispatchNoWait(ctx, nowait, proto.Event{Name: "Ping", Data: proto.Value(`{}`)}); err != nil {
				mu.Lock()
				failed = append(failed, fmt.Errorf("nowait: %w", err))
				mu.Unlock()
				continue
			}
			mu.Lock()
			accepted++
			mu.Unlock()
			time.Sleep(5 * time.Millisecond)
		}
	}()
	wg.Wait()
	return failed, answered, accepted
}

// readyBeforeShutdown checks the master's log of planned replacements:
// every old process got its Shutdown only after its successor had
// started and was ready and serving. It returns how many replacements it
// saw and the logged timings (the new process's start to ready, the old
// one's drain to exit).
func readyBeforeShutdown(t *testing.T, log string) (n int, timings []string) {
	t.Helper()
	started := map[int]int{}  // pid → line of "worker started"
	readyFor := map[int]int{} // old pid → line where its successor was ready
	for i, line := range strings.Split(log, "\n") {
		var e struct {
			Message      string  `json:"message"`
			PID          int     `json:"pid"`
			OldPID       int     `json:"old_pid"`
			StartToReady float64 `json:"start_to_ready"`
			Drain        float64 `json:"drain"`
		}
		if json.Unmarshal([]byte(line), &e) != nil || e.PID == 0 {
			continue
		}
		switch e.Message {
		case "worker started":
			started[e.PID] = i
		case "planned replacement: the new process is ready and serving; draining the old one":
			if _, ok := started[e.PID]; !ok {
				t.Fatalf("successor %d ready without a start line", e.PID)
			}
			readyFor[e.OldPID] = i
			timings = append(timings, fmt.Sprintf("start-to-ready %.1fms", e.StartToReady))
		case "planned replacement: the old process exited":
			timings = append(timings, fmt.Sprintf("drain %.1fms", e.Drain))
		case "planned replacement: shutting down the old process":
			at, ok := readyFor[e.PID]
			if !ok || at > i {
				t.Fatalf("old process %d got its Shutdown before a successor was ready", e.PID)
			}
			n++
		}
	}
	return n, timings
}

// kvCount reads the "n" counter that counterLua keeps.
func kvCount(t *testing.T, m *runningMaster, id proto.Id) int {
	t.Helper()
	items, err := m.api.KV(context.Background(), id, "n")
	if err != nil || len(items) == 0 {
		return 0
	}
	var n int
	_ = json.Unmarshal(items[0].Value, &n)
	return n
}

const counterLua = `local event, ctx = ...
local n = (ctx.kv.get("n") or 0) + 1
ctx.kv.set("n", n)
return n`

// plannedRestartUnderLoad drives load until the worker has had want
// planned restarts of reason, then checks that no call failed, every
// waited call ran exactly once and every accepted nowait event ran, the
// crash-loop counter never moved, and every new process was ready before
// the old one got its Shutdown.
func plannedRestartUnderLoad(t *testing.T, m *runningMaster, reason string, want int) {
	t.Helper()
	waited := []proto.Id{proto.GuildID(1 << 22), proto.GuildID(3 << 22), proto.GuildID(4 << 22)}
	nowait := proto.GuildID(2 << 22)
	for _, id := range append([]proto.Id{nowait}, waited...) {
		if err := m.api.PutTemplate(context.Background(), id, "c", counterLua, []string{"Ping"}); err != nil {
			t.Fatal(err)
		}
	}
	first := m.waitReady(t)[0].PID
	stop := make(chan struct{})
	var (
		failed   []error
		answered []int
		accepted int
		done     = make(chan struct{})
	)
	go func() {
		failed, answered, accepted = recycleLoad(t, m, waited, nowait, stop)
		close(done)
	}()
	var st master.WorkerStatus
	waitFor(t, 3*time.Minute, func() bool {
		var out struct{ Workers []master.WorkerStatus }
		raw, err := m.api.Workers(context.Background())
		if err != nil || json.Unmarshal(raw, &out) != nil || len(out.Workers) != 1 {
			return false
		}
		st = out.Workers[0]
		return st.Restarts >= want
	})
	close(stop)
	<-done
	if len(failed) > 0 {
		t.Fatalf("%d calls failed during %s restarts, first: %v", len(failed), reason, failed[0])
	}
	if st.ConsecutiveFailures != 0 {
		t.Fatalf("consecutive failures %d after planned restarts, want 0", st.ConsecutiveFailures)
	}
	if st.LastRestartReason != reason || st.PID == first || st.PID == 0 {
		t.Fatalf("/v1/workers after %s restarts: %+v, want last_restart_reason %q and a new pid", reason, st, reason)
	}
	for i, id := range waited {
		// A tenant's calls run one at a time even across a switch-over:
		// its counter is exactly its answered calls.
		if n := kvCount(t, m, id); n != answered[i] {
			t.Fatalf("tenant %s: counter %d after %d answered calls", id, n, answered[i])
		}
	}
	waitFor(t, time.Minute, func() bool { return kvCount(t, m, nowait) >= accepted })
	rows := m.waitReady(t)
	if rows[0].PID == first {
		t.Fatalf("worker pid %d did not change", first)
	}
	metrics := m.do(t, "GET", "/metrics", "").body
	line := fmt.Sprintf(`templateworker_worker_restarts_total{reason="%s",worker="0"}`, reason)
	if !strings.Contains(metrics, line) {
		t.Fatalf("/metrics has no %s", line)
	}
	for _, bad := range []string{`reason="crash"`, `reason="hung"`, `reason="rolling"`} {
		if strings.Contains(metrics, "templateworker_worker_restarts_total{"+bad) {
			t.Fatalf("/metrics counts another restart (%s)", bad)
		}
	}
	var timings []string
	waitFor(t, time.Minute, func() bool {
		var n int
		n, timings = readyBeforeShutdown(t, m.out.String())
		return n >= want
	})
	t.Logf("replacements: %s", strings.Join(timings, ", "))
	t.Logf("%d %s restarts, waited calls %v, %d nowait events accepted and delivered, 0 failed calls", st.Restarts, reason, answered, accepted)
}

// TestWorkerRecycledAfterMaxDispatches recycles the worker every ~40
// calls under load.
func TestWorkerRecycledAfterMaxDispatches(t *testing.T) {
	m := startMaster(t, "", "--process-workers", "1", "--worker-max-dispatches", "40")
	plannedRestartUnderLoad(t, m, master.ReasonRecycle, 3)
}

// TestWorkerReplacedOverMemoryBudget gives the worker a budget below what
// an idle worker process already holds, so that evicting VMs cannot help
// and the master must replace it with planned restarts.
func TestWorkerReplacedOverMemoryBudget(t *testing.T) {
	m := startMaster(t, "", "--process-workers", "1", "--worker-memory-max", "8MiB")
	plannedRestartUnderLoad(t, m, master.ReasonMemory, 2)
	if !strings.Contains(m.out.String(), "RSS stayed above --worker-memory-max") {
		t.Fatalf("the master did not log why it replaced the worker")
	}
}

// TestMaxDispatchesNeedsProcessWorkers checks the bad-input line.
func TestMaxDispatchesNeedsProcessWorkers(t *testing.T) {
	m := &runningMaster{t: t, dataDir: t.TempDir()}
	_, errOut, code := m.cli("master", "--thread-workers", "1", "--worker-max-dispatches", "5", "--listen", "127.0.0.1:0", "--data-dir", m.dataDir)
	if code == 0 || !strings.Contains(errOut, "--worker-max-dispatches") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
}

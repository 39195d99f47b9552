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

// recycleLoad runs waited dispatches on one tenant and nowait events on
// another until stop is closed, and returns the waited calls that failed
// and how many nowait events were accepted.
func recycleLoad(t *testing.T, m *runningMaster, waited, nowait proto.Id, stop <-chan struct{}) (failed []error, accepted int) {
	t.Helper()
	ctx := context.Background()
	var mu sync.Mutex
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := m.api.Dispatch(ctx, waited, proto.Event{Name: "Ping", Data: proto.Value(`{}`)}); err != nil {
				mu.Lock()
				failed = append(failed, err)
				mu.Unlock()
			}
		}
	}()
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
	return failed, accepted
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
// accepted nowait event ran, and the crash-loop counter never moved.
func plannedRestartUnderLoad(t *testing.T, m *runningMaster, reason string, want int) {
	t.Helper()
	waited, nowait := proto.GuildID(1<<22), proto.GuildID(2<<22)
	for _, id := range []proto.Id{waited, nowait} {
		if err := m.api.PutTemplate(context.Background(), id, "c", counterLua, []string{"Ping"}); err != nil {
			t.Fatal(err)
		}
	}
	first := m.waitReady(t)[0].PID
	stop := make(chan struct{})
	var (
		failed   []error
		accepted int
		done     = make(chan struct{})
	)
	go func() {
		failed, accepted = recycleLoad(t, m, waited, nowait, stop)
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
	for _, bad := range []string{`reason="crash"`, `reason="hung"`} {
		if strings.Contains(metrics, "templateworker_worker_restarts_total{"+bad) {
			t.Fatalf("/metrics counts an unplanned restart (%s)", bad)
		}
	}
	t.Logf("%d %s restarts, %d nowait events accepted and delivered, 0 failed calls", st.Restarts, reason, accepted)
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

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/templateworker/templateworker/internal/pgtest"
	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/store"
)

// countRuns is a template that counts the runs of each event by its id.
const countRuns = `local e, ctx = ... local k = "seen" .. e.id ctx.kv.set(k, (ctx.kv.get(k) or 0) + 1) return 1`

// eventTenants are the tenants of the durable-event tests, spread over
// both workers of a 2-worker pool.
var eventTenants = []proto.Id{tenantOn(0, 2, 41), tenantOn(1, 2, 42), tenantOn(0, 2, 43), tenantOn(1, 2, 44)}

// nowaitLoad posts nowait events to the tenants from 8 keep-alive clients
// until stop is closed (or a post fails: the master is gone), and returns
// the ids of the events answered 202, per tenant.
func nowaitLoad(t *testing.T, m *runningMaster, tenants []proto.Id, stop <-chan struct{}, accepted *atomic.Int64) map[proto.Id][]string {
	t.Helper()
	var (
		mu  sync.Mutex
		ids = map[proto.Id][]string{}
		wg  sync.WaitGroup
	)
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	for c := 0; c < 8; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := tenants[(c+i)%len(tenants)]
				req, _ := http.NewRequest("POST", m.addr+"/v1/tenants/"+id.Path()+"/events?wait=false",
					strings.NewReader(fmt.Sprintf(`{"name":"N","data":{"c":%d,"i":%d}}`, c, i)))
				req.Header.Set("Authorization", "Bearer "+m.token)
				resp, err := hc.Do(req)
				if err != nil {
					return // the master died
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusAccepted {
					if resp.StatusCode == http.StatusServiceUnavailable {
						continue // shutting down, or backlog full: not accepted
					}
					t.Errorf("nowait post: %d %s", resp.StatusCode, b)
					return
				}
				var r struct {
					Accepted bool   `json:"accepted"`
					ID       string `json:"id"`
				}
				if err := json.Unmarshal(b, &r); err != nil || !r.Accepted || r.ID == "" {
					t.Errorf("202 body %s: %v", b, err)
					return
				}
				mu.Lock()
				ids[id] = append(ids[id], r.ID)
				mu.Unlock()
				accepted.Add(1)
			}
		}(c)
	}
	wg.Wait()
	return ids
}

// runsOf returns how often each event id of tenant ran (from its KV).
func runsOf(t *testing.T, m *runningMaster, id proto.Id) map[string]int {
	t.Helper()
	items, err := m.api.KV(context.Background(), id, "seen")
	if err != nil {
		return nil
	}
	runs := make(map[string]int, len(items))
	for _, it := range items {
		n, _ := strconv.Atoi(string(it.Value))
		runs[strings.TrimPrefix(it.Key, "seen")] = n
	}
	return runs
}

// waitAllRan waits until every accepted event ran at least once and
// returns the number of duplicate runs.
func waitAllRan(t *testing.T, m *runningMaster, accepted map[proto.Id][]string) int {
	t.Helper()
	dups := 0
	waitFor(t, 3*time.Minute, func() bool {
		dups = 0
		for id, ids := range accepted {
			runs := runsOf(t, m, id)
			for _, e := range ids {
				if runs[e] == 0 {
					return false
				}
				dups += runs[e] - 1
			}
		}
		return true
	})
	return dups
}

// killUnderLoad is the scenario of issue 16: nowait events at full speed,
// the master stopped by sig, started again on the same store: every
// accepted event runs.
func killUnderLoad(t *testing.T, sig syscall.Signal, start func() *runningMaster) {
	m := start()
	m.waitReady(t)
	ctx := context.Background()
	for _, id := range eventTenants {
		if err := m.api.PutTemplate(ctx, id, "count", countRuns, []string{"N"}); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	var n atomic.Int64
	done := make(chan map[proto.Id][]string)
	go func() { done <- nowaitLoad(t, m, eventTenants, stop, &n) }()
	waitFor(t, 2*time.Minute, func() bool { return n.Load() >= 400 })
	pid := m.cmd.Process.Pid
	m.stop(sig)
	close(stop)
	accepted := <-done
	// Workers of a killed master exit when their connection drops; make
	// sure none outlives the test.
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	total := 0
	for _, ids := range accepted {
		total += len(ids)
	}
	m2 := start()
	m2.waitReady(t)
	dups := waitAllRan(t, m2, accepted)
	t.Logf("%s: %d events accepted (202) before the master stopped; all ran after the restart, %d duplicate runs", sig, total, dups)
	if sig == syscall.SIGTERM && dups != 0 {
		// A graceful stop lets deliveries finish and commits their
		// deletions: nothing runs twice.
		t.Errorf("%d duplicates after a graceful stop", dups)
	}
}

func TestEventsMasterStopUnderLoadSQLite(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			dir := t.TempDir()
			killUnderLoad(t, sig, func() *runningMaster { return startMaster(t, dir, "--process-workers", "2") })
		})
	}
}

func TestEventsMasterKillUnderLoadPostgres(t *testing.T) {
	dsn, _, _ := pgtest.Schema(t, pgtest.URL(t))
	killUnderLoad(t, syscall.SIGKILL, func() *runningMaster {
		return startPostgresMaster(t, dsn, "--process-workers", "2")
	})
}

// eventsPending reads templateworker_events_pending summed over workers.
func eventsPending(t *testing.T, m *runningMaster) int {
	t.Helper()
	resp, err := httpGet(m.addr + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "templateworker_events_pending{") {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			n += int(v)
		}
	}
	return n
}

// TestEventsWorkerKillDuringDrain: a backlog drains while a worker is
// killed with -9; every event still runs.
func TestEventsWorkerKillDuringDrain(t *testing.T) {
	m := startMaster(t, "", "--process-workers", "2", "--restart-backoff", "50ms", "--quarantine-after", "0")
	rows := m.waitReady(t)
	ctx := context.Background()
	// Each event takes a little while, so that a backlog builds up.
	slow := `local e, ctx = ... local t = os.clock() while os.clock() - t < 0.002 do end ` + strings.TrimPrefix(countRuns, "local e, ctx = ... ")
	for _, id := range eventTenants {
		if err := m.api.PutTemplate(ctx, id, "count", slow, []string{"N"}); err != nil {
			t.Fatal(err)
		}
	}
	accepted := map[proto.Id][]string{}
	for i := 0; i < 300; i++ {
		for _, id := range eventTenants {
			r := m.do(t, "POST", "/v1/tenants/"+id.Path()+"/events?wait=false", `{"name":"N","data":{}}`)
			if r.status != 202 {
				t.Fatalf("nowait: %d %s", r.status, r.body)
			}
			var a struct{ ID string }
			_ = json.Unmarshal([]byte(r.body), &a)
			accepted[id] = append(accepted[id], a.ID)
		}
		if i == 50 {
			// Kill worker 0 while its tenants' backlogs drain.
			waitFor(t, time.Minute, func() bool { return len(runsOf(t, m, eventTenants[0])) > 0 })
			if err := syscall.Kill(rows[0].PID, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
		}
	}
	dups := waitAllRan(t, m, accepted)
	waitFor(t, time.Minute, func() bool { return eventsPending(t, m) == 0 })
	if r := m.do(t, "GET", "/readyz", ""); r.status != 200 {
		t.Fatalf("readyz after the drain: %d %s", r.status, r.body)
	}
	t.Logf("1200 events delivered across a worker kill, %d duplicate runs", dups)
}

// TestEventsPoisonDeadLettered: an event whose run hits a fatal limit is
// tried exactly --event-max-attempts times, then moved to the dead-letter
// table with its last error, while its tenant's later events and its
// neighbours' are delivered.
func TestEventsPoisonDeadLettered(t *testing.T) {
	m := startMaster(t, "", "--process-workers", "2", "--lua-max-instructions", "100000",
		"--event-max-attempts", "3", "--event-retry-backoff", "10ms", "--quarantine-after", "0")
	m.waitReady(t)
	ctx := context.Background()
	code := `local e, ctx = ... local k = "try" .. e.id ctx.kv.set(k, (ctx.kv.get(k) or 0) + 1)
		if e.data.poison then while true do end end ctx.kv.set("seen" .. e.id, 1) return 1`
	bad, other := eventTenants[0], eventTenants[1]
	for _, id := range []proto.Id{bad, other} {
		if err := m.api.PutTemplate(ctx, id, "p", code, []string{"N"}); err != nil {
			t.Fatal(err)
		}
	}
	post := func(id proto.Id, body string) string {
		r := m.do(t, "POST", "/v1/tenants/"+id.Path()+"/events?wait=false", body)
		if r.status != 202 {
			t.Fatalf("nowait: %d %s", r.status, r.body)
		}
		var a struct{ ID string }
		_ = json.Unmarshal([]byte(r.body), &a)
		return a.ID
	}
	before := post(bad, `{"name":"N","data":{}}`)
	poison := post(bad, `{"name":"N","data":{"poison":true}}`)
	after := post(bad, `{"name":"N","data":{}}`)
	neighbour := post(other, `{"name":"N","data":{}}`)
	waitAllRan(t, m, map[proto.Id][]string{bad: {before, after}, other: {neighbour}})
	st, err := store.OpenSQLite(ctx, filepath.Join(m.dataDir, store.SQLiteFile), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	dl, _, err := st.DeadLetters(ctx, store.DeadLetterQuery{Tenant: &bad, Limit: 10})
	if err != nil || len(dl) != 1 || strconv.FormatInt(dl[0].Seq, 10) != poison || dl[0].Attempts != 3 ||
		dl[0].LastError == nil || dl[0].LastError.Code != proto.CodeCPULimit {
		t.Fatalf("dead letters = %+v, %v", dl, err)
	}
	tries, _, err := st.KvGet(ctx, bad, "try"+poison)
	if err != nil || string(tries) != "3" {
		t.Fatalf("the poison event ran %s times, want exactly --event-max-attempts = 3 (%v)", tries, err)
	}
	if runs := runsOf(t, m, bad); runs[poison] != 0 {
		t.Fatalf("poison event completed: %v", runs)
	}
}

// TestEventsBacklogBound: past --event-backlog-tenant a tenant's nowait
// events get 503 backlog_full with Retry-After, its neighbour's are still
// accepted, and every accepted event runs once the backlog drains.
func TestEventsBacklogBound(t *testing.T) {
	m := startMaster(t, "", "--process-workers", "2", "--event-backlog-tenant", "5",
		"--lua-timeout", "3m", "--dispatch-timeout", "1m", "--lua-max-instructions", "100000000000")
	m.waitReady(t)
	ctx := context.Background()
	// The first event waits for a key the test writes: the tenant's
	// later events queue behind it.
	wedge := `local e, ctx = ... while not ctx.kv.get("go") do end ctx.kv.set("seen" .. e.id, 1) return 1`
	full, neighbour := eventTenants[0], eventTenants[1]
	for _, id := range []proto.Id{full, neighbour} {
		if err := m.api.PutTemplate(ctx, id, "w", wedge, []string{"N"}); err != nil {
			t.Fatal(err)
		}
	}
	accepted := map[proto.Id][]string{}
	var refused httpResult
	for i := 0; i < 10; i++ {
		r := m.do(t, "POST", "/v1/tenants/"+full.Path()+"/events?wait=false", `{"name":"N","data":{}}`)
		if r.status != 202 {
			refused = r
			break
		}
		var a struct{ ID string }
		_ = json.Unmarshal([]byte(r.body), &a)
		accepted[full] = append(accepted[full], a.ID)
	}
	wantCodeHTTP(t, refused, 503, proto.CodeBacklogFull, "--event-backlog-tenant")
	if len(accepted[full]) != 5 || refused.header.Get("Retry-After") == "" {
		t.Fatalf("%d accepted before backlog_full (want 5), Retry-After %q", len(accepted[full]), refused.header.Get("Retry-After"))
	}
	r := m.do(t, "POST", "/v1/tenants/"+neighbour.Path()+"/events?wait=false", `{"name":"N","data":{}}`)
	if r.status != 202 {
		t.Fatalf("neighbour refused: %d %s", r.status, r.body)
	}
	var a struct{ ID string }
	_ = json.Unmarshal([]byte(r.body), &a)
	accepted[neighbour] = []string{a.ID}
	// Release the wedges through the database (the tenants' VMs are busy).
	st, err := store.OpenSQLite(ctx, filepath.Join(m.dataDir, store.SQLiteFile), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []proto.Id{full, neighbour} {
		if err := st.KvSet(ctx, id, "go", json.RawMessage(`true`)); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()
	waitAllRan(t, m, accepted)
}

// TestEventsWaitForQuarantine: a quarantined tenant's queued events are
// kept while it is quarantined and run, in order, once it is lifted.
func TestEventsWaitForQuarantine(t *testing.T) {
	m := startMaster(t, "", "--process-workers", "2", "--lua-max-instructions", "100000",
		"--quarantine-after", "1", "--event-retry-backoff", "10ms")
	m.waitReady(t)
	ctx := context.Background()
	// Spins into the instruction limit until the key "fixed" exists.
	code := `local e, ctx = ... if not ctx.kv.get("fixed") then while true do end end
		ctx.kv.set("seen" .. e.id, 1) return 1`
	id := eventTenants[0]
	if err := m.api.PutTemplate(ctx, id, "q", code, []string{"N"}); err != nil {
		t.Fatal(err)
	}
	// The first event quarantines the tenant at its first run: the later
	// posts are accepted only until then.
	var ids []string
	for i := 0; i < 3; i++ {
		r := m.do(t, "POST", "/v1/tenants/"+id.Path()+"/events?wait=false", `{"name":"N","data":{}}`)
		if r.status == 423 && i > 0 {
			break
		}
		if r.status != 202 {
			t.Fatalf("nowait: %d %s", r.status, r.body)
		}
		var a struct{ ID string }
		_ = json.Unmarshal([]byte(r.body), &a)
		ids = append(ids, a.ID)
	}
	waitFor(t, time.Minute, func() bool { return m.quarantined(t)[id.String()] })
	if r := m.do(t, "POST", "/v1/tenants/"+id.Path()+"/events?wait=false", `{"name":"N","data":{}}`); r.status != 423 {
		t.Fatalf("nowait of a quarantined tenant: %d %s", r.status, r.body)
	}
	if n := eventsPending(t, m); n != len(ids) {
		t.Fatalf("%d events pending while quarantined, want the %d accepted (none dropped)", n, len(ids))
	}
	st, err := store.OpenSQLite(ctx, filepath.Join(m.dataDir, store.SQLiteFile), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = st.KvSet(ctx, id, "fixed", json.RawMessage(`true`))
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	if r := m.do(t, "DELETE", "/v1/tenants/"+id.Path()+"/quarantine", ""); r.status != 204 {
		t.Fatalf("lift: %d %s", r.status, r.body)
	}
	waitAllRan(t, m, map[proto.Id][]string{id: ids})
	waitFor(t, time.Minute, func() bool { return eventsPending(t, m) == 0 })
}

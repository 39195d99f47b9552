package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/store"
)

// Hostile tenants of issue 14 at the master's edge: what a tenant makes
// travel (results, KV batches, template sets, held nowait events) is
// bounded before it is sent, and ends in a coded error for the attacker
// alone. Each test checks the attacker's code, a neighbour on the same
// worker ((id>>22)%N) served, the neighbour not quarantined, and the
// master up — in both topologies.

// hostileTopologies are the topologies every row runs in.
var hostileTopologies = []struct {
	name string
	args []string
}{
	{"process", []string{"--process-workers", "2"}},
	{"thread", []string{"--thread-workers", "2"}},
}

// hostilePair returns an attacker and a neighbour routed to worker 0 of 2.
func hostilePair() (attacker, neighbour proto.Id) {
	return tenantOn(0, 2, 11), tenantOn(0, 2, 13)
}

// startHostile starts a master of the topology and installs the
// neighbour's template.
func startHostile(t *testing.T, topo []string, neighbour proto.Id, args ...string) *runningMaster {
	t.Helper()
	m := startMaster(t, "", append(append([]string{}, topo...), args...)...)
	if topo[0] == "--process-workers" {
		m.waitReady(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := m.api.PutTemplate(ctx, neighbour, "quick", `return "ok"`, []string{"Ping"}); err != nil {
		t.Fatal(err)
	}
	return m
}

// wantNeighbourServed dispatches to the neighbour and wants its answer.
func wantNeighbourServed(t *testing.T, m *runningMaster, neighbour proto.Id) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	v, err := m.api.Dispatch(ctx, neighbour, proto.Event{Name: "Ping"})
	if err != nil || string(v) != `{"quick":"ok"}` {
		t.Fatalf("neighbour not served: %s %v", v, err)
	}
}

// wantHealthy checks the master is up, the neighbour not quarantined,
// and (process topology) that no worker was restarted.
func wantHealthy(t *testing.T, m *runningMaster, neighbour proto.Id, process bool) {
	t.Helper()
	select {
	case <-m.exited:
		t.Fatal("the master exited")
	default:
	}
	if r := m.do(t, "GET", "/healthz", ""); r.status != 200 {
		t.Fatalf("/healthz: %d %s", r.status, r.body)
	}
	q := m.do(t, "GET", "/v1/quarantine", "")
	if q.status != 200 || strings.Contains(q.body, strconv.FormatUint(neighbour.ID, 10)) {
		t.Fatalf("neighbour quarantined: %d %s", q.status, q.body)
	}
	if process {
		for _, w := range m.workers(t) {
			if w.Restarts != 0 || w.State != "ready" {
				t.Fatalf("worker %d: state %s, %d restarts, want ready and none", w.ID, w.State, w.Restarts)
			}
		}
	}
}

// wantCodeHTTP wants an HTTP answer with status and error code.
func wantCodeHTTP(t *testing.T, r httpResult, status int, code string, mention string) {
	t.Helper()
	if r.status != status || !strings.Contains(r.body, `"code":"`+code+`"`) || !strings.Contains(r.body, mention) {
		t.Fatalf("got %d %s, want %d %s mentioning %q", r.status, tail(r.body, 400), status, code, mention)
	}
}

// TestHostileResultTooLarge: a result over what can travel (4.2 MB under
// the 16 MiB string limit, over the 4 MiB frame) is result_too_large for
// the attacker, 15 times in a row: no worker restart, master up.
func TestHostileResultTooLarge(t *testing.T) {
	for _, topo := range hostileTopologies {
		t.Run(topo.name, func(t *testing.T) {
			attacker, neighbour := hostilePair()
			m := startHostile(t, topo.args, neighbour)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			if err := m.api.PutTemplate(ctx, attacker, "big", `return ("x"):rep(4200000)`, []string{"Ping"}); err != nil {
				t.Fatal(err)
			}
			path := "/v1/tenants/" + attacker.Path()
			for i := 0; i < 15; i++ {
				wantCodeHTTP(t, m.do(t, "POST", path+"/events", `{"name":"Ping"}`), 422, proto.CodeResultTooLarge, "1048576-byte limit (--max-result)")
				wantCodeHTTP(t, m.do(t, "POST", path+"/scripts", `{"code":"return (\"y\"):rep(4200000)"}`), 422, proto.CodeResultTooLarge, "--max-result")
				wantNeighbourServed(t, m, neighbour)
			}
			// Nowait: the same result is an error of that event alone.
			for i := 0; i < 5; i++ {
				if err := m.api.DispatchNoWait(ctx, attacker, proto.Event{Name: "Ping"}); err != nil {
					t.Fatal(err)
				}
			}
			// From 50 fresh tenants on the neighbour's worker: still no
			// restart, nobody quarantined.
			for i := 0; i < 50; i++ {
				fresh := tenantOn(0, 2, uint64(100+i))
				_, err := m.api.RunScript(ctx, fresh, "s", `return ("x"):rep(4200000)`, nil)
				if proto.CodeOf(err) != proto.CodeResultTooLarge {
					t.Fatalf("fresh tenant %d: %v, want result_too_large", i, err)
				}
			}
			// A result under the limit still travels.
			v, err := m.api.RunScript(ctx, attacker, "s", `return #("x"):rep(4200000) .. ("y"):rep(900000)`, nil)
			if err != nil || len(v) < 900000 {
				t.Fatalf("a 900 KB result: %d bytes, %v", len(v), err)
			}
			wantNeighbourServed(t, m, neighbour)
			wantHealthy(t, m, neighbour, topo.name == "process")
		})
	}
}

// TestHostileResultLimitAtTheFrame: with --max-result raised to what a
// frame carries, the attack is still a coded error, never a frame the
// master refuses.
func TestHostileResultLimitAtTheFrame(t *testing.T) {
	attacker, neighbour := hostilePair()
	budget := proto.ValueBudget(4 << 20)
	m := startHostile(t, hostileTopologies[0].args, neighbour, "--max-result", strconv.Itoa(budget))
	path := "/v1/tenants/" + attacker.Path() + "/scripts"
	for _, n := range []int{budget - 2, budget - 1, 4200000} {
		r := m.do(t, "POST", path, fmt.Sprintf(`{"code":"return (\"x\"):rep(%d)"}`, n))
		if n <= budget-2 {
			if r.status != 200 || len(r.body) < budget {
				t.Fatalf("a result of %d bytes: %d %s", n+2, r.status, tail(r.body, 200))
			}
			continue
		}
		wantCodeHTTP(t, r, 422, proto.CodeResultTooLarge, strconv.Itoa(budget))
	}
	// The master→worker direction: a 1 MB script and a 1 MB event (the
	// most a body carries) fit in a frame, '<' and all.
	code := `{"code":"return 7 --` + strings.Repeat("<", 1000000) + `"}`
	if r := m.do(t, "POST", path, code); r.status != 200 || r.body != `{"result":7}` {
		t.Fatalf("a 1 MB script: %d %s", r.status, tail(r.body, 300))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := m.api.PutTemplate(ctx, attacker, "len", `local e = ... return #e.data.pad`, []string{"Big"}); err != nil {
		t.Fatal(err)
	}
	ev := `{"name":"Big","data":{"pad":"` + strings.Repeat("<", 1000000) + `"}}`
	if r := m.do(t, "POST", "/v1/tenants/"+attacker.Path()+"/events", ev); r.status != 200 || r.body != `{"result":{"len":1000000}}` {
		t.Fatalf("a 1 MB event: %d %s", r.status, tail(r.body, 300))
	}
	wantNeighbourServed(t, m, neighbour)
	wantHealthy(t, m, neighbour, true)
	if out := m.out.String(); strings.Contains(out, "frame too large") || strings.Contains(out, "connection lost") {
		t.Fatalf("a connection was closed:\n%s", tail(out, 3000))
	}
}

// TestHostileKVFindTooLarge: 20 values of 250 KB and ctx.kv.find("") is a
// Lua error of that call naming the limit (kv_result_too_large), in both
// topologies alike.
func TestHostileKVFindTooLarge(t *testing.T) {
	for _, topo := range hostileTopologies {
		t.Run(topo.name, func(t *testing.T) {
			attacker, neighbour := hostilePair()
			m := startHostile(t, topo.args, neighbour)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			fill := `local e, ctx = ... for i = 1, 20 do ctx.kv.set("k" .. i, ("v"):rep(250000)) end return 20`
			if v, err := m.api.RunScript(ctx, attacker, "fill", fill, nil); err != nil || string(v) != "20" {
				t.Fatalf("fill: %s %v", v, err)
			}
			path := "/v1/tenants/" + attacker.Path() + "/scripts"
			for i := 0; i < 5; i++ {
				wantCodeHTTP(t, m.do(t, "POST", path, `{"code":"local e, ctx = ... return #ctx.kv.find(\"\")"}`), 422, proto.CodeKVResultTooLarge, "one find may return")
				wantNeighbourServed(t, m, neighbour)
			}
			// The script can handle the error, and a narrower find works.
			v, err := m.api.RunScript(ctx, attacker, "s", `local e, ctx = ...
				local ok, err = pcall(ctx.kv.find, "")
				return {ok = ok, coded = string.find(tostring(err), "kv_result_too_large", 1, true) ~= nil, n = #ctx.kv.find("k1")}`, nil)
			if err != nil || string(v) != `{"coded":true,"n":11,"ok":false}` {
				t.Fatalf("handled find: %s %v", v, err)
			}
			wantNeighbourServed(t, m, neighbour)
			wantHealthy(t, m, neighbour, topo.name == "process")
		})
	}
}

// TestHostileTemplateSetTooLarge: a template over 512 KiB, or one that
// makes the tenant's set exceed a frame, is refused at PUT with
// template_too_large (413) naming the limit; what was accepted dispatches.
func TestHostileTemplateSetTooLarge(t *testing.T) {
	for _, topo := range hostileTopologies {
		t.Run(topo.name, func(t *testing.T) {
			attacker, neighbour := hostilePair()
			m := startHostile(t, topo.args, neighbour)
			path := "/v1/tenants/" + attacker.Path() + "/templates/"
			body := func(size int) string {
				b, _ := json.Marshal(map[string]any{"code": "return 1 --" + strings.Repeat("x", size), "events": []string{"Ping"}})
				return string(b)
			}
			// 5 templates of ~1 MB: the first is already over one
			// template's limit.
			for i := 0; i < 5; i++ {
				wantCodeHTTP(t, m.do(t, "PUT", path+"mega"+strconv.Itoa(i), body(1000000)), 413, proto.CodeTemplateTooLarge, "524288-byte limit of one template")
			}
			// Templates of 500 KB: 8 fit in a 4 MiB frame, the 9th not.
			accepted := 0
			for i := 0; i < 12; i++ {
				r := m.do(t, "PUT", path+"t"+strconv.Itoa(i), body(500000))
				if r.status == 200 {
					accepted++
					continue
				}
				wantCodeHTTP(t, r, 413, proto.CodeTemplateTooLarge, strconv.Itoa(proto.ValueBudget(4<<20))+"-byte limit of a tenant's template set")
				break
			}
			if accepted != 8 {
				t.Fatalf("%d templates of 500 KB accepted, want 8", accepted)
			}
			// Replacing one of them is fine: the set does not grow.
			if r := m.do(t, "PUT", path+"t0", body(499000)); r.status != 200 {
				t.Fatalf("replace: %d %s", r.status, r.body)
			}
			r := m.do(t, "POST", "/v1/tenants/"+attacker.Path()+"/events", `{"name":"Ping"}`)
			if r.status != 200 || strings.Count(r.body, ":1") != 8 {
				t.Fatalf("dispatch of the accepted set: %d %s", r.status, tail(r.body, 300))
			}
			wantNeighbourServed(t, m, neighbour)
			wantHealthy(t, m, neighbour, topo.name == "process")
		})
	}
}

// TestHostileNowaitBacklogBytes: ?wait=false with 1 MB events while the
// worker is wedged (a legal long-running template, released by a KV key
// the test writes into the database): the attacker gets 503 backlog_full
// with Retry-After once it holds its share of --worker-queue-bytes, the
// neighbour's events are still accepted, and every accepted event runs
// once the worker is free.
func TestHostileNowaitBacklogBytes(t *testing.T) {
	for _, topo := range hostileTopologies {
		t.Run(topo.name, func(t *testing.T) {
			// The attacker's own call is wedged, so its events wait in its
			// queue (a worker runs other tenants' calls beside it, but a
			// tenant's one at a time).
			attacker, neighbour := hostilePair()
			slow := attacker
			m := startHostile(t, topo.args, neighbour, "--worker-queue-bytes", "16MiB",
				"--lua-timeout", "3m", "--dispatch-timeout", "1m", "--lua-max-instructions", "100000000000")
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			wedge := `local e, ctx = ... while not ctx.kv.get("go") do end return "released"`
			record := `local e, ctx = ... ctx.kv.set("seen" .. e.data.i, true) return 1`
			for _, p := range []struct {
				id         proto.Id
				name, code string
				event      string
			}{{slow, "wedge", wedge, "Wedge"}, {attacker, "rec", record, "N"}, {neighbour, "rec", record, "N"}} {
				if err := m.api.PutTemplate(ctx, p.id, p.name, p.code, []string{p.event}); err != nil {
					t.Fatal(err)
				}
			}
			var wg sync.WaitGroup
			wg.Add(1)
			var wedgeResult proto.Value
			var wedgeErr error
			go func() {
				defer wg.Done()
				wedgeResult, wedgeErr = m.api.Dispatch(ctx, slow, proto.Event{Name: "Wedge"})
			}()
			waitFor(t, time.Minute, func() bool {
				return strings.Contains(string(mustRaw(m.api.Workers(ctx))), `"inflight":1`)
			})
			pad := strings.Repeat("p", 1000000)
			flood := func(id proto.Id, max int) (accepted int, refused httpResult) {
				for i := 0; i < max; i++ {
					r := m.do(t, "POST", "/v1/tenants/"+id.Path()+"/events?wait=false", fmt.Sprintf(`{"name":"N","data":{"i":%d,"pad":%q}}`, i, pad))
					if r.status != 202 {
						return accepted, r
					}
					accepted++
				}
				return accepted, httpResult{}
			}
			accepted, refused := flood(attacker, 100)
			wantCodeHTTP(t, refused, 503, proto.CodeBacklogFull, "--worker-queue-bytes")
			if refused.header.Get("Retry-After") == "" || accepted != 4 {
				t.Fatalf("attacker: %d accepted (want its 4 MiB share: 4), Retry-After %q", accepted, refused.header.Get("Retry-After"))
			}
			nAccepted, _ := flood(neighbour, 2)
			if nAccepted != 2 {
				t.Fatalf("neighbour's nowait events refused while the attacker's share is full: %d accepted", nAccepted)
			}
			// Release the wedge through the database.
			st, err := store.OpenSQLite(ctx, filepath.Join(m.dataDir, store.SQLiteFile), store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			err = st.KvSet(ctx, slow, "go", json.RawMessage(`true`))
			st.Close()
			if err != nil {
				t.Fatal(err)
			}
			wg.Wait()
			if wedgeErr != nil || string(wedgeResult) != `{"wedge":"released"}` {
				t.Fatalf("wedge: %s %v", wedgeResult, wedgeErr)
			}
			for _, c := range []struct {
				id proto.Id
				n  int
			}{{attacker, accepted}, {neighbour, nAccepted}} {
				waitFor(t, 2*time.Minute, func() bool {
					items, err := m.api.KV(ctx, c.id, "seen")
					return err == nil && len(items) == c.n
				})
			}
			// The bytes are given back: the attacker may send again.
			if again, _ := flood(attacker, 1); again != 1 {
				t.Fatal("attacker refused after its events ran")
			}
			wantNeighbourServed(t, m, neighbour)
			wantHealthy(t, m, neighbour, topo.name == "process")
		})
	}
}

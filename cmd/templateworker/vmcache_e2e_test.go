package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/templateworker/templateworker/master"
)

// TestVMCacheEvictionEndToEnd runs more tenants than --vm-cache-max allows
// through one worker of each topology: the cache stays at its bound, the
// evicted tenants' next events are served by fresh VMs with their KV
// intact, and the evictions show in /v1/workers, the CLI and /metrics.
func TestVMCacheEvictionEndToEnd(t *testing.T) {
	for _, topo := range [][]string{{"--thread-workers", "1"}, {"--process-workers", "1"}} {
		t.Run(topo[0], func(t *testing.T) {
			m := startMaster(t, "", append(topo, "--vm-cache-max", "3")...)
			const code = `local event, ctx = ...
calls = (calls or 0) + 1
local n = (ctx.kv.get("n") or 0) + 1
ctx.kv.set("n", n)
return {calls = calls, n = n}`
			body, _ := json.Marshal(map[string]any{"code": code, "events": []string{"Ping"}})
			tenants := make([]string, 5)
			for i := range tenants {
				tenants[i] = fmt.Sprintf("/v1/tenants/guild/%d", (i+1)<<22)
				if r := m.do(t, "PUT", tenants[i]+"/templates/c", string(body)); r.status != 200 {
					t.Fatalf("put template: %d %s", r.status, r.body)
				}
			}
			dispatch := func(tenant string) (calls, n int) {
				t.Helper()
				r := m.do(t, "POST", tenant+"/events", `{"name":"Ping","author":null,"data":{}}`)
				var out struct {
					Result map[string]struct{ Calls, N int }
				}
				if r.status != 200 || json.Unmarshal([]byte(r.body), &out) != nil {
					t.Fatalf("dispatch %s: %d %s", tenant, r.status, r.body)
				}
				return out.Result["c"].Calls, out.Result["c"].N
			}
			for _, tn := range tenants {
				dispatch(tn)
			}
			// Tenant 0 was the least recently used of the five: evicted.
			if calls, n := dispatch(tenants[0]); calls != 1 || n != 2 {
				t.Fatalf("evicted tenant: calls=%d n=%d, want a fresh VM (1) with its KV (2)", calls, n)
			}
			// Tenant 4 was used last: still loaded, its globals kept.
			if calls, n := dispatch(tenants[4]); calls != 2 || n != 2 {
				t.Fatalf("cached tenant: calls=%d n=%d, want 2 and 2", calls, n)
			}
			var st master.WorkerStatus
			waitFor(t, 30*time.Second, func() bool {
				r := m.do(t, "GET", "/v1/workers", "")
				var out struct{ Workers []master.WorkerStatus }
				if json.Unmarshal([]byte(r.body), &out) != nil || len(out.Workers) != 1 {
					return false
				}
				st = out.Workers[0]
				// A process worker reports through its heartbeat.
				return st.Cache != nil && st.Cache.EvictionsLRU >= 3
			})
			if st.Cache.VMs > 3 || st.Tenants > 3 {
				t.Fatalf("cache holds %d VMs (%d tenants), bound is 3", st.Cache.VMs, st.Tenants)
			}
			if st.Cache.ColdStarts < 6 || st.RSSBytes <= 0 || st.HeapBytes <= 0 {
				t.Fatalf("status %+v: want >= 6 cold starts and heap/RSS figures", st)
			}
			out, errOut, code2 := m.cli("workers")
			if code2 != 0 || !strings.Contains(out, "EVICTED") || !strings.Contains(out, "MiB") {
				t.Fatalf("workers: %d %q %q", code2, out, errOut)
			}
			metrics := m.do(t, "GET", "/metrics", "").body
			for _, want := range []string{
				`templateworker_vm_evictions_total{reason="lru",worker="0"}`,
				`templateworker_vm_cold_starts_total{worker="0"}`,
				`templateworker_vms{worker="0"}`,
				`templateworker_worker_rss_bytes{worker="0"}`,
			} {
				if !strings.Contains(metrics, want) {
					t.Errorf("/metrics lacks %s", want)
				}
			}
		})
	}
}

// TestVMCacheFlagsRejectNegative checks the bad-input line of the new flags.
func TestVMCacheFlagsRejectNegative(t *testing.T) {
	for _, args := range [][]string{{"--vm-cache-max", "-1"}, {"--vm-idle-ttl", "-1s"}} {
		m := &runningMaster{t: t, dataDir: t.TempDir()}
		_, errOut, code := m.cli(append([]string{"master", "--thread-workers", "1", "--listen", "127.0.0.1:0", "--data-dir", m.dataDir}, args...)...)
		if code == 0 || !strings.Contains(errOut, args[0]) || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
			t.Fatalf("%v: exit %d, stderr %q; want a one-line error naming the flag", args, code, errOut)
		}
	}
}

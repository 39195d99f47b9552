package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/templateworker/templateworker/master"
	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/store"
)

// TestEventsClusterOwnerDelivers: nowait events posted to one master of a
// cluster are committed and delivered by the owner of their tenant's
// shard; an owner killed with -9 and started again resumes its shards'
// backlog, which the other master never touches.
func TestEventsClusterOwnerDelivers(t *testing.T) {
	db := clusterDatabase(t)
	token := fmt.Sprintf("shared-token-%d", time.Now().UnixNano())
	start := func(name, rng string) *runningMaster {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, master.TokenFile), []byte(token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Setenv("TEMPLATEWORKER_DATABASE_URL", db)
		return startMaster(t, dir, "--thread-workers", "1", "--api-token", token,
			"--shards", "32", "--shard-range", rng, "--master-name", name,
			"--lua-timeout", "10m", "--lua-max-instructions", "100000000000", "--event-retry-backoff", "10ms")
	}
	a, b := start("a", "0-15"), start("b", "16-31")
	waitReady(t, a, b)
	ta, tb := tenantIn(3), tenantIn(20)
	// b's tenant's events wait for a key: b's backlog is pending when it
	// is killed.
	wedged := `local e, ctx = ... while not ctx.kv.get("go") do end ` + countRuns[len("local e, ctx = ... "):]
	for _, p := range []struct {
		id   proto.Id
		code string
	}{{ta, countRuns}, {tb, wedged}} {
		body, _ := json.Marshal(map[string]any{"code": p.code, "events": []string{"N"}})
		if r := a.do(t, "PUT", "/v1/tenants/"+p.id.Path()+"/templates/count", string(body)); r.status != 200 {
			t.Fatalf("put template: %d %s", r.status, r.body)
		}
	}
	accepted := map[proto.Id][]string{}
	for i := 0; i < 20; i++ {
		for _, id := range []proto.Id{ta, tb} {
			r := a.do(t, "POST", "/v1/tenants/"+id.Path()+"/events?wait=false", `{"name":"N","data":{}}`)
			if r.status != 202 {
				t.Fatalf("nowait through a: %d %s", r.status, r.body)
			}
			var res struct{ ID string }
			_ = json.Unmarshal([]byte(r.body), &res)
			accepted[id] = append(accepted[id], res.ID)
		}
	}
	waitAllRan(t, a, map[proto.Id][]string{ta: accepted[ta]})
	if n := eventsPending(t, b); n != len(accepted[tb]) {
		t.Fatalf("b holds %d pending events, want its tenant's %d", n, len(accepted[tb]))
	}
	b.stop(syscall.SIGKILL)

	// Release the wedge in the database, then start b again.
	ctx := context.Background()
	st, err := store.OpenPostgres(ctx, db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = st.KvSet(ctx, tb, "go", json.RawMessage(`true`))
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	b2 := start("b", "16-31")
	waitReady(t, a, b2)
	dups := waitAllRan(t, b2, map[proto.Id][]string{tb: accepted[tb]})
	t.Logf("b's backlog of %d events ran after its restart (%d duplicate runs)", len(accepted[tb]), dups)
	// a delivered its own tenant's events and none of b's.
	if n := metricValue(t, a, "templateworker_events_delivered_total"); n != float64(len(accepted[ta])) {
		t.Fatalf("a delivered %v events, want exactly its tenant's %d", n, len(accepted[ta]))
	}
}

// metricValue reads an unlabelled metric of m's /metrics.
func metricValue(t *testing.T, m *runningMaster, name string) float64 {
	t.Helper()
	resp, err := httpGet(m.addr + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %q", name, line)
			}
			return f
		}
	}
	t.Fatalf("metric %s missing", name)
	return 0
}

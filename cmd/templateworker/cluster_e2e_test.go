package main

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/templateworker/templateworker/internal/pgtest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/templateworker/templateworker/cluster"
	"github.com/templateworker/templateworker/master"
	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/store"
)

// clusterDatabase returns the test PostgreSQL with search_path set to a
// schema of the test's own (dropped at its end), so that masters and data
// left by other tests never count; it skips without a database (fails
// under CI=true).
func clusterDatabase(t testing.TB) string {
	t.Helper()
	dsn, _, _ := pgtest.Schema(t, pgtest.URL(t))
	return dsn
}

// startClusterMaster starts a thread-worker master owning shards rng of
// 32 on db, with the shared token (also written to its data dir, where
// startMaster reads it).
func startClusterMaster(t *testing.T, db, token, name, rng string) *runningMaster {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, master.TokenFile), []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TEMPLATEWORKER_DATABASE_URL", db)
	// --lua-timeout 10m makes the forward timeout (the call timeout + 2 s)
	// over ten minutes: an answer that waited for it cannot pass for fast.
	return startMaster(t, dir, "--thread-workers", "1", "--api-token", token,
		"--shards", "32", "--shard-range", rng, "--master-name", name, "--lua-timeout", "10m")
}

// tenantIn returns a fresh guild id in shard of 32.
func tenantIn(shard int) proto.Id {
	return proto.GuildID((uint64(time.Now().UnixNano()&0xffffff)*32+uint64(shard))<<22 | 42)
}

func waitReady(t *testing.T, masters ...*runningMaster) {
	t.Helper()
	for _, m := range masters {
		waitFor(t, time.Minute, func() bool {
			resp, err := httpGet(m.addr + "/readyz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == 200
		})
	}
}

func putTemplate(t *testing.T, m *runningMaster, id proto.Id, code string) httpResult {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"code": code, "events": []string{"Ping"}})
	r := m.do(t, "PUT", "/v1/tenants/"+id.Path()+"/templates/greet", string(body))
	if r.status != 200 {
		t.Fatalf("put template for %s through %s: %d %s", id, m.addr, r.status, r.body)
	}
	return r
}

func ping(t *testing.T, m *runningMaster, id proto.Id) httpResult {
	t.Helper()
	return m.do(t, "POST", "/v1/tenants/"+id.Path()+"/events", `{"name":"Ping","author":null,"data":{"who":"ops"}}`)
}

// clusterCLI runs `templateworker cluster` against db.
func clusterCLI(t *testing.T, db string) (string, int) {
	t.Helper()
	cmd := exec.Command(binPath, "cluster")
	cmd.Env = append(os.Environ(), "TEMPLATEWORKER_DATABASE_URL="+db)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run cluster: %v", err)
	}
	return string(out), 0
}

// TestClusterTwoMasters splits 32 shards between two masters on one
// PostgreSQL, drives each one's tenants through the other, refuses an
// overlapping third master and answers fast 503s once an owner is killed.
func TestClusterTwoMasters(t *testing.T) {
	db := clusterDatabase(t)
	token := fmt.Sprintf("shared-token-%d", time.Now().UnixNano())
	a := startClusterMaster(t, db, token, "a", "0-15")
	b := startClusterMaster(t, db, token, "b", "16-31")
	waitReady(t, a, b)

	tb, ta := tenantIn(20), tenantIn(3)
	if r := putTemplate(t, a, tb, greetLua); r.header.Get(cluster.OwnerHeader) != "b" {
		t.Fatalf("put through a for b's tenant was served by %q", r.header.Get(cluster.OwnerHeader))
	}
	for i, m := range []*runningMaster{a, b, a} {
		r := ping(t, m, tb)
		want := fmt.Sprintf(`{"result":{"greet":{"count":%d,"hello":"ops"}}}`, i+1)
		if r.status != 200 || strings.TrimSpace(r.body) != want {
			t.Fatalf("dispatch %d of b's tenant: %d %s, want %s", i, r.status, r.body, want)
		}
	}
	putTemplate(t, b, ta, greetLua)
	if r := ping(t, b, ta); r.status != 200 || r.header.Get(cluster.OwnerHeader) != "a" || !strings.Contains(r.body, `"count":1`) {
		t.Fatalf("dispatch of a's tenant through b: %d %s %v", r.status, r.body, r.header)
	}
	// KV written on b, read through a.
	if r := a.do(t, "GET", "/v1/tenants/"+tb.Path()+"/kv", ""); r.status != 200 || strings.TrimSpace(r.body) != `{"items":[{"key":"count","value":3}]}` {
		t.Fatalf("kv of b's tenant through a: %d %s", r.status, r.body)
	}
	out, code := clusterCLI(t, db)
	if code != 0 || !strings.Contains(out, "gaps: none") || !strings.Contains(out, "overlaps: none") ||
		!strings.Contains(out, a.addr) || !strings.Contains(out, " 16-31 ") {
		t.Fatalf("cluster: exit %d\n%s", code, out)
	}

	// An overlapping master is refused at start, loudly.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, binPath, "master", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--log-format", "json",
		"--thread-workers", "1", "--api-token", token, "--shards", "32", "--shard-range", "10-20", "--master-name", "c")
	c.Env = append(os.Environ(), "TEMPLATEWORKER_DATABASE_URL="+db)
	cout, err := c.CombinedOutput()
	if err == nil || !strings.Contains(string(cout), "shard range 10-20 of master c overlaps range") {
		t.Fatalf("overlapping master: %v\n%s", err, cout)
	}
	waitReady(t, a)

	// Kill b: calls for its tenants through a fail fast with
	// shard_unavailable — not after the forward timeout (over ten minutes):
	// the request may wait five minutes, the answer must come within one.
	b.stop(syscall.SIGKILL)
	start := time.Now()
	r := a.doWithin(t, 5*time.Minute, "POST", "/v1/tenants/"+tb.Path()+"/events", `{"name":"Ping","author":null,"data":{"who":"ops"}}`, true)
	took := time.Since(start)
	t.Logf("call for a killed owner answered in %s", took)
	if took > time.Minute {
		t.Fatalf("call for a killed owner answered after %s: it waited for a timeout instead of failing fast", took)
	}
	var e struct{ Error proto.Error }
	if err := json.Unmarshal([]byte(r.body), &e); err != nil || r.status != 503 || e.Error.Code != proto.CodeShardUnavailable ||
		!strings.Contains(e.Error.Message, "shard 20 ") || r.header.Get("Retry-After") == "" {
		t.Fatalf("call for a killed owner: %d %s", r.status, r.body)
	}
	if r := ping(t, a, ta); r.status != 200 {
		t.Fatalf("a's own tenant with b gone: %d %s", r.status, r.body)
	}
	// Once b's heartbeat is stale, a is not ready and says why.
	waitFor(t, time.Minute, func() bool {
		r := a.do(t, "GET", "/readyz", "")
		return r.status == 503 && strings.Contains(r.body, "shards 16-31 have no live owner")
	})
	if out, code := clusterCLI(t, db); code != 1 || !strings.Contains(out, "gaps: 16-31") || !strings.Contains(out, "gone") {
		t.Fatalf("cluster after b died: exit %d\n%s", code, out)
	}
}

// TestClusterTemplateInvalidationByNotify changes a template behind the
// masters' back, as a master that owned the tenant a moment ago would, and
// checks the owner's cached VM is dropped by the NOTIFY alone.
func TestClusterTemplateInvalidationByNotify(t *testing.T) {
	db := clusterDatabase(t)
	token := fmt.Sprintf("shared-token-%d", time.Now().UnixNano())
	a := startClusterMaster(t, db, token, "a", "0-15")
	b := startClusterMaster(t, db, token, "b", "16-31")
	waitReady(t, a, b)
	tb := tenantIn(25)
	putTemplate(t, a, tb, `return "v1"`)
	if r := ping(t, a, tb); r.status != 200 || strings.TrimSpace(r.body) != `{"result":{"greet":"v1"}}` {
		t.Fatalf("first dispatch: %d %s", r.status, r.body)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := store.Open(ctx, store.Config{DatabaseURL: db})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.PutTemplate(ctx, tb, proto.Template{Name: "greet", Code: `return "v2"`, Events: []string{"Ping"}, UpdatedAt: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	// Without a notification b keeps its VM: the change is not live yet.
	if r := ping(t, b, tb); strings.TrimSpace(r.body) != `{"result":{"greet":"v1"}}` {
		t.Fatalf("dispatch before the notification: %d %s (b does not cache VMs?)", r.status, r.body)
	}
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if err := cluster.Notify(ctx, conn, "test", tb); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() bool {
		r := ping(t, a, tb)
		return strings.TrimSpace(r.body) == `{"result":{"greet":"v2"}}`
	})
}

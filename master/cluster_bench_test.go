package master

import (
	"context"
	"github.com/templateworker/templateworker/internal/pgtest"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/cluster"
	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/store"
	"github.com/templateworker/templateworker/worker"
)

// benchSchemaURL returns the test PostgreSQL with a schema of the
// benchmark's own, skipping without one.
func benchSchemaURL(b *testing.B) string {
	if !pgtest.Set() {
		b.Skipf("%s not set", pgtest.Env)
	}
	dsn, _, _ := pgtest.Schema(b, pgtest.URL(b))
	return dsn
}

// runBenchMaster runs a thread-worker master owning rng of 32 shards in
// this process and returns its address.
func runBenchMaster(b *testing.B, db, name string, rng cluster.Range) string {
	dir := b.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{
			ThreadWorkers: 1, Listen: "127.0.0.1:0", DataDir: dir, DatabaseURL: db, APIToken: "bench",
			WorkerQueue: worker.DefaultQueueSize, Limits: worker.DefaultLimits, Quota: store.DefaultQuota,
			DispatchTimeout: 5 * time.Second, ShutdownTimeout: 5 * time.Second,
			Cluster: ClusterConfig{Shards: 32, Range: rng, Name: name},
		}, zerolog.Nop())
	}()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("master %s: %v", name, err)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if a, err := os.ReadFile(filepath.Join(dir, AddrFile)); err == nil && len(a) > 0 {
			return strings.TrimSpace(string(a))
		}
		select {
		case err := <-done:
			b.Fatalf("master %s exited: %v", name, err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	b.Fatalf("master %s did not start", name)
	return ""
}

// BenchmarkClusterDispatch compares a dispatch served by the master that
// owns the tenant with one forwarded by the other master over HTTP.
func BenchmarkClusterDispatch(b *testing.B) {
	db := benchSchemaURL(b)
	a := runBenchMaster(b, db, "bench-a", cluster.Range{Lo: 0, Hi: 15})
	runBenchMaster(b, db, "bench-b", cluster.Range{Lo: 16, Hi: 31})
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	// A learns of B on its next heartbeat: wait until it sees no gap.
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := hc.Get(a + "/readyz")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			b.Fatal("master a never saw the whole cluster")
		}
		time.Sleep(20 * time.Millisecond)
	}
	call := func(b *testing.B, method, path, body string) {
		req, _ := http.NewRequest(method, a+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer bench")
		resp, err := hc.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("%s %s: %d", method, path, resp.StatusCode)
		}
	}
	for _, c := range []struct {
		name  string
		shard uint64
	}{{"local", 3}, {"forwarded", 20}} {
		id := proto.GuildID((uint64(1000)*32+c.shard)<<22 | 1)
		call(b, "PUT", "/v1/tenants/"+id.Path()+"/templates/t", `{"code":"return 1","events":["Ping"]}`)
		path := "/v1/tenants/" + id.Path() + "/events"
		b.Run(c.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				call(b, "POST", path, `{"name":"Ping","author":null,"data":null}`)
			}
		})
	}
}

package master

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/internal/testbin"
	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/store"
	"github.com/templateworker/templateworker/worker"
)

// workerBinary returns the templateworker binary used as the process worker.
func workerBinary(t testing.TB) string { return testbin.Path(t) }

// conformanceLimits keep the limit cases fast.
var conformanceLimits = worker.Limits{MaxInstructions: 1_000_000, Timeout: 20 * time.Second, MaxMemory: 16 << 20, MaxString: 1 << 20, MaxCallDepth: 200}

// topologies builds each WorkerLike topology over a store, with the
// default --worker-concurrency (4) and with 1 (the serial worker).
var topologies = []struct {
	name  string
	start func(t testing.TB, st store.Store, n int) *Pool
}{
	{"thread", threadTopology(0)},
	{"process", processTopology(0)},
	{"thread-concurrency-1", threadTopology(1)},
	{"process-concurrency-1", processTopology(1)},
}

func threadTopology(concurrency int) func(t testing.TB, st store.Store, n int) *Pool {
	return func(t testing.TB, st store.Store, n int) *Pool {
		p, err := newThreadPool(n, worker.Options{Store: threadStore(st, nil, 0), Limits: conformanceLimits, Logger: zerolog.Nop(), Concurrency: concurrency})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Kill(context.Background()) })
		return p
	}
}

func processTopology(concurrency int) func(t testing.TB, st store.Store, n int) *Pool {
	return func(t testing.TB, st store.Store, n int) *Pool {
		cfg := ProcessConfig{
			Exe: workerBinary(t), MinUptime: time.Second, Backoff: 50 * time.Millisecond, BackoffMax: time.Second,
			MaxFailures: 10, ReadyTimeout: 30 * time.Second, DispatchTimeout: 10 * time.Second,
			QueueSize: 10000, HeartbeatInterval: time.Second, MaxFrame: 4 << 20,
			// conformanceLimits, as flags: the same 20 s Lua timeout as the
			// thread topology's, not the default 5 s, so a memory or
			// instruction limit is reached first on a busy machine too.
			Args: []string{"--log-level", "warn", "--lua-max-instructions", "1000000", "--lua-timeout", "20s", "--lua-max-memory", "16777216",
				"--lua-max-string", "1048576", "--lua-max-call-depth", "200"},
		}
		if concurrency > 0 {
			cfg.Args = append(cfg.Args, "--worker-concurrency", strconv.Itoa(concurrency))
		}
		return startTestProcessPool(t, n, st, cfg).Pool
	}
}

// startTestProcessPool starts n process workers over st and waits until
// they are ready; the pool is killed when tb ends.
func startTestProcessPool(tb testing.TB, n int, st store.Store, cfg ProcessConfig) *processPool {
	tb.Helper()
	fatal := func(err error) { tb.Errorf("process pool: %v", err) }
	pp, err := startProcessPool(n, "unix", cfg, st, NewQuarantine(3, time.Minute), zerolog.Nop(), fatal)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = pp.Kill(ctx)
	})
	deadline := time.Now().Add(30 * time.Second)
	for !pp.Ready() {
		if time.Now().After(deadline) {
			tb.Fatalf("process workers not ready: %+v", pp.Status())
		}
		time.Sleep(5 * time.Millisecond)
	}
	return pp
}

func openTestStore(t testing.TB) store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), store.Config{DataDir: t.TempDir(), Options: store.Options{Quota: store.DefaultQuota}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func put(t testing.TB, st store.Store, id proto.Id, name, code string, events ...string) {
	t.Helper()
	if err := st.PutTemplate(context.Background(), id, proto.Template{Name: name, Code: code, Events: events, UpdatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
}

func eventOf(name, data string) proto.Event { return proto.Event{Name: name, Data: proto.Value(data)} }

// TestWorkerLikeConformance runs one contract against every topology.
func TestWorkerLikeConformance(t *testing.T) {
	for _, topo := range topologies {
		t.Run(topo.name, func(t *testing.T) {
			st := openTestStore(t)
			ctx := context.Background()
			starter := proto.GuildID(77 << 22)
			put(t, st, starter, "boot", `local event, ctx = ... ctx.kv.set("boot", event.data) return true`, "OnStartup")
			pool := topo.start(t, st, 2)
			if pool.Len() != 2 {
				t.Fatalf("Len %d", pool.Len())
			}
			a, b := proto.GuildID(1<<22|5), proto.UserID(2<<22|5)
			if pool.For(a).ID() != 1 || pool.For(b).ID() != 0 {
				t.Fatalf("routing: a→%d b→%d", pool.For(a).ID(), pool.For(b).ID())
			}

			t.Run("OnStartup", func(t *testing.T) {
				waitStore(t, func() bool {
					v, ok, _ := st.KvGet(ctx, starter, "boot")
					return ok && string(v) == `{"reason":"worker_startup"}`
				})
			})
			t.Run("dispatch wait", func(t *testing.T) {
				put(t, st, a, "echo", `local event = ... return {name = event.name, who = event.data.who}`, "Ping")
				v, err := pool.DispatchEvent(ctx, a, eventOf("Ping", `{"who":"x"}`))
				if err != nil || string(v) != `{"echo":{"name":"Ping","who":"x"}}` {
					t.Fatalf("%s %v", v, err)
				}
			})
			t.Run("unknown tenant and unregistered event", func(t *testing.T) {
				for _, id := range []proto.Id{proto.GuildID(999), a} {
					v, err := pool.DispatchEvent(ctx, id, eventOf("Nobody", `{}`))
					if err != nil || string(v) != "null" {
						t.Fatalf("%s: %s %v", id, v, err)
					}
				}
			})
			t.Run("dispatch nowait and KV", func(t *testing.T) {
				put(t, st, b, "store", `local event, ctx = ... ctx.kv.set("k" .. event.data.n, event.data.n) return ctx.kv.get("k" .. event.data.n)`, "Save")
				if err := pool.DropTenant(ctx, b); err != nil {
					t.Fatal(err)
				}
				for i := 1; i <= 20; i++ {
					if err := pool.DispatchEventNoWait(b, eventOf("Save", fmt.Sprintf(`{"n":%d}`, i))); err != nil {
						t.Fatal(err)
					}
				}
				waitStore(t, func() bool {
					items, _ := st.KvFind(ctx, b, "k")
					return len(items) == 20
				})
				v, err := pool.DispatchEvent(ctx, b, eventOf("Save", `{"n":99}`))
				if err != nil || string(v) != `{"store":99}` {
					t.Fatalf("%s %v", v, err)
				}
			})
			t.Run("nowait order per tenant", func(t *testing.T) {
				// Two tenants of worker 1, their events interleaved: each
				// tenant's run in the order sent, one at a time.
				c, d := proto.GuildID(1<<22|7), proto.GuildID(3<<22|7)
				seq := `local e, ctx = ...
local last = ctx.kv.get("last") or 0
if e.data.n ~= last + 1 and ctx.kv.get("bad") == nil then ctx.kv.set("bad", {got = e.data.n, after = last}) end
ctx.kv.set("last", e.data.n)`
				for _, id := range []proto.Id{c, d} {
					put(t, st, id, "seq", seq, "Seq")
				}
				const n = 200
				for i := 1; i <= n; i++ {
					for _, id := range []proto.Id{c, d} {
						if err := pool.DispatchEventNoWait(id, eventOf("Seq", fmt.Sprintf(`{"n":%d}`, i))); err != nil {
							t.Fatal(err)
						}
					}
				}
				waitStore(t, func() bool {
					for _, id := range []proto.Id{c, d} {
						if v, ok, _ := st.KvGet(ctx, id, "last"); !ok || string(v) != strconv.Itoa(n) {
							return false
						}
					}
					return true
				})
				for _, id := range []proto.Id{c, d} {
					if v, ok, _ := st.KvGet(ctx, id, "bad"); ok {
						t.Fatalf("%s: events out of order: %s", id, v)
					}
				}
			})
			t.Run("run script", func(t *testing.T) {
				v, err := pool.RunScript(ctx, proto.UserID(12345), "adhoc", `local e, ctx = ... return {e.name, ctx.tenant.type, ctx.tenant.id}`, eventOf("Run", `null`))
				if err != nil || string(v) != `["Run","User","12345"]` {
					t.Fatalf("%s %v", v, err)
				}
			})
			t.Run("drop tenant and template change", func(t *testing.T) {
				put(t, st, a, "count", `n = (n or 0) + 1 return n`, "Count")
				_ = pool.DropTenant(ctx, a)
				for i := 1; i <= 2; i++ {
					v, err := pool.DispatchEvent(ctx, a, eventOf("Count", `{}`))
					if err != nil || string(v) != fmt.Sprintf(`{"count":%d}`, i) {
						t.Fatalf("%s %v", v, err)
					}
				}
				put(t, st, a, "count", `return "v2"`, "Count")
				if err := pool.DropTenant(ctx, a); err != nil {
					t.Fatal(err)
				}
				v, err := pool.DispatchEvent(ctx, a, eventOf("Count", `{}`))
				if err != nil || string(v) != `{"count":"v2"}` {
					t.Fatalf("after change: %s %v", v, err)
				}
			})
			t.Run("errors", func(t *testing.T) {
				put(t, st, a, "fail", "\nerror('nope')", "Err")
				put(t, st, a, "pass", `return 1`, "Err")
				_ = pool.DropTenant(ctx, a)
				_, err := pool.DispatchEvent(ctx, a, eventOf("Err", `{}`))
				pe := proto.AsError(err)
				if pe.Code != proto.CodeScriptError || !strings.Contains(pe.Message, `fail:2: nope`) || string(pe.Results) != `{"fail":null,"pass":1}` {
					t.Fatalf("script error: %+v", pe)
				}
				_, err = pool.RunScript(ctx, a, "spin", `while true do end`, eventOf("x", ``))
				if pe := proto.AsError(err); pe.Code != proto.CodeCPULimit || !strings.Contains(pe.Message, "1000000") {
					t.Fatalf("cpu limit: %v", err)
				}
				_, err = pool.DispatchEvent(ctx, a, proto.Event{Name: ""})
				if proto.CodeOf(err) != proto.CodeBadRequest {
					t.Fatalf("empty event name: %v", err)
				}
				_, err = pool.RunScript(ctx, a, "syntax", `return (`, eventOf("x", ``))
				if proto.CodeOf(err) != proto.CodeCompileError {
					t.Fatalf("compile error: %v", err)
				}
			})
		})
	}
}

// hostileInBothTopologies is the sandbox corpus's core, run through each
// topology: the exact code, a clear message, and a neighbour on the same
// worker served right after.
var hostileInBothTopologies = []struct{ name, code, wantCode, wantMsg string }{
	{"infinite loop", `while true do end`, proto.CodeCPULimit, "1000000 instructions"},
	{"pcall swallows the limit", `while true do pcall(function() while true do end end) end`, proto.CodeCPULimit, "instruction limit"},
	{"string doubling", `local s = "x" while true do s = s .. s end`, proto.CodeMemoryLimit, "1048576 bytes"},
	{"table growth", `local t = {} while true do t[#t + 1] = {1, 2, 3} end`, proto.CodeMemoryLimit, "16777216 bytes"},
	{"deep recursion", `local function f() return 1 + f() end return f()`, proto.CodeStackOverflow, "200"},
	{"pattern bomb", `return string.find(string.rep("a", 30000), string.rep("a*", 20) .. "b")`, proto.CodeCPULimit, "instruction limit"},
	{"io", `return io.open("/etc/passwd")`, proto.CodeScriptError, "nil value"},
	{"bytecode", `return assert(load("\27LuaR\0\1\4\8\4\8\0"))()`, proto.CodeScriptError, "binary chunk"},
}

func TestHostileScriptsInBothTopologies(t *testing.T) {
	for _, topo := range topologies {
		t.Run(topo.name, func(t *testing.T) {
			st := openTestStore(t)
			pool := topo.start(t, st, 2)
			ctx := context.Background()
			hostile, neighbour := proto.GuildID(1<<22|1), proto.GuildID(3<<22|1) // both on worker 1
			put(t, st, neighbour, "ok", `return "fine"`, "Ping")
			for _, c := range hostileInBothTopologies {
				_, err := pool.RunScript(ctx, hostile, "hostile", c.code, eventOf("x", ``))
				pe := proto.AsError(err)
				if err == nil || pe.Code != c.wantCode || !strings.Contains(pe.Message, c.wantMsg) {
					t.Errorf("%s: got %.300v; want %s containing %q", c.name, err, c.wantCode, c.wantMsg)
				}
				if v, err := pool.DispatchEvent(ctx, neighbour, eventOf("Ping", `{}`)); err != nil || string(v) != `{"ok":"fine"}` {
					t.Fatalf("%s: neighbour: %s %v", c.name, v, err)
				}
			}
		})
	}
}

func waitStore(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDropAllInBothTopologies: Pool.DropAll discards every tenant VM of
// every worker, so the next calls start fresh.
func TestDropAllInBothTopologies(t *testing.T) {
	for _, topo := range topologies {
		t.Run(topo.name, func(t *testing.T) {
			st := openTestStore(t)
			pool := topo.start(t, st, 2)
			ctx := context.Background()
			ids := []proto.Id{proto.GuildID(1 << 22), proto.GuildID(2 << 22)}
			for _, id := range ids {
				put(t, st, id, "count", `n = (n or 0) + 1 return n`, "Count")
				for i := 1; i <= 2; i++ {
					if v, err := pool.DispatchEvent(ctx, id, eventOf("Count", `{}`)); err != nil || string(v) != fmt.Sprintf(`{"count":%d}`, i) {
						t.Fatalf("%s: %s %v", id, v, err)
					}
				}
			}
			if err := pool.DropAll(ctx); err != nil {
				t.Fatal(err)
			}
			for _, id := range ids {
				if v, err := pool.DispatchEvent(ctx, id, eventOf("Count", `{}`)); err != nil || string(v) != `{"count":1}` {
					t.Fatalf("%s after DropAll: %s %v", id, v, err)
				}
			}
		})
	}
}

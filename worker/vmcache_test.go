package worker

import (
	"context"
	"encoding/json"
	"runtime"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
)

// counterTemplate keeps a Lua global (lost on eviction) and a KV counter
// (kept), and returns both.
const counterTemplate = `local event, ctx = ...
calls = (calls or 0) + 1
local n = (ctx.kv.get("n") or 0) + 1
ctx.kv.set("n", n)
return {calls = calls, n = n}`

func guild(i int) proto.Id { return proto.GuildID(uint64(i) << 22) }

// fakeClock is a settable clock for the cache's idle TTL.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newCacheManager(t *testing.T, s Store, c CacheOptions) (*Manager, *fakeClock) {
	t.Helper()
	m := NewManager(0, 1, s, DefaultLimits, zerolog.Nop())
	m.SetCache(c)
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	m.now = clk.now
	return m, clk
}

// counts dispatches Ping to id and returns (calls, n) of counterTemplate.
func counts(t *testing.T, m *Manager, id proto.Id) (calls, n int) {
	t.Helper()
	v, err := m.Dispatch(context.Background(), id, ev("Ping", "{}"))
	if err != nil {
		t.Fatalf("dispatch %s: %v", id, err)
	}
	var out map[string]struct{ Calls, N int }
	if err := json.Unmarshal(v, &out); err != nil {
		t.Fatalf("result %s: %v", v, err)
	}
	return out["c"].Calls, out["c"].N
}

func TestVMCacheEvictsLeastRecentlyUsed(t *testing.T) {
	s := newMemStore()
	for i := 1; i <= 4; i++ {
		s.put(guild(i), "c", counterTemplate, "Ping")
	}
	m, clk := newCacheManager(t, s, CacheOptions{MaxTenants: 3})
	for i := 1; i <= 3; i++ {
		counts(t, m, guild(i))
		clk.advance(time.Second)
	}
	counts(t, m, guild(1)) // 1 is now the most recent; 2 the least
	if got := m.Loaded(); got != 3 {
		t.Fatalf("loaded %d, want 3", got)
	}
	counts(t, m, guild(4)) // evicts 2
	st := m.Stats().Snapshot()
	if m.Loaded() != 3 || st.EvictionsLRU != 1 || st.VMs != 3 {
		t.Fatalf("loaded %d, stats %+v; want 3 VMs and one LRU eviction", m.Loaded(), st)
	}
	if _, ok := m.tenants[guild(2)]; ok {
		t.Fatalf("tenant 2 (least recently used) was not the one evicted")
	}
	// The evicted tenant's next event is served by a fresh VM: its Lua
	// global starts again, its KV does not.
	calls, n := counts(t, m, guild(2))
	if calls != 1 || n != 2 {
		t.Fatalf("evicted tenant: calls=%d n=%d, want a fresh VM (calls=1) and intact KV (n=2)", calls, n)
	}
	// Tenant 1 was used recently and kept its VM until now.
	if _, ok := m.tenants[guild(1)]; !ok {
		t.Fatalf("recently used tenant 1 was evicted")
	}
	if st := m.Stats().Snapshot(); st.ColdStarts != 5 {
		t.Fatalf("cold starts %d, want 5 (4 first builds + 1 after eviction)", st.ColdStarts)
	}
}

func TestVMCacheEvictsIdleTenants(t *testing.T) {
	s := newMemStore()
	for i := 1; i <= 3; i++ {
		s.put(guild(i), "c", counterTemplate, "Ping")
	}
	m, clk := newCacheManager(t, s, CacheOptions{IdleTTL: time.Minute})
	counts(t, m, guild(1))
	counts(t, m, guild(2))
	clk.advance(45 * time.Second)
	counts(t, m, guild(3))
	counts(t, m, guild(1))
	if n := m.Sweep(); n != 0 {
		t.Fatalf("swept %d tenants before any was idle for the TTL", n)
	}
	clk.advance(30 * time.Second) // 2 idle 75 s; 1 and 3 idle 30 s
	if n := m.Sweep(); n != 1 {
		t.Fatalf("swept %d, want 1", n)
	}
	if _, ok := m.tenants[guild(2)]; ok {
		t.Fatalf("idle tenant 2 still loaded")
	}
	if st := m.Stats().Snapshot(); st.EvictionsIdle != 1 || st.VMs != 2 {
		t.Fatalf("stats %+v", st)
	}
	calls, n := counts(t, m, guild(2))
	if calls != 1 || n != 2 {
		t.Fatalf("after idle eviction: calls=%d n=%d, want 1 and 2", calls, n)
	}
}

// hookStore runs a hook during a tenant's KV get, i.e. while that tenant's
// template is running.
type hookStore struct {
	*memStore
	during proto.Id
	hook   func()
}

func (s *hookStore) KvGet(ctx context.Context, id proto.Id, key string) (json.RawMessage, bool, error) {
	if id == s.during && s.hook != nil {
		h := s.hook
		s.hook = nil
		h()
	}
	return s.memStore.KvGet(ctx, id, key)
}

func TestVMCacheNeverEvictsARunningVM(t *testing.T) {
	ms := newMemStore()
	for i := 1; i <= 6; i++ {
		ms.put(guild(i), "c", counterTemplate, "Ping")
	}
	s := &hookStore{memStore: ms, during: guild(1)}
	m, clk := newCacheManager(t, s, CacheOptions{MaxTenants: 2, IdleTTL: time.Minute})
	counts(t, m, guild(1)) // calls=1
	// While tenant 1's template runs (inside its kv.get), the cache is
	// forced to evict: by count (other tenants fill it) and by idle time.
	s.hook = func() {
		clk.advance(time.Hour)
		m.Sweep()
		for i := 2; i <= 6; i++ {
			counts(t, m, guild(i))
		}
		m.Sweep()
	}
	calls, _ := counts(t, m, guild(1))
	if calls != 2 {
		t.Fatalf("running tenant's VM was replaced: calls=%d, want 2", calls)
	}
	if st := m.Stats().Snapshot(); st.EvictionsLRU == 0 {
		t.Fatalf("no LRU eviction happened, the test proves nothing: %+v", st)
	}
}

func TestVMCacheBoundsTenantsWithoutTemplates(t *testing.T) {
	m, _ := newCacheManager(t, newMemStore(), CacheOptions{MaxTenants: 10})
	for i := 1; i <= 100; i++ {
		if _, err := m.Dispatch(context.Background(), guild(i), ev("Ping", "{}")); err != nil {
			t.Fatal(err)
		}
	}
	if len(m.tenants) > 10 || m.lru.Len() != len(m.tenants) {
		t.Fatalf("%d tenants cached (lru %d), want at most 10", len(m.tenants), m.lru.Len())
	}
}

func TestThreadSweepsIdleTenants(t *testing.T) {
	s := newMemStore()
	s.put(g1, "c", counterTemplate, "Ping")
	w, err := New(0, 1, Options{Store: s, NoStartup: true, Cache: CacheOptions{IdleTTL: time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Kill(context.Background())
	if _, err := w.DispatchEvent(context.Background(), g1, ev("Ping", "{}")); err != nil {
		t.Fatal(err)
	}
	// The sweeper runs every second at the least: wait for its eviction.
	deadline := time.Now().Add(2 * time.Minute)
	for w.CacheStats().EvictionsIdle == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no idle eviction: %+v", w.CacheStats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st := w.CacheStats(); st.VMs != 0 {
		t.Fatalf("stats %+v, want no VM left", st)
	}
}

func TestCacheOptionsDefaults(t *testing.T) {
	for _, tc := range []struct {
		in       CacheOptions
		max      int
		ttl      time.Duration
		describe string
	}{
		{CacheOptions{}, DefaultVMCacheMax, DefaultVMIdleTTL, "zero"},
		{CacheOptions{MaxTenants: -1, IdleTTL: -1}, 0, 0, "off"},
		{CacheOptions{MaxTenants: 5, IdleTTL: time.Second}, 5, time.Second, "set"},
	} {
		got := tc.in.withDefaults()
		if got.MaxTenants != tc.max || got.IdleTTL != tc.ttl {
			t.Errorf("%s: %+v", tc.describe, got)
		}
	}

}

func TestThreadEvictsIdleVMsAboveTheMemoryBudget(t *testing.T) {
	s := newMemStore()
	// Each tenant keeps about 8 MiB alive in a global between events.
	const hog = `local event = ...
big = big or string.rep(string.rep("x", 4096), 2048)
calls = (calls or 0) + 1
return calls`
	for i := 1; i <= 12; i++ {
		s.put(guild(i), "h", hog, "Ping")
	}
	runtime.GC()
	budget := gcLiveHeap() + 48<<20
	w, err := New(0, 1, Options{Store: s, NoStartup: true, MemoryMax: budget,
		Cache: CacheOptions{IdleTTL: -1}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Kill(context.Background())
	calls := func(i int) string {
		t.Helper()
		v, err := w.DispatchEvent(context.Background(), guild(i), ev("Ping", "{}"))
		if err != nil {
			t.Fatalf("tenant %d: %v", i, err)
		}
		return string(v)
	}
	t0 := time.Now()
	for i := 1; i <= 12; i++ {
		calls(i)
	}
	t.Logf("dispatched in %s", time.Since(t0))
	// 96 MiB of tenant data against a 48 MiB headroom: the worker must
	// evict, oldest first, until its live heap is under the budget.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		runtime.GC()
		st := w.CacheStats()
		if st.EvictionsMemory > 0 && gcLiveHeap() < budget {
			t.Logf("evicted %+v after %s", st, time.Since(t0))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no memory eviction brought the heap (%d) under the budget (%d): %+v", gcLiveHeap(), budget, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The most recent tenant kept its VM; the oldest was evicted and is
	// served again by a fresh one.
	if got := calls(12); got != `{"h":2}` {
		t.Fatalf("most recently used tenant: %s, want its VM kept", got)
	}
	if got := calls(1); got != `{"h":1}` {
		t.Fatalf("least recently used tenant: %s, want a fresh VM", got)
	}
}

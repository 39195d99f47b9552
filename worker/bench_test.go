package worker

import (
	"context"
	"encoding/json"
	"runtime"
	"strings"
	"testing"

	lua "github.com/Shopify/go-lua"
	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
)

// benchTemplates are three typical templates: a KV counter, an echo and a
// small loop.
var benchTemplates = []proto.Template{
	{Name: "greet", Events: []string{"Ping"}, Code: `local event, ctx = ...
local n = (ctx.kv.get("greetings") or 0) + 1
ctx.kv.set("greetings", n)
return { hello = event.data.who, count = n }`},
	{Name: "echo", Events: []string{"Echo"}, Code: `local event = ...
return { name = event.name, data = event.data }`},
	{Name: "loop", Events: []string{"Loop"}, Code: `local s = 0 for i = 1, 100 do s = s + i end return s`},
}

// BenchmarkNewVM creates a tenant VM with every library and the host API,
// and compiles three templates into it: the cost of a tenant's first event
// when no other VM of the process has loaded its templates (the process's
// compiled templates are emptied before each VM).
func BenchmarkNewVM(b *testing.B) { benchNewVM(b, false) }

// BenchmarkNewVMSharedTemplates is BenchmarkNewVM with the three templates
// already compiled in the process (another tenant with the same sources):
// each VM loads the shared chunks.
func BenchmarkNewVMSharedTemplates(b *testing.B) { benchNewVM(b, true) }

func benchNewVM(b *testing.B, shared bool) {
	st := newMemStore()
	b.ReportAllocs()
	hits := compiledTemplates.reset()
	n := 0
	for b.Loop() {
		if !shared {
			compiledTemplates.reset()
		}
		vm, err := newVM(proto.GuildID(1), st, DefaultLimits, zerolog.Nop())
		if err != nil {
			b.Fatal(err)
		}
		for i := range benchTemplates {
			if err := vm.pushTemplate(&benchTemplates[i]); err != nil {
				b.Fatal(err)
			}
			vm.l.Pop(1)
		}
		n++
	}
	// What the benchmark claims: compiled each time, or loaded shared
	// (all but the first VM's three).
	got := compiledTemplates.reset() - hits
	if want := int64(3 * (n - 1)); !shared && got != 0 || shared && got != want {
		b.Fatalf("%d templates loaded from the compiled ones of the process over %d VMs (shared %v)", got, n, shared)
	}
}

// idleStore gives every tenant its own copy of the greet template (as a
// database would) and keeps no KV.
type idleStore struct{ memStore }

func (s *idleStore) Templates(ctx context.Context, id proto.Id) ([]proto.Template, error) {
	t := benchTemplates[0]
	t.Code = strings.Clone(t.Code)
	return []proto.Template{t}, nil
}

func (s *idleStore) KvGet(ctx context.Context, id proto.Id, key string) (json.RawMessage, bool, error) {
	return nil, false, nil
}

func (s *idleStore) KvSet(ctx context.Context, id proto.Id, key string, v json.RawMessage) error {
	return nil
}

// idleTenants is how many tenants BenchmarkIdleTenantHeap loads.
const idleTenants = 10_000

// BenchmarkIdleTenantHeap loads idleTenants tenants on one Manager (one
// Ping each: VM built, template compiled and run once) and reports the live
// heap each idle tenant keeps, after a full GC, as bytes/tenant.
func BenchmarkIdleTenantHeap(b *testing.B) {
	ctx := context.Background()
	ev := proto.Event{Name: "Ping", Data: proto.Value(`{"who":"ops"}`)}
	var perTenant float64
	for b.Loop() {
		st := &idleStore{}
		before := liveHeap()
		m := NewManager(0, 1, st, DefaultLimits, zerolog.Nop())
		for i := range idleTenants {
			if _, err := m.Dispatch(ctx, proto.GuildID(uint64(i+1)), ev); err != nil {
				b.Fatal(err)
			}
		}
		after := liveHeap()
		if m.Loaded() != idleTenants {
			b.Fatalf("%d tenants loaded", m.Loaded())
		}
		perTenant = float64(after-before) / idleTenants
		runtime.KeepAlive(m)
	}
	b.ReportMetric(perTenant, "bytes/tenant")
}

// liveHeap is the heap in use after a full collection.
func liveHeap() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkVMCall splits the Lua part of a dispatch: the loop chunk on a
// bare State, with the count hook, with the limits patch's accounting, and
// as a template of a full tenant VM (event table, protected call, JSON
// result).
func BenchmarkVMCall(b *testing.B) {
	code := benchTemplates[2].Code
	bare := func(b *testing.B, setup func(l *lua.State)) {
		l := lua.NewState()
		setup(l)
		if err := lua.LoadString(l, code); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			l.PushValue(-1)
			l.Call(0, 1)
			l.Pop(1)
		}
	}
	b.Run("bare", func(b *testing.B) { bare(b, func(*lua.State) {}) })
	b.Run("hook", func(b *testing.B) {
		bare(b, func(l *lua.State) { lua.SetDebugHook(l, func(*lua.State, lua.Debug) {}, lua.MaskCount, hookEvery) })
	})
	b.Run("limits", func(b *testing.B) {
		bare(b, func(l *lua.State) {
			lua.SetLimits(l, lua.Limits{MaxStringLength: DefaultLimits.MaxString, MaxCallDepth: DefaultLimits.MaxCallDepth,
				MaxMemory: DefaultLimits.MaxMemory, OnLimit: func(*lua.State, string, int64) {}})
		})
	})
	b.Run("template", func(b *testing.B) {
		vm, err := newVM(proto.GuildID(1), newMemStore(), DefaultLimits, zerolog.Nop())
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		ev := proto.Event{Name: "Loop", Data: proto.Value(`{}`)}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := vm.runTemplate(ctx, &benchTemplates[2], ev); err != nil {
				b.Fatal(err)
			}
		}
	})
}

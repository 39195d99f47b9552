package master

import (
	"context"
	"encoding/json"
	"testing"

	lua "github.com/Shopify/go-lua"
	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/worker"
)

// loopChunk is the Lua floor of the dispatch benchmarks: a 100-iteration
// numeric loop.
const loopChunk = `local s = 0 for i = 1, 100 do s = s + i end return s`

// BenchmarkRawLuaCall calls the compiled chunk directly on a bare go-lua
// State: the floor every dispatch is compared with.
func BenchmarkRawLuaCall(b *testing.B) {
	l := lua.NewState()
	if err := lua.LoadString(l, loopChunk); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		l.PushValue(-1)
		l.Call(0, 1)
		l.Pop(1)
	}
}

// benchStore serves one template to every tenant and keeps no KV.
type benchStore struct{ code string }

func (s benchStore) Templates(ctx context.Context, id proto.Id) ([]proto.Template, error) {
	return []proto.Template{{Name: "loop", Code: s.code, Events: []string{"Ping"}}}, nil
}
func (s benchStore) TenantsWithEvent(ctx context.Context, event string) ([]proto.Id, error) {
	return nil, nil
}
func (s benchStore) KvGet(ctx context.Context, id proto.Id, key string) (json.RawMessage, bool, error) {
	return nil, false, nil
}
func (s benchStore) KvSet(ctx context.Context, id proto.Id, key string, v json.RawMessage) error {
	return nil
}
func (s benchStore) KvDelete(ctx context.Context, id proto.Id, key string) error { return nil }
func (s benchStore) KvFind(ctx context.Context, id proto.Id, prefix string) ([]proto.KVItem, error) {
	return nil, nil
}

// BenchmarkDispatchThread dispatches the same chunk as a template through
// a thread-topology Pool: routing, queueing, the VM cache, limits and the
// JSON result included.
func BenchmarkDispatchThread(b *testing.B) {
	pool, err := newThreadPool(2, worker.Options{Store: benchStore{code: loopChunk}, Logger: zerolog.Nop(), NoStartup: true})
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Kill(context.Background())
	ctx := context.Background()
	id := proto.GuildID(1234567890123456789)
	ev := proto.Event{Name: "Ping", Data: proto.Value(`{}`)}
	if _, err := pool.DispatchEvent(ctx, id, ev); err != nil {
		b.Fatal(err)
	}
	b.Run("sequential", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, err := pool.DispatchEvent(ctx, id, ev); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel64", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(32)                                              // 2 cores × 32 = 64 callers
		ids := []proto.Id{proto.GuildID(1 << 22), proto.GuildID(2 << 22)} // one per worker
		b.RunParallel(func(pb *testing.PB) {
			n := 0
			for pb.Next() {
				n++
				if _, err := pool.DispatchEvent(ctx, ids[n%2], ev); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}

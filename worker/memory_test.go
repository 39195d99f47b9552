package worker

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
)

// holdCode makes a tenant keep about 4 MiB of distinct strings in a global.
const holdCode = `data = {} local s = string.rep("x", 65536)
for i = 1, 64 do data[i] = s .. i end
return #data`

// TestWorkerMemoryCeiling: 12 tenants each holding 4 MiB on a worker whose
// ceiling is 24 MiB (each VM may hold 16 MiB): the tenants whose
// allocation crosses the ceiling get memory_limit naming the worker limit;
// the others keep their data and are served; a tenant that drops its data
// makes room.
func TestWorkerMemoryCeiling(t *testing.T) {
	lim := Limits{
		MaxInstructions: 50_000_000,
		Timeout:         time.Minute,
		MaxMemory:       16 << 20,
		MaxString:       1 << 20,
		MaxCallDepth:    200,
		MaxWorkerMemory: 24 << 20,
	}
	m := NewManager(0, 1, newMemStore(), lim, zerolog.Nop())
	ctx := context.Background()
	var held, refused []proto.Id
	for i := 1; i <= 12; i++ {
		id := proto.GuildID(uint64(i) << 22)
		v, err := m.RunScript(ctx, id, "hold", holdCode, ev("x", ""))
		switch {
		case err == nil && string(v) == "64":
			held = append(held, id)
		case proto.CodeOf(err) == proto.CodeMemoryLimit && strings.Contains(err.Error(), "worker memory limit exceeded (25165824 bytes"):
			refused = append(refused, id)
		default:
			t.Fatalf("tenant %d: %s %v", i, v, err)
		}
	}
	// 4 MiB each (ReachableBytes says a little more) under 24 MiB: 5 fit,
	// or 6 when the sixth's last allocations fall between two of the
	// pool's checks (a VM's own libraries, shared by all VMs, add nearly
	// nothing to the 4 MiB).
	if len(held) < 5 || len(held) > 6 || held[len(held)-1] != proto.GuildID(uint64(len(held))<<22) {
		t.Fatalf("held %d, refused %d: want the first tenants to fit and the later ones refused", len(held), len(refused))
	}
	if used := m.MemoryUsed(); used > lim.MaxWorkerMemory+lim.MaxWorkerMemory/4 {
		t.Fatalf("worker memory %d, ceiling %d", used, lim.MaxWorkerMemory)
	}
	for _, id := range held {
		if v, err := m.RunScript(ctx, id, "read", `return #data`, ev("x", "")); err != nil || string(v) != "64" {
			t.Fatalf("%s lost its data: %s %v", id, v, err)
		}
	}
	// A refused tenant's VM was discarded: its next call runs in a fresh VM.
	if v, err := m.RunScript(ctx, refused[0], "read", `return data == nil`, ev("x", "")); err != nil || string(v) != "true" {
		t.Fatalf("refused tenant: %s %v", v, err)
	}
	// Two holders drop their data (allocating nothing): a refused tenant
	// now fits, without the stale shares failing it.
	for _, id := range held[:2] {
		if _, err := m.RunScript(ctx, id, "drop", `data = nil local a, b, c, d, e, f = 1, 2, 3, 4, 5, 6 return 1`, ev("x", "")); err != nil {
			t.Fatal(err)
		}
	}
	if v, err := m.RunScript(ctx, refused[0], "hold", holdCode, ev("x", "")); err != nil || string(v) != "64" {
		t.Fatalf("after two tenants dropped their data: %s %v", v, err)
	}
	// Dropping a tenant releases its share.
	before := m.MemoryUsed()
	m.Drop(held[2])
	if after := m.MemoryUsed(); after >= before {
		t.Fatalf("Drop: worker memory %d, then %d", before, after)
	}
}

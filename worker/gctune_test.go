package worker

import "testing"

// TestMemoryLimitPolicy: the limit of a bounded cache covers a full cache
// of idle VMs, follows a live heap above it with a quarter of headroom,
// and an unbounded cache sets none.
func TestMemoryLimitPolicy(t *testing.T) {
	if CacheMemoryLimit(0) != 0 || CacheMemoryLimit(-1) != 0 {
		t.Fatal("an unbounded cache must not set a limit")
	}
	floor := CacheMemoryLimit(20000)
	if floor < 20000*9<<10 || floor > 256<<20 {
		t.Fatalf("limit for 20,000 VMs: %d", floor)
	}
	if got := tunedLimit(floor, 100<<20); got != floor {
		t.Fatalf("live heap under the floor: limit %d, want %d", got, floor)
	}
	if got := tunedLimit(floor, 400<<20); got != 500<<20 {
		t.Fatalf("live heap 400 MiB: limit %d, want 500 MiB", got)
	}
}

package lua

import (
	"strconv"
	"strings"
	"testing"
)

// This file tests the MemoryPool of the limits patch (see PATCHES.md).

// poolState is a State with a per-State limit and a shared pool.
func poolState(t *testing.T, pool *MemoryPool, kinds *[]string) *State {
	t.Helper()
	l := NewState()
	OpenLibraries(l)
	SetLimits(l, Limits{MaxMemory: 16 << 20, Pool: pool, OnLimit: func(_ *State, kind string, _ int64) {
		*kinds = append(*kinds, kind)
	}})
	return l
}

// hold makes l keep about mib MiB of distinct strings in the global data.
func hold(l *State, mib int) error {
	return DoString(l, `data = {} local s = string.rep("x", 65536)
		for i = 1, `+strconv.Itoa(mib*16)+` do data[i] = s .. i end`)
}

// TestMemoryPoolCeiling: States whose own limits allow more than the pool
// share it; the one whose allocation takes the pool over its ceiling gets
// the pool's error, the others keep their data.
func TestMemoryPoolCeiling(t *testing.T) {
	pool := NewMemoryPool(24 << 20)
	var kinds []string
	var states []*State
	for i := 0; i < 5; i++ {
		l := poolState(t, pool, &kinds)
		if err := hold(l, 4); err != nil {
			t.Fatalf("state %d holding 4 MiB: %v", i, err)
		}
		states = append(states, l)
	}
	if used := pool.Used(); used < 16<<20 || used > 24<<20 {
		t.Fatalf("pool used %d after 5 states of 4 MiB", used)
	}
	l := poolState(t, pool, &kinds)
	err := hold(l, 8)
	if err == nil || !strings.Contains(err.Error(), "not enough memory (worker limit 25165824 bytes)") {
		t.Fatalf("the state crossing the pool: %v", err)
	}
	if len(kinds) != 1 || kinds[0] != "pool" {
		t.Fatalf("OnLimit kinds %q, want [pool]", kinds)
	}
	for i, s := range states {
		if err := DoString(s, `assert(#data == 64)`); err != nil {
			t.Errorf("state %d lost its data: %v", i, err)
		}
	}
	// Leaving frees the share: the crossing state's data no longer counts.
	LeavePool(l)
	before := pool.Used()
	LeavePool(states[0])
	if after := pool.Used(); after >= before {
		t.Fatalf("LeavePool: used %d, then %d", before, after)
	}
	l2 := poolState(t, pool, &kinds)
	if err := hold(l2, 4); err != nil {
		t.Fatalf("after a member left: %v", err)
	}
}

// TestMemoryPoolStaleShares: a member that dropped its data allocates
// nothing, so its last measured share is stale; the pool measures it again
// before failing another member.
func TestMemoryPoolStaleShares(t *testing.T) {
	pool := NewMemoryPool(24 << 20)
	var kinds []string
	a := poolState(t, pool, &kinds)
	if err := hold(a, 12); err != nil {
		t.Fatal(err)
	}
	// Dropping the data, and overwriting the stack slots where the chunk
	// that built it left it (ReachableBytes walks whole stack slices).
	if err := DoString(a, `data = nil local a, b, c, d, e, f, g, h = 1, 2, 3, 4, 5, 6, 7, 8`); err != nil {
		t.Fatal(err)
	}
	b := poolState(t, pool, &kinds)
	if err := hold(b, 14); err != nil {
		t.Fatalf("the pool failed b for a's garbage: %v", err)
	}
	if len(kinds) != 0 {
		t.Fatalf("OnLimit kinds %q, want none", kinds)
	}
	if used := pool.Used(); used > 20<<20 {
		t.Fatalf("pool used %d: a's stale share was kept", used)
	}
}

// TestMemoryPoolOwnLimitFirst: a State over its own MaxMemory gets its own
// error, not the pool's.
func TestMemoryPoolOwnLimitFirst(t *testing.T) {
	pool := NewMemoryPool(1 << 30)
	var kinds []string
	l := poolState(t, pool, &kinds)
	err := hold(l, 32)
	if err == nil || !strings.Contains(err.Error(), "not enough memory (limit 16777216 bytes)") {
		t.Fatalf("got %v", err)
	}
	if len(kinds) != 1 || kinds[0] != "memory" {
		t.Fatalf("OnLimit kinds %q", kinds)
	}
}

// TestMemoryPoolConcurrentMembers: members that run at the same time on
// different goroutines, each between EnterPool and ExitPool, share the
// ceiling without measuring each other (go test -race checks that they
// never touch each other's State); the one crossing the ceiling gets the
// pool's error.
func TestMemoryPoolConcurrentMembers(t *testing.T) {
	pool := NewMemoryPool(24 << 20)
	const n = 4
	errs := make(chan error, n)
	kinds := make([][]string, n)
	states := make([]*State, n)
	for i := range states {
		states[i] = poolState(t, pool, &kinds[i])
	}
	for _, l := range states {
		go func() {
			EnterPool(l)
			defer ExitPool(l)
			// 4 × 8 MiB is over the 24 MiB ceiling: someone must fail.
			errs <- hold(l, 8)
		}()
	}
	failed := 0
	for range states {
		if err := <-errs; err != nil {
			if !strings.Contains(err.Error(), "worker limit 25165824 bytes") {
				t.Fatalf("unexpected error: %v", err)
			}
			failed++
		}
	}
	if failed == 0 {
		t.Fatal("4 members holding 8 MiB each all fit a 24 MiB pool")
	}
	// Each running member may overshoot by one step: max(24 MiB/64, live/4).
	if used := pool.Used(); used > 24<<20+n*(2<<20+1<<20) {
		t.Fatalf("pool used %d, over the ceiling by more than one step per running member", used)
	}
}

package drill

import "testing"

// TestDrillTenantsRouting: every drill tenant routes to the worker it is
// listed under, lies in the drill range, and no tenant repeats.
func TestDrillTenantsRouting(t *testing.T) {
	_, start, err := newRunID()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{1, 2, 3, 8, 64} {
		for _, start := range []uint64{0, start, 1<<40 - 1} {
			tenants := drillTenants(start, n, 3)
			seen := make(map[uint64]bool)
			if len(tenants) != n {
				t.Fatalf("n=%d: %d worker lists", n, len(tenants))
			}
			for w, ts := range tenants {
				if len(ts) != 3 {
					t.Fatalf("n=%d: worker %d has %d tenants, want 3", n, w, len(ts))
				}
				for _, id := range ts {
					if got := id.WorkerID(n); got != w {
						t.Errorf("n=%d: %s routes to worker %d, listed under %d", n, id, got, w)
					}
					if id.ID < TenantBase || seen[id.ID] {
						t.Errorf("n=%d: %s is outside the drill range or repeated", n, id)
					}
					seen[id.ID] = true
				}
			}
		}
	}
}

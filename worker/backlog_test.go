package worker

import (
	"testing"

	"github.com/templateworker/templateworker/proto"
)

func TestBacklogSharesPerTenant(t *testing.T) {
	var b Backlog
	a, n := proto.GuildID(1), proto.GuildID(2)
	// Bytes: a quarter of 400 per tenant, 400 for the worker.
	if err := b.Hold(0, a, 100, 400, 0); err != nil {
		t.Fatal(err)
	}
	if err := b.Hold(0, a, 1, 400, 0); proto.CodeOf(err) != proto.CodeBacklogFull {
		t.Fatalf("over the tenant's byte share: %v", err)
	}
	for _, id := range []proto.Id{n, proto.GuildID(3), proto.GuildID(4)} {
		if err := b.Hold(0, id, 100, 400, 0); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
	}
	if err := b.Hold(0, proto.GuildID(5), 1, 400, 0); proto.CodeOf(err) != proto.CodeBacklogFull {
		t.Fatalf("over the worker's bytes: %v", err)
	}
	b.Release(a, 100)
	if err := b.Hold(0, a, 100, 400, 0); err != nil {
		t.Fatalf("after release: %v", err)
	}
	// Events: a quarter of 8 per tenant.
	var c Backlog
	for i := 0; i < 2; i++ {
		if err := c.Hold(0, a, 1, 0, 8); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Hold(0, a, 1, 0, 8); proto.CodeOf(err) != proto.CodeBacklogFull {
		t.Fatalf("over the tenant's event share: %v", err)
	}
	if err := c.Hold(0, n, 1, 0, 8); err != nil {
		t.Fatalf("neighbour: %v", err)
	}
	c.Release(a, 1)
	c.Release(a, 1)
	c.Release(n, 1)
	if c.Bytes() != 0 || len(c.by) != 0 {
		t.Fatalf("released everything, still %d bytes, %d tenants", c.Bytes(), len(c.by))
	}
}

package master

import (
	"strings"
	"testing"
	"time"

	"github.com/templateworker/templateworker/proto"
)

func TestQuarantineWindowAndLift(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	q := NewQuarantine(3, 10*time.Minute)
	q.now = func() time.Time { return now }
	var told []proto.Id
	q.OnQuarantine = func(id proto.Id) { told = append(told, id) }
	a, b := proto.GuildID(1), proto.GuildID(2)
	// Two strikes, then the window passes: the old ones no longer count.
	q.Strike(a, "cpu_limit")
	q.Strike(a, "cpu_limit")
	now = now.Add(11 * time.Minute)
	if q.Strike(a, "cpu_limit") || q.Check(a) != nil {
		t.Fatal("strikes outside the window counted")
	}
	q.Strike(a, "timeout")
	if !q.Strike(a, "memory_limit") {
		t.Fatal("third strike within the window did not quarantine")
	}
	err := q.Check(a)
	if proto.CodeOf(err) != proto.CodeTenantQuarantined || !strings.Contains(err.Error(), "memory_limit") || !strings.Contains(err.Error(), "2026-01-01T00:21:00Z") {
		t.Fatalf("check: %v", err)
	}
	if q.Check(b) != nil || len(told) != 1 || told[0] != a {
		t.Fatalf("neighbour affected or callback wrong: %v", told)
	}
	if got := q.List(); len(got) != 1 || got[0].Tenant != a {
		t.Fatalf("list: %+v", got)
	}
	// It ends by itself after the window, or when lifted.
	now = now.Add(11 * time.Minute)
	if q.Check(a) != nil || q.Count() != 0 {
		t.Fatal("quarantine did not expire")
	}
	for i := 0; i < 3; i++ {
		q.Strike(b, "cpu_limit")
	}
	if !q.Lift(b) || q.Check(b) != nil || q.Lift(b) {
		t.Fatal("lift")
	}
}

package master

import (
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

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
	if ok, err := q.Lift(t.Context(), b); !ok || err != nil || q.Check(b) != nil {
		t.Fatalf("lift: %v %v", ok, err)
	}
	if ok, err := q.Lift(t.Context(), b); ok || err != nil {
		t.Fatalf("second lift: %v %v", ok, err)
	}
}

func TestQuarantineKeptInTheStore(t *testing.T) {
	st := openTestStore(t)
	now := time.Now().UTC()
	q := NewQuarantine(2, time.Hour)
	if err := q.Restore(t.Context(), st, nil, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	a, b := proto.GuildID(1<<22), proto.UserID(7)
	for _, id := range []proto.Id{a, a, b, b} {
		q.Strike(id, "cpu_limit")
	}
	q.Strike(proto.GuildID(99), "one strike only: not kept")

	// A restarted master finds both quarantines, with their end and reason.
	again := NewQuarantine(2, time.Hour)
	if err := again.Restore(t.Context(), st, nil, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	got := again.List()
	if len(got) != 2 || got[0].Tenant != a || got[1].Tenant != b {
		t.Fatalf("restored %+v, want %v and %v", got, a, b)
	}
	if got[0].Until.Before(now.Add(59*time.Minute)) || !strings.Contains(got[0].Reason, "cpu_limit") {
		t.Fatalf("restored entry %+v", got[0])
	}
	if err := again.Check(a); proto.CodeOf(err) != proto.CodeTenantQuarantined {
		t.Fatalf("restored quarantine does not hold: %v", err)
	}

	// A master of a cluster restores only its own tenants'.
	mine := NewQuarantine(2, time.Hour)
	if err := mine.Restore(t.Context(), st, func(id proto.Id) bool { return id.Kind == proto.User }, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	if got := mine.List(); len(got) != 1 || got[0].Tenant != b {
		t.Fatalf("restored with an ownership filter: %+v", got)
	}

	// A lift is kept too.
	if ok, err := again.Lift(t.Context(), a); !ok || err != nil {
		t.Fatalf("lift: %v %v", ok, err)
	}
	third := NewQuarantine(2, time.Hour)
	if err := third.Restore(t.Context(), st, nil, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	if got := third.List(); len(got) != 1 || got[0].Tenant != b {
		t.Fatalf("after a lift and a restart: %+v", got)
	}

	// A lift the store cannot record is refused, and the quarantine holds.
	st.Close()
	if ok, err := third.Lift(t.Context(), b); ok || proto.CodeOf(err) != proto.CodeStoreUnavailable {
		t.Fatalf("lift with the store gone: %v %v", ok, err)
	}
	if third.Check(b) == nil {
		t.Fatal("a lift that was not recorded lifted the quarantine")
	}
}

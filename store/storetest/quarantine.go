package storetest

import (
	"reflect"
	"testing"
	"time"

	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/store"
)

var quarantineTests = []test{
	{"QuarantineSaveListLift", testQuarantineSaveListLift},
	{"QuarantineSurvivesReopen", testQuarantineSurvivesReopen},
}

func testQuarantineSaveListLift(t *testing.T, open Opener) {
	s := open(t, store.DefaultQuota)
	c := ctx(t)
	now := time.Date(2026, 11, 27, 12, 0, 0, 123456789, time.UTC)
	big := proto.GuildID(1<<63 + 5) // above the signed range: stored as its bits
	qs := []proto.Quarantine{
		{Tenant: user, Since: now, Until: now.Add(time.Hour), Reason: "3 fatal incidents, last: cpu_limit"},
		{Tenant: guild, Since: now, Until: now.Add(10 * time.Minute), Reason: "worker crashed"},
		{Tenant: big, Since: now, Until: now.Add(time.Minute), Reason: "é ünïcode"},
		{Tenant: proto.GuildID(9), Since: now.Add(-time.Hour), Until: now.Add(-time.Second), Reason: "over"},
	}
	for _, q := range qs {
		must(t, s.SaveQuarantine(c, q))
	}
	got, err := s.Quarantines(c, now)
	must(t, err)
	// Ordered by kind then id; microsecond precision; the ended one is gone.
	want := []proto.Quarantine{qs[1], qs[2], qs[0]}
	for i := range want {
		want[i].Since = want[i].Since.Truncate(time.Microsecond)
		want[i].Until = want[i].Until.Truncate(time.Microsecond)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Quarantines = %+v\nwant %+v", got, want)
	}

	// Saving again replaces; lifting removes; lifting none is no error.
	longer := qs[1]
	longer.Until, longer.Reason = now.Add(2*time.Hour), "again"
	must(t, s.SaveQuarantine(c, longer))
	must(t, s.LiftQuarantine(c, user))
	must(t, s.LiftQuarantine(c, proto.UserID(12345)))
	got, err = s.Quarantines(c, now)
	must(t, err)
	if len(got) != 2 || got[0].Tenant != guild || got[0].Reason != "again" || !got[0].Until.Equal(longer.Until.Truncate(time.Microsecond)) || got[1].Tenant != big {
		t.Fatalf("after replace and lift: %+v", got)
	}
	// Later, everything has ended.
	if got, err := s.Quarantines(c, now.Add(3*time.Hour)); err != nil || len(got) != 0 {
		t.Fatalf("after the end: %+v, %v", got, err)
	}
	if got, err := s.Quarantines(c, now); err != nil || len(got) != 0 {
		t.Fatalf("ended quarantines were not removed: %+v, %v", got, err)
	}
	wantCode(t, s.SaveQuarantine(c, proto.Quarantine{Tenant: proto.Id{Kind: 7, ID: 1}, Until: now}), proto.CodeBadRequest)
}

func testQuarantineSurvivesReopen(t *testing.T, open Opener) {
	s := open(t, store.DefaultQuota)
	c := ctx(t)
	until := time.Now().Add(time.Hour).UTC().Truncate(time.Microsecond)
	must(t, s.SaveQuarantine(c, proto.Quarantine{Tenant: guild, Since: time.Now(), Until: until, Reason: "r"}))
	again, err := harness(t, s).Reopen(c, store.DefaultQuota)
	must(t, err)
	defer again.Close()
	got, err := again.Quarantines(c, time.Now())
	if err != nil || len(got) != 1 || got[0].Tenant != guild || !got[0].Until.Equal(until) {
		t.Fatalf("after reopening: %+v, %v", got, err)
	}
}

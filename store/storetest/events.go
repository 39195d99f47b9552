package storetest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/store"
)

var eventTests = []test{
	{"EventsCommitAndDue", testEventsCommitAndDue},
	{"EventsFailDeadRevive", testEventsFailDeadRevive},
	{"EventsDeadLetterKeep", testEventsDeadLetterKeep},
	{"EventsDeadLetterKeepBytes", testEventsDeadLetterKeepBytes},
	{"EventsDeadLetterPages", testEventsDeadLetterPages},
	{"EventsPendingSize", testEventsPendingSize},
	{"EventsSeqNeverReused", testEventsSeqNeverReused},
	{"EventsSurviveReopen", testEventsSurviveReopen},
}

// addEvents commits one event per name for tenant, due at due, and
// returns their seqs.
func addEvents(t *testing.T, s store.Store, tenant proto.Id, due time.Time, names ...string) []int64 {
	t.Helper()
	var b store.EventBatch
	for _, n := range names {
		author := "a-" + n
		b.Add = append(b.Add, store.EventRecord{Tenant: tenant, AcceptedAt: time.Now(), DeliverAt: due,
			Event: proto.Event{Name: n, Author: &author, Data: proto.Value(`{"n":"` + n + `","x":[1,2]}`), ID: "ignored"}})
	}
	seqs, err := s.CommitEvents(ctx(t), b)
	must(t, err)
	if len(seqs) != len(names) {
		t.Fatalf("CommitEvents returned %d seqs for %d events", len(seqs), len(names))
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] <= seqs[i-1] {
			t.Fatalf("seqs not increasing: %v", seqs)
		}
	}
	return seqs
}

// deadLetters is the first page of up to limit dead letters (of tenant
// when not nil), with no byte bound.
func deadLetters(c context.Context, s store.Store, tenant *proto.Id, limit int) ([]store.EventRecord, error) {
	recs, _, err := s.DeadLetters(c, store.DeadLetterQuery{Tenant: tenant, Limit: limit})
	return recs, err
}

func eventNames(rs []store.EventRecord) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Event.Name
	}
	return out
}

func testEventsCommitAndDue(t *testing.T, open Opener) {
	s := open(t, store.DefaultQuota)
	c := ctx(t)
	now := time.Now()
	a := addEvents(t, s, guild, now.Add(-time.Second), "A1", "A2", "A3")
	later := now.Add(time.Hour).Truncate(time.Microsecond)
	addEvents(t, s, guild, later, "Later")
	addEvents(t, s, user, now.Add(-time.Second), "U1") // same snowflake, other kind

	due, next, err := s.DueEvents(c, guild, now, 10, true)
	must(t, err)
	equal(t, "due events", eventNames(due), []string{"A1", "A2", "A3"})
	if !next.Equal(later) {
		t.Fatalf("next due = %v, want %v", next, later)
	}
	r := due[0]
	if r.Seq != a[0] || r.Tenant != guild || r.Event.Author == nil || *r.Event.Author != "a-A1" ||
		string(r.Event.Data) != `{"n":"A1","x":[1,2]}` || r.Event.ID != "" || r.Attempts != 0 || r.LastError != nil || r.Scheduled {
		t.Fatalf("first due event = %+v", r)
	}
	// A full page reports no next.
	if due, next, err := s.DueEvents(c, guild, now, 2, true); err != nil || len(due) != 2 || !next.IsZero() {
		t.Fatalf("DueEvents limit 2 = %d, %v, %v", len(due), next, err)
	}
	pend, err := s.PendingEvents(c, guild, false, 100)
	must(t, err)
	equal(t, "pending", eventNames(pend), []string{"A1", "A2", "A3", "Later"})
	if sched, err := s.PendingEvents(c, guild, true, 100); err != nil || len(sched) != 0 {
		t.Fatalf("scheduled only = %v, %v", sched, err)
	}
	seqs, err := s.CommitEvents(c, store.EventBatch{Add: []store.EventRecord{{Tenant: guild, AcceptedAt: now, DeliverAt: later, Scheduled: true, Event: proto.Event{Name: "S"}}}})
	must(t, err)
	if sched, err := s.PendingEvents(c, guild, true, 100); err != nil || len(sched) != 1 || !sched[0].Scheduled || sched[0].Seq != seqs[0] {
		t.Fatalf("scheduled only = %+v, %v", sched, err)
	}

	backlog, err := s.EventBacklog(c)
	must(t, err)
	got := map[proto.Id]int{}
	for _, b := range backlog {
		got[b.Tenant] = b.Count
	}
	if len(got) != 2 || got[guild] != 5 || got[user] != 1 {
		t.Fatalf("backlog = %+v", backlog)
	}

	// Done deletes; a missing seq is no error.
	_, err = s.CommitEvents(c, store.EventBatch{Done: []int64{a[0], a[1], 999999999}})
	must(t, err)
	due, _, err = s.DueEvents(c, guild, now, 10, true)
	must(t, err)
	equal(t, "due after done", eventNames(due), []string{"A3"})

	// Another tenant cannot delete it; the owner can, once.
	if _, ok, err := s.DeleteEvent(c, user, a[2]); err != nil || ok {
		t.Fatalf("DeleteEvent by another tenant = %v, %v", ok, err)
	}
	if ev, ok, err := s.DeleteEvent(c, guild, a[2]); err != nil || !ok || ev.Name != "A3" || ev.Author == nil || *ev.Author != "a-A3" {
		t.Fatalf("DeleteEvent = %+v, %v, %v; want A3 back", ev, ok, err)
	}
	if _, ok, err := s.DeleteEvent(c, guild, a[2]); err != nil || ok {
		t.Fatalf("DeleteEvent again = %v, %v", ok, err)
	}
}

func testEventsFailDeadRevive(t *testing.T, open Opener) {
	s := open(t, store.DefaultQuota)
	c := ctx(t)
	now := time.Now()
	seqs := addEvents(t, s, guild, now, "P", "N")
	retryAt := now.Add(time.Minute).Truncate(time.Microsecond)
	_, err := s.CommitEvents(c, store.EventBatch{Failed: []store.EventFailure{{Seq: seqs[0], Attempts: 1, NextAttemptAt: retryAt,
		Err: &proto.Error{Code: proto.CodeCPULimit, Message: "too many instructions"}}}})
	must(t, err)
	due, _, err := s.DueEvents(c, guild, now.Add(time.Second), 10, true)
	must(t, err)
	if len(due) != 2 || due[0].Attempts != 1 || due[0].LastError == nil || due[0].LastError.Code != proto.CodeCPULimit ||
		!due[0].NextAttemptAt.Equal(retryAt) || due[1].Attempts != 0 || !due[1].NextAttemptAt.IsZero() {
		t.Fatalf("after a failure: %+v", due)
	}

	_, err = s.CommitEvents(c, store.EventBatch{Dead: []store.EventFailure{{Seq: seqs[0], Attempts: 5,
		Err: &proto.Error{Code: proto.CodeWorkerUnavailable, Message: "worker died"}}}, Done: []int64{seqs[1]}})
	must(t, err)
	if due, _, err := s.DueEvents(c, guild, now.Add(time.Second), 10, true); err != nil || len(due) != 0 {
		t.Fatalf("events after dead-lettering = %+v, %v", due, err)
	}
	dl, err := deadLetters(c, s, nil, 10)
	must(t, err)
	if len(dl) != 1 || dl[0].Seq != seqs[0] || dl[0].Attempts != 5 || dl[0].LastError == nil ||
		dl[0].LastError.Code != proto.CodeWorkerUnavailable || dl[0].DeadAt.IsZero() || dl[0].Event.Name != "P" || dl[0].Tenant != guild {
		t.Fatalf("dead letters = %+v", dl)
	}
	if dl, err := deadLetters(c, s, &user, 10); err != nil || len(dl) != 0 {
		t.Fatalf("dead letters of another tenant = %+v, %v", dl, err)
	}
	if dl, err := deadLetters(c, s, &guild, 10); err != nil || len(dl) != 1 {
		t.Fatalf("dead letters of the tenant = %+v, %v", dl, err)
	}
	if one, err := s.DeadLetter(c, seqs[0]); err != nil || one.Tenant != guild || one.Attempts != 5 || one.Event.Name != "P" {
		t.Fatalf("DeadLetter = %+v, %v", one, err)
	}
	_, err = s.DeadLetter(c, seqs[1])
	wantCode(t, err, proto.CodeNotFound)

	r, err := s.ReviveDeadLetter(c, seqs[0])
	must(t, err)
	if r.Seq != seqs[0] || r.Attempts != 0 || r.LastError != nil || r.Event.Name != "P" {
		t.Fatalf("revived = %+v", r)
	}
	due, _, err = s.DueEvents(c, guild, now.Add(time.Second), 10, true)
	must(t, err)
	if len(due) != 1 || due[0].Seq != seqs[0] || due[0].Attempts != 0 || due[0].LastError != nil {
		t.Fatalf("after revive: %+v", due)
	}
	_, err = s.ReviveDeadLetter(c, seqs[0])
	wantCode(t, err, proto.CodeNotFound)

	// Delete: once, then not_found.
	_, err = s.CommitEvents(c, store.EventBatch{Dead: []store.EventFailure{{Seq: seqs[0], Attempts: 1, Err: &proto.Error{Code: proto.CodeTimeout, Message: "t"}}}})
	must(t, err)
	must(t, s.DeleteDeadLetter(c, seqs[0]))
	wantCode(t, s.DeleteDeadLetter(c, seqs[0]), proto.CodeNotFound)
}

// testEventsDeadLetterKeep: DeadLetterKeep keeps each tenant's newest dead
// letters and deletes its older ones, never another tenant's.
func testEventsDeadLetterKeep(t *testing.T, open Opener) {
	s := open(t, store.DefaultQuota)
	c := ctx(t)
	now := time.Now()
	g := addEvents(t, s, guild, now, "G1", "G2", "G3", "G4", "G5")
	u := addEvents(t, s, user, now, "U1", "U2")
	fail := &proto.Error{Code: proto.CodeMemoryLimit, Message: "m"}
	// The user's two first, unbounded; then the guild's one batch at a
	// time and two in one batch, keeping 3.
	_, err := s.CommitEvents(c, store.EventBatch{Dead: []store.EventFailure{{Seq: u[0], Attempts: 5, Err: fail}, {Seq: u[1], Attempts: 5, Err: fail}}})
	must(t, err)
	for _, seq := range g[:3] {
		_, err := s.CommitEvents(c, store.EventBatch{DeadLetterKeep: 3, Dead: []store.EventFailure{{Seq: seq, Attempts: 5, Err: fail}}})
		must(t, err)
	}
	_, err = s.CommitEvents(c, store.EventBatch{DeadLetterKeep: 3, Dead: []store.EventFailure{{Seq: g[3], Attempts: 5, Err: fail}, {Seq: g[4], Attempts: 5, Err: fail}}})
	must(t, err)
	dl, err := deadLetters(c, s, &guild, 10)
	must(t, err)
	if got := eventNames(dl); fmt.Sprint(got) != "[G3 G4 G5]" {
		t.Fatalf("guild's dead letters with DeadLetterKeep 3 = %v, want its newest three [G3 G4 G5]", got)
	}
	dl, err = deadLetters(c, s, &user, 10)
	must(t, err)
	if got := eventNames(dl); fmt.Sprint(got) != "[U1 U2]" {
		t.Fatalf("the other tenant's dead letters = %v, want both [U1 U2] (another tenant's bound must not touch them)", got)
	}
	// Keeping 1 as the user's next goes dead trims it to that one.
	u3 := addEvents(t, s, user, now, "U3")
	_, err = s.CommitEvents(c, store.EventBatch{DeadLetterKeep: 1, Dead: []store.EventFailure{{Seq: u3[0], Attempts: 5, Err: fail}}})
	must(t, err)
	dl, err = deadLetters(c, s, &user, 10)
	must(t, err)
	if got := eventNames(dl); fmt.Sprint(got) != "[U3]" {
		t.Fatalf("user's dead letters with DeadLetterKeep 1 = %v, want [U3]", got)
	}
}

func testEventsSeqNeverReused(t *testing.T, open Opener) {
	s := open(t, store.DefaultQuota)
	c := ctx(t)
	first := addEvents(t, s, guild, time.Now(), "A", "B")
	_, err := s.CommitEvents(c, store.EventBatch{Done: first})
	must(t, err)
	second := addEvents(t, s, guild, time.Now(), "C")
	if second[0] <= first[1] {
		t.Fatalf("seq %d reused after %v was deleted", second[0], first)
	}
}

func testEventsSurviveReopen(t *testing.T, open Opener) {
	s := open(t, store.DefaultQuota)
	c := ctx(t)
	many := make([]string, 300)
	for i := range many {
		many[i] = fmt.Sprintf("E%03d", i)
	}
	seqs := addEvents(t, s, guild, time.Now(), many...)
	s2, err := harness(t, s).Reopen(c, store.DefaultQuota)
	must(t, err)
	defer s2.Close()
	due, _, err := s2.DueEvents(c, guild, time.Now(), 1000, true)
	must(t, err)
	equal(t, "events after reopen", eventNames(due), many)
	for i, r := range due {
		if r.Seq != seqs[i] {
			t.Fatalf("event %s has seq %d, CommitEvents returned %d", r.Event.Name, r.Seq, seqs[i])
		}
	}
}

// testEventsDeadLetterKeepBytes: DeadLetterKeepBytes keeps each tenant's
// newest dead letters whose stored events fit in it together, deletes its
// older ones, never another tenant's, and always keeps the newest.
func testEventsDeadLetterKeepBytes(t *testing.T, open Opener) {
	s := open(t, store.DefaultQuota)
	c := ctx(t)
	now := time.Now()
	pad := strings.Repeat("x", 1000)
	add := func(tenant proto.Id, names ...string) []int64 {
		var b store.EventBatch
		for _, n := range names {
			b.Add = append(b.Add, store.EventRecord{Tenant: tenant, AcceptedAt: now, DeliverAt: now,
				Event: proto.Event{Name: n, Data: proto.Value(`"` + pad + `"`)}})
		}
		seqs, err := s.CommitEvents(c, b)
		must(t, err)
		return seqs
	}
	fail := &proto.Error{Code: proto.CodeMemoryLimit, Message: "m"}
	dead := func(keep int64, seqs ...int64) {
		b := store.EventBatch{DeadLetterKeepBytes: keep}
		for _, seq := range seqs {
			b.Dead = append(b.Dead, store.EventFailure{Seq: seq, Attempts: 5, Err: fail})
		}
		_, err := s.CommitEvents(c, b)
		must(t, err)
	}
	names := func(tenant proto.Id) string {
		dl, err := deadLetters(c, s, &tenant, 100)
		must(t, err)
		return fmt.Sprint(eventNames(dl))
	}
	u := add(user, "U1", "U2")
	dead(0, u...)
	g := add(guild, "G1", "G2", "G3", "G4", "G5")
	// Each stored event is a little over 1,000 bytes: 3,500 keeps three.
	for _, seq := range g[:3] {
		dead(3500, seq)
	}
	dead(3500, g[3], g[4])
	if got := names(guild); got != "[G3 G4 G5]" {
		t.Fatalf("guild's dead letters with DeadLetterKeepBytes 3500 = %v, want its newest three [G3 G4 G5]", got)
	}
	if got := names(user); got != "[U1 U2]" {
		t.Fatalf("the other tenant's dead letters = %v, want both [U1 U2]", got)
	}
	// A bound smaller than one event keeps the newest alone.
	u3 := add(user, "U3")
	dead(10, u3...)
	if got := names(user); got != "[U3]" {
		t.Fatalf("user's dead letters with DeadLetterKeepBytes 10 = %v, want [U3]", got)
	}
}

// testEventsDeadLetterPages: DeadLetters lists from After, at most Limit
// and at most MaxBytes of stored events (the first always), and says
// whether more follow; paging with the last id lists each once.
func testEventsDeadLetterPages(t *testing.T, open Opener) {
	s := open(t, store.DefaultQuota)
	c := ctx(t)
	now := time.Now()
	var b store.EventBatch
	for i := range 7 {
		tenant := guild
		if i%2 == 1 {
			tenant = user
		}
		size := 1000
		if i == 3 {
			size = 5000 // larger than a page's bytes on its own
		}
		b.Add = append(b.Add, store.EventRecord{Tenant: tenant, AcceptedAt: now, DeliverAt: now,
			Event: proto.Event{Name: fmt.Sprint("E", i), Data: proto.Value(`"` + strings.Repeat("x", size) + `"`)}})
	}
	seqs, err := s.CommitEvents(c, b)
	must(t, err)
	var dead store.EventBatch
	for _, seq := range seqs {
		dead.Dead = append(dead.Dead, store.EventFailure{Seq: seq, Attempts: 5, Err: &proto.Error{Code: proto.CodeMemoryLimit, Message: "m"}})
	}
	_, err = s.CommitEvents(c, dead)
	must(t, err)

	page := func(q store.DeadLetterQuery) (string, bool, int64) {
		t.Helper()
		recs, more, err := s.DeadLetters(c, q)
		must(t, err)
		var last int64
		if len(recs) > 0 {
			last = recs[len(recs)-1].Seq
		}
		return fmt.Sprint(eventNames(recs)), more, last
	}
	if got, more, _ := page(store.DeadLetterQuery{Limit: 10}); got != "[E0 E1 E2 E3 E4 E5 E6]" || more {
		t.Fatalf("all = %v more %v", got, more)
	}
	if got, more, _ := page(store.DeadLetterQuery{Limit: 7}); got != "[E0 E1 E2 E3 E4 E5 E6]" || more {
		t.Fatalf("limit 7 of 7 = %v more %v, want all and no more", got, more)
	}
	// Pages of at most 3,500 bytes: each event is a little over 1,000
	// bytes, E3 over 5,000 and so alone on its page.
	var pages []string
	after := int64(0)
	for range 10 {
		got, more, last := page(store.DeadLetterQuery{After: after, Limit: 10, MaxBytes: 3500})
		pages = append(pages, got)
		if !more {
			break
		}
		after = last
	}
	if got := fmt.Sprint(pages); got != "[[E0 E1 E2] [E3] [E4 E5 E6]]" {
		t.Fatalf("pages of 3,500 bytes = %v, want [[E0 E1 E2] [E3] [E4 E5 E6]]", got)
	}
	if got, more, _ := page(store.DeadLetterQuery{Limit: 2}); got != "[E0 E1]" || !more {
		t.Fatalf("limit 2 = %v more %v", got, more)
	}
	if got, more, _ := page(store.DeadLetterQuery{Tenant: &user, After: seqs[1], Limit: 10, MaxBytes: 3500}); got != "[E3]" || !more {
		t.Fatalf("user's after E1 in 3,500 bytes = %v more %v, want [E3] and more", got, more)
	}
	if got, more, _ := page(store.DeadLetterQuery{Tenant: &user, After: seqs[3], Limit: 10, MaxBytes: 3500}); got != "[E5]" || more {
		t.Fatalf("user's after E3 = %v more %v, want [E5] and no more", got, more)
	}
	if got, more, _ := page(store.DeadLetterQuery{After: seqs[6], Limit: 10}); got != "[]" || more {
		t.Fatalf("after the last = %v more %v", got, more)
	}
}

// testEventsPendingSize: a PendingSizer counts a tenant's pending events
// (its scheduled ones alone if asked) and at least the bytes of their
// names and data, without another tenant's.
func testEventsPendingSize(t *testing.T, open Opener) {
	s := open(t, store.DefaultQuota)
	ps, ok := s.(store.PendingSizer)
	if !ok {
		t.Fatalf("%T is not a store.PendingSizer", s)
	}
	c := ctx(t)
	now := time.Now()
	data := `"` + strings.Repeat("d", 1000) + `"`
	var b store.EventBatch
	for i, sched := range []bool{true, true, false} {
		b.Add = append(b.Add, store.EventRecord{Tenant: guild, AcceptedAt: now, DeliverAt: now, Scheduled: sched,
			Event: proto.Event{Name: fmt.Sprintf("E%d", i), Data: proto.Value(data)}})
	}
	b.Add = append(b.Add, store.EventRecord{Tenant: user, AcceptedAt: now, DeliverAt: now, Scheduled: true,
		Event: proto.Event{Name: "U", Data: proto.Value(data)}})
	_, err := s.CommitEvents(c, b)
	must(t, err)
	for _, sched := range []bool{true, false} {
		want := 2
		if !sched {
			want = 3
		}
		n, bytes, err := ps.PendingSize(c, guild, sched)
		must(t, err)
		if n != want || bytes < int64(want*(len(data)+2)) || bytes > int64(want*(len(data)+100)) {
			t.Fatalf("PendingSize(scheduled only %v) = %d events, %d bytes; want %d events of a little over %d bytes", sched, n, bytes, want, len(data)+2)
		}
	}
	if n, bytes, err := ps.PendingSize(c, proto.GuildID(99), false); err != nil || n != 0 || bytes != 0 {
		t.Fatalf("PendingSize of a tenant without events = %d, %d, %v", n, bytes, err)
	}
}

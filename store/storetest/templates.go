package storetest

import (
	"testing"
	"time"

	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/store"
)

var templateTests = []test{
	{"TemplatesCRUD", testTemplatesCRUD},
	{"TemplatesUnicodeAndBytes", testTemplatesUnicode},
	{"TenantsWithEvent", testTenantsWithEvent},
	{"TenantsIsolated", testTenantsIsolated},
}

func names(ts []proto.Template) []string {
	ns := make([]string, len(ts))
	for i, t := range ts {
		ns[i] = t.Name
	}
	return ns
}

func templates(t *testing.T, s store.Store, tenant proto.Id) []proto.Template {
	t.Helper()
	ts, err := s.Templates(ctx(t), tenant)
	if err != nil {
		t.Fatalf("Templates(%s): %v", tenant, err)
	}
	if ts == nil {
		t.Fatalf("Templates(%s) = nil, want a non-nil slice", tenant)
	}
	return ts
}

func testTemplatesCRUD(t *testing.T, open Opener) {
	s := open(t, store.Quota{})
	c := ctx(t)
	if ts := templates(t, s, guild); len(ts) != 0 {
		t.Fatalf("templates of a new tenant = %v, want none", ts)
	}
	before := time.Now().Add(-time.Second)
	must(t, s.PutTemplate(c, guild, proto.Template{Name: "b", Code: "return 2", Events: []string{"Ping", "Msg", "Ping"}}))
	must(t, s.PutTemplate(c, guild, proto.Template{Name: "a", Code: "return 1"}))
	must(t, s.PutTemplate(c, guild, proto.Template{Name: "B", Code: "return 3", Events: []string{"Msg"}}))
	ts := templates(t, s, guild)
	equal(t, "template names", names(ts), []string{"B", "a", "b"})
	b := ts[2]
	if b.Code != "return 2" {
		t.Errorf("code = %q, want %q", b.Code, "return 2")
	}
	equal(t, "events of b", b.Events, []string{"Ping", "Msg"})
	if ts[1].Events == nil || len(ts[1].Events) != 0 {
		t.Errorf("events of a template without events = %#v, want an empty non-nil slice", ts[1].Events)
	}
	if b.UpdatedAt.Before(before) || b.UpdatedAt.After(time.Now().Add(time.Second)) {
		t.Errorf("updated_at = %v, want about now", b.UpdatedAt)
	}
	if b.UpdatedAt.Location() != time.UTC {
		t.Errorf("updated_at location = %v, want UTC", b.UpdatedAt.Location())
	}

	// Replacing keeps one template and its new events, in the given order.
	at := time.Date(2024, 5, 6, 7, 8, 9, 123456000, time.UTC)
	must(t, s.PutTemplate(c, guild, proto.Template{Name: "b", Code: "return 20", Events: []string{"Z", "A"}, UpdatedAt: at}))
	ts = templates(t, s, guild)
	equal(t, "template names after replace", names(ts), []string{"B", "a", "b"})
	if ts[2].Code != "return 20" || !ts[2].UpdatedAt.Equal(at) {
		t.Errorf("replaced template = %+v, want code return 20 updated at %v", ts[2], at)
	}
	equal(t, "events after replace", ts[2].Events, []string{"Z", "A"})

	must(t, s.DeleteTemplate(c, guild, "a"))
	equal(t, "template names after delete", names(templates(t, s, guild)), []string{"B", "b"})
	err := s.DeleteTemplate(c, guild, "a")
	if pe := wantCode(t, err, proto.CodeNotFound); pe.Message != `template "a" not found` {
		t.Errorf("message = %q, want %q", pe.Message, `template "a" not found`)
	}
	wantCode(t, s.DeleteTemplate(c, guild, "never"), proto.CodeNotFound)
}

func testTemplatesUnicode(t *testing.T, open Opener) {
	s := open(t, store.Quota{})
	c := ctx(t)
	code := "-- héllo 世界 🎉\nreturn \"\x00\xff\xfe\"" // Lua source may hold any bytes
	for _, n := range []string{"日本語", "émoji 🎉", "z", "Ä"} {
		must(t, s.PutTemplate(c, guild, proto.Template{Name: n, Code: code, Events: []string{"Événement", "事件"}}))
	}
	ts := templates(t, s, guild)
	equal(t, "names in byte order", names(ts), []string{"z", "Ä", "émoji 🎉", "日本語"})
	for _, tp := range ts {
		if tp.Code != code {
			t.Errorf("code of %q = %q, want %q", tp.Name, tp.Code, code)
		}
		equal(t, "events", tp.Events, []string{"Événement", "事件"})
	}
	must(t, s.DeleteTemplate(c, guild, "日本語"))
	if got := len(templates(t, s, guild)); got != 3 {
		t.Errorf("%d templates after delete, want 3", got)
	}
}

func testTenantsWithEvent(t *testing.T, open Opener) {
	s := open(t, store.Quota{})
	c := ctx(t)
	big := proto.GuildID(1<<63 + 5) // above int64: must still round-trip and sort as unsigned
	max := proto.UserID(1<<64 - 1)
	put := func(tenant proto.Id, name string, events ...string) {
		t.Helper()
		must(t, s.PutTemplate(c, tenant, proto.Template{Name: name, Code: "return", Events: events}))
	}
	put(user, "t", "Ping")
	put(big, "t", "Ping", "Other")
	put(guild, "t1", "Ping")
	put(guild, "t2", "Ping") // two templates, one tenant
	put(proto.GuildID(7), "t", "Other")
	put(max, "t", "Ping")
	tenants := func(event string) []proto.Id {
		t.Helper()
		ids, err := s.TenantsWithEvent(c, event)
		if err != nil {
			t.Fatalf("TenantsWithEvent(%q): %v", event, err)
		}
		if ids == nil {
			t.Fatalf("TenantsWithEvent(%q) = nil, want a non-nil slice", event)
		}
		return ids
	}
	want := func(event string, ids ...proto.Id) {
		t.Helper()
		got := tenants(event)
		if len(got) != len(ids) {
			t.Fatalf("TenantsWithEvent(%q) = %v, want %v", event, got, ids)
		}
		for i := range ids {
			if got[i] != ids[i] {
				t.Fatalf("TenantsWithEvent(%q) = %v, want %v", event, got, ids)
			}
		}
	}
	want("Ping", guild, big, user, max)
	want("Other", proto.GuildID(7), big)
	want("Nothing")
	want("ping") // event names are case-sensitive

	// Unsubscribing by replacing or deleting a template.
	put(big, "t", "Other")
	must(t, s.DeleteTemplate(c, guild, "t1"))
	want("Ping", guild, user, max)
	must(t, s.DeleteTemplate(c, guild, "t2"))
	want("Ping", user, max)
}

func testTenantsIsolated(t *testing.T, open Opener) {
	s := open(t, store.Quota{MaxKeys: 1})
	c := ctx(t)
	must(t, s.PutTemplate(c, guild, proto.Template{Name: "t", Code: "return 'guild'", Events: []string{"G"}}))
	must(t, s.PutTemplate(c, user, proto.Template{Name: "t", Code: "return 'user'", Events: []string{"U"}}))
	if ts := templates(t, s, guild); len(ts) != 1 || ts[0].Code != "return 'guild'" {
		t.Errorf("guild templates = %+v", ts)
	}
	if ts := templates(t, s, proto.GuildID(2)); len(ts) != 0 {
		t.Errorf("templates of another guild = %+v, want none", ts)
	}
	must(t, s.DeleteTemplate(c, user, "t"))
	if ts := templates(t, s, guild); len(ts) != 1 {
		t.Errorf("deleting the user's template removed the guild's: %+v", ts)
	}

	// Each tenant has its own keys and its own quota.
	set(t, s, guild, "k", `"guild"`)
	set(t, s, user, "k", `"user"`)
	if g, u := get(t, s, guild, "k"), get(t, s, user, "k"); g != `"guild"` || u != `"user"` {
		t.Fatalf("guild k = %s, user k = %s", g, u)
	}
	equal(t, "user keys", keys(t, s, user, ""), []string{"k"})
	must(t, s.KvDelete(c, user, "k"))
	if g := get(t, s, guild, "k"); g != `"guild"` {
		t.Fatalf("deleting the user's key changed the guild's to %q", g)
	}
	set(t, s, user, "other", `1`)
}

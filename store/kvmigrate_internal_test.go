package store

import (
	"context"
	"database/sql"
	"path/filepath"
	"strings"
	"testing"

	"github.com/templateworker/templateworker/proto"
)

// TestSQLiteMigration4KeepsData: a database at schema version 3 (kv and
// templates WITHOUT ROWID) with KV data and templates opens at version 4
// with the same keys, values, quota usage, templates and subscriptions,
// kv and templates rowid tables whose keys are UNIQUE indexes, and writes
// work on them (an upsert, a delete, a template deletion that cascades to
// its subscriptions).
func TestSQLiteMigration4KeepsData(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	all, err := loadMigrations("sqlite")
	if err != nil {
		t.Fatal(err)
	}
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.ExecContext(ctx, q, args...); err != nil {
			t.Fatalf("%.80s: %v", q, err)
		}
	}
	exec(`CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)`)
	for _, m := range all[:3] {
		exec(m.sql)
		exec(`INSERT INTO schema_version (version, applied_at) VALUES (?, 0)`, m.version)
	}
	exec(`INSERT INTO kv VALUES ('Guild', 1, 'a', '1', 2, 0, 0), ('Guild', 1, 'b', '"x"', 4, 0, 0), ('User', 1, 'a', '[2]', 4, 0, 0)`)
	exec(`INSERT INTO kv_usage VALUES ('Guild', 1, 2, 6), ('User', 1, 1, 4)`)
	exec(`INSERT INTO templates VALUES ('Guild', 1, 'greet', 'return 1', 5), ('Guild', 1, 'other', 'return 2', 6)`)
	exec(`INSERT INTO template_events VALUES ('Guild', 1, 'greet', 0, 'Ping'), ('Guild', 1, 'greet', 1, 'Pong'), ('Guild', 1, 'other', 0, 'Ping')`)
	db.Close()

	s, err := OpenSQLite(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var ddl string
	for _, table := range []string{"kv", "templates"} {
		if err := s.r.QueryRowContext(ctx, `SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?`, table).Scan(&ddl); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(ddl, "WITHOUT ROWID") || !strings.Contains(ddl, "UNIQUE (tenant_type, tenant_id, ") {
			t.Fatalf("%s after migration 4: %s", table, ddl)
		}
	}
	var parent string
	if err := s.r.QueryRowContext(ctx, `SELECT "table" FROM pragma_foreign_key_list('template_events')`).Scan(&parent); err != nil || parent != "templates" {
		t.Fatalf("template_events refers to %q (%v), want templates", parent, err)
	}
	g, u := proto.GuildID(1), proto.UserID(1)
	tpls, err := s.Templates(ctx, g)
	if err != nil || len(tpls) != 2 || tpls[0].Name != "greet" || tpls[0].Code != "return 1" ||
		strings.Join(tpls[0].Events, ",") != "Ping,Pong" || tpls[1].Name != "other" {
		t.Fatalf("templates after migration 4: %+v %v", tpls, err)
	}
	if ids, err := s.TenantsWithEvent(ctx, "Pong"); err != nil || len(ids) != 1 || ids[0] != g {
		t.Fatalf("tenants with Pong: %v %v", ids, err)
	}
	if err := s.DeleteTemplate(ctx, g, "greet"); err != nil {
		t.Fatal(err)
	}
	var subs int
	if err := s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM template_events`).Scan(&subs); err != nil || subs != 1 {
		t.Fatalf("%d subscriptions after deleting greet (%v), want other's 1: the deletion must cascade", subs, err)
	}
	for _, c := range []struct {
		id       proto.Id
		key, val string
	}{{g, "a", "1"}, {g, "b", `"x"`}, {u, "a", "[2]"}} {
		v, ok, err := s.KvGet(ctx, c.id, c.key)
		if err != nil || !ok || string(v) != c.val {
			t.Fatalf("%s %s after migration 4: %s %v %v, want %s", c.id, c.key, v, ok, err, c.val)
		}
	}
	if err := s.KvSet(ctx, g, "a", []byte(`11`)); err != nil {
		t.Fatal(err)
	}
	if err := s.KvDelete(ctx, g, "b"); err != nil {
		t.Fatal(err)
	}
	items, err := s.KvFind(ctx, g, "")
	if err != nil || len(items) != 1 || items[0].Key != "a" || string(items[0].Value) != "11" {
		t.Fatalf("guild's KV after an upsert and a delete: %+v %v", items, err)
	}
	var keys, bytes int
	if err := s.r.QueryRowContext(ctx, `SELECT keys, bytes FROM kv_usage WHERE tenant_type = 'Guild' AND tenant_id = 1`).Scan(&keys, &bytes); err != nil || keys != 1 || bytes != 3 {
		t.Fatalf("guild's usage: %d keys, %d bytes, %v; want 1 and 3", keys, bytes, err)
	}
}

package store

import (
	"path/filepath"
	"testing"
)

func TestSQLitePragmas(t *testing.T) {
	s, err := OpenSQLite(t.Context(), filepath.Join(t.TempDir(), SQLiteFile), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var mode string
	if err := s.w.QueryRowContext(t.Context(), `PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode = %q, %v; want wal", mode, err)
	}
	var fk int
	if err := s.r.QueryRowContext(t.Context(), `PRAGMA foreign_keys`).Scan(&fk); err != nil || fk != 1 {
		t.Errorf("foreign_keys = %d, %v; want 1", fk, err)
	}
	if _, err := s.r.ExecContext(t.Context(), `DELETE FROM kv`); err == nil {
		t.Error("the read pool accepted a write")
	}
}

func TestMigrationsEmbedded(t *testing.T) {
	for _, d := range []string{"sqlite", "postgres"} {
		ms, err := loadMigrations(d)
		if err != nil {
			t.Fatal(err)
		}
		if len(ms) != SchemaVersion {
			t.Errorf("%s: %d migrations, SchemaVersion %d", d, len(ms), SchemaVersion)
		}
	}
}

func TestPrefixEnd(t *testing.T) {
	for _, tt := range []struct {
		in, want string
		ok       bool
	}{
		{"", "", false},
		{"a", "b", true},
		{"a\x7f", "a\u0080", true},
		{"\ud7ff", "\ue000", true},
		{"x\U0010ffff", "y", true},
		{"\U0010ffff\U0010ffff", "", false},
		{"é", "ê", true},
	} {
		got, ok := prefixEnd(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("prefixEnd(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

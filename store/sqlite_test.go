package store_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/store"
	"github.com/templateworker/templateworker/store/storetest"
)

// sqliteHarness adds what the conformance suite needs to test migrations.
type sqliteHarness struct{ *store.SQLite }

func (h sqliteHarness) Reopen(ctx context.Context, q store.Quota) (store.Store, error) {
	return store.OpenSQLite(ctx, h.Path(), store.Options{Quota: q})
}

func openSQLite(t testing.TB, q store.Quota) *store.SQLite {
	t.Helper()
	s, err := store.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "db", store.SQLiteFile), store.Options{Quota: q})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestSQLite(t *testing.T) {
	storetest.Run(t, func(t *testing.T, q store.Quota) store.Store {
		return sqliteHarness{openSQLite(t, q)}
	})
}

func TestSQLiteOpen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data dir?#%x")
	st, err := store.Open(t.Context(), store.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, ok := st.(*store.SQLite); !ok {
		t.Fatalf("Open without a database URL = %T, want *store.SQLite", st)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("data dir mode = %v, want 0700", fi.Mode().Perm())
	}
	if _, err := os.Stat(filepath.Join(dir, store.SQLiteFile)); err != nil {
		t.Errorf("database file: %v", err)
	}
	if err := st.KvSet(t.Context(), proto.GuildID(1), "k", json.RawMessage(`1`)); err != nil {
		t.Fatal(err)
	}
	st.Close()

	v, err := store.Migrate(t.Context(), store.Config{DataDir: dir})
	if err != nil || v != store.SchemaVersion {
		t.Fatalf("Migrate = %d, %v; want %d, nil", v, err, store.SchemaVersion)
	}
	st, err = store.Open(t.Context(), store.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if v, ok, err := st.KvGet(t.Context(), proto.GuildID(1), "k"); err != nil || !ok || string(v) != "1" {
		t.Fatalf("after reopening: KvGet = %s, %v, %v", v, ok, err)
	}
}

// TestSQLiteTwoProcesses writes from two stores on one file at once, as two
// processes would: the busy timeout and immediate transactions must keep
// every write from failing with SQLITE_BUSY.
func TestSQLiteTwoProcesses(t *testing.T) {
	a := openSQLite(t, store.Quota{})
	b, err := store.OpenSQLite(t.Context(), a.Path(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	errs := make(chan error, 8)
	for g := range 8 {
		s := a
		if g%2 == 1 {
			s = b
		}
		go func() {
			for i := range 25 {
				if err := s.KvSet(t.Context(), proto.GuildID(1), fmt.Sprintf("%d/%d", g, i), json.RawMessage(`1`)); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	items, err := b.KvFind(t.Context(), proto.GuildID(1), "")
	if err != nil || len(items) != 200 {
		t.Fatalf("KvFind = %d items, %v; want 200", len(items), err)
	}
}

package store_test

import (
	"context"
	"encoding/json"
	"github.com/templateworker/templateworker/internal/pgtest"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/store"
	"github.com/templateworker/templateworker/store/storetest"
)

// pgSchema gives the test an empty schema of its own (see pgtest.Schema).
func pgSchema(t testing.TB, base string) (dsn, schema string) {
	t.Helper()
	dsn, schema, _ = pgtest.Schema(t, base)
	return dsn, schema
}

// pgHarness adds what the conformance suite needs to test migrations.
type pgHarness struct {
	*store.Postgres
	url string
}

func (h pgHarness) Reopen(ctx context.Context, q store.Quota) (store.Store, error) {
	return store.OpenPostgres(ctx, h.url, store.Options{Quota: q})
}

// openPostgres opens a store in a schema of its own.
func openPostgres(t testing.TB, q store.Quota) (p *store.Postgres, dsn, schema string) {
	t.Helper()
	dsn, schema = pgSchema(t, pgtest.URL(t))
	p, err := store.OpenPostgres(context.Background(), dsn, store.Options{Quota: q})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p, dsn, schema
}

func TestPostgres(t *testing.T) {
	pgtest.URL(t)
	storetest.Run(t, func(t *testing.T, q store.Quota) store.Store {
		p, dsn, _ := openPostgres(t, q)
		return pgHarness{p, dsn}
	})
}

func TestPostgresOpen(t *testing.T) {
	u, _ := pgSchema(t, pgtest.URL(t))
	st, err := store.Open(t.Context(), store.Config{DatabaseURL: u, DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, ok := st.(*store.Postgres); !ok {
		t.Fatalf("Open with a database URL = %T, want *store.Postgres", st)
	}
	v, err := store.Migrate(t.Context(), store.Config{DatabaseURL: u})
	if err != nil || v != store.SchemaVersion {
		t.Fatalf("Migrate = %d, %v; want %d, nil", v, err, store.SchemaVersion)
	}
}

// TestPostgresConcurrentOpen starts several stores on one empty schema at
// once, as masters starting together would: the advisory lock must make
// them migrate one after the other.
func TestPostgresConcurrentOpen(t *testing.T) {
	u, _ := pgSchema(t, pgtest.URL(t))
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			p, err := store.OpenPostgres(t.Context(), u, store.Options{})
			if err == nil {
				p.Close()
			}
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// TestPostgresBackendsTerminated kills every connection of the store from
// the server side: the next calls must succeed on fresh connections.
func TestPostgresBackendsTerminated(t *testing.T) {
	p, _, schema := openPostgres(t, store.Quota{})
	ctx := t.Context()
	tenant := proto.GuildID(1)
	if err := p.KvSet(ctx, tenant, "k", json.RawMessage(`1`)); err != nil {
		t.Fatal(err)
	}
	admin, err := pgx.Connect(ctx, pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	terminate := func() {
		t.Helper()
		// Several connections in the pool, all idle.
		errs := make(chan error, 4)
		for range 4 {
			go func() { _, _, err := p.KvGet(ctx, tenant, "k"); errs <- err }()
		}
		for range 4 {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		var n int
		if err := admin.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid, 10000)) FROM pg_stat_activity
			WHERE application_name = $1 AND pid <> pg_backend_pid()`, schema).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			t.Fatal("no backend of the store to terminate")
		}
	}
	terminate()
	if v, ok, err := p.KvGet(ctx, tenant, "k"); err != nil || !ok || string(v) != "1" {
		t.Fatalf("KvGet after the backends were terminated = %s, %v, %v", v, ok, err)
	}
	terminate()
	if err := p.KvSet(ctx, tenant, "k", json.RawMessage(`2`)); err != nil {
		t.Fatalf("KvSet after the backends were terminated: %v", err)
	}
	terminate()
	if err := p.Ping(ctx); err != nil {
		// Ping is not retried, but the pool must have dropped the dead
		// connections by the call after.
		if err := p.Ping(ctx); err != nil {
			t.Fatalf("Ping after the backends were terminated: %v", err)
		}
	}
}

package store_test

import (
	"github.com/templateworker/templateworker/internal/pgtest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/templateworker/templateworker/store"
)

// TestPostgresPoolSettings checks that the URL's pool_* parameters reach
// the pool, and that the default size is max(4, CPUs).
func TestPostgresPoolSettings(t *testing.T) {
	dsn, _ := pgSchema(t, pgtest.URL(t))
	p, err := store.OpenPostgres(t.Context(), dsn, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := p.PoolMaxConns(), int32(max(4, runtime.NumCPU())); got != want {
		t.Errorf("default pool size %d, want %d", got, want)
	}
	p.Close()

	sized := pgtest.WithParams(t, dsn, map[string]string{"pool_max_conns": "2", "pool_max_conn_idle_time": "1m"})
	p, err = store.OpenPostgres(t.Context(), sized, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if got := p.PoolMaxConns(); got != 2 {
		t.Errorf("pool_max_conns=2: pool size %d", got)
	}

	bad := pgtest.WithParams(t, dsn, map[string]string{"pool_max_conns": "lots"})
	_, err = store.OpenPostgres(t.Context(), bad, store.Options{})
	if err == nil {
		t.Fatal("pool_max_conns=lots accepted")
	}
	if pw := passwordOf(t, dsn); pw != "" && strings.Contains(err.Error(), pw) {
		t.Fatalf("error %q contains the password", err)
	}
}

// TestPostgresMigrationLockReleased checks that opening a store does not
// leave the migration lock held by a pooled connection, which would block
// every other process's start.
func TestPostgresMigrationLockReleased(t *testing.T) {
	p, dsn, _ := openPostgres(t, store.Quota{})
	if err := p.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	admin, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(t.Context())
	// Another process of the cluster may be migrating right now and hold
	// the lock for a moment; a leaked lock stays held.
	deadline := time.Now().Add(time.Minute)
	for {
		var got bool
		if err := admin.QueryRow(t.Context(), `SELECT pg_try_advisory_lock($1)`, store.MigrationLockKey).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the migration lock is still held a minute after OpenPostgres returned")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := admin.Exec(t.Context(), `SELECT pg_advisory_unlock($1)`, store.MigrationLockKey); err != nil {
		t.Fatal(err)
	}
}

// passwordOf returns the password of a connection string.
func passwordOf(t testing.TB, dsn string) string {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Password
}

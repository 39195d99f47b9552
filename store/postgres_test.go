package store_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/store"
	"github.com/templateworker/templateworker/store/storetest"
)

const databaseURLEnv = "TEMPLATEWORKER_TEST_DATABASE_URL"

// testDatabaseURL returns the test database, skipping the test without one
// (failing it in CI, where the PostgreSQL tests must run).
func testDatabaseURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv(databaseURLEnv)
	if u == "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but %s is not set: the PostgreSQL tests must run in CI (see .ci/postgres.sh)", databaseURLEnv)
		}
		t.Skipf(`%s not set; run eval "$(bash .ci/postgres.sh start)" first`, databaseURLEnv)
	}
	return u
}

func testDatabaseURLSet() bool { return os.Getenv(databaseURLEnv) != "" }

var schemaSeq atomic.Int64

// pgSchema creates a schema of its own for the test, dropped at its end, and
// returns base changed to use it (and to name its connections after it).
func pgSchema(t testing.TB, base string) (dsn, schema string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("connect to the test database: %v", err)
	}
	schema = fmt.Sprintf("tw_test_%d_%d_%d", os.Getpid(), time.Now().UnixNano()%1e9, schemaSeq.Add(1))
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		conn.Close(ctx)
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return withParams(t, base, map[string]string{"search_path": schema, "application_name": schema}), schema
}

// withParams sets connection parameters in a URL or key=value DSN.
func withParams(t testing.TB, dsn string, params map[string]string) string {
	t.Helper()
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatalf("parse %s: %v", databaseURLEnv, err)
		}
		q := u.Query()
		for k, v := range params {
			if k == "host" {
				u.Host = v
				continue
			}
			q.Set(k, v)
		}
		u.RawQuery = q.Encode()
		return u.String()
	}
	for k, v := range params { // later settings win in a DSN
		if k == "host" {
			h, p, _ := net.SplitHostPort(v)
			dsn += " host=" + h + " port=" + p
			continue
		}
		dsn += " " + k + "=" + v
	}
	return dsn
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
	dsn, schema = pgSchema(t, testDatabaseURL(t))
	p, err := store.OpenPostgres(context.Background(), dsn, store.Options{Quota: q})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p, dsn, schema
}

func TestPostgres(t *testing.T) {
	testDatabaseURL(t)
	storetest.Run(t, func(t *testing.T, q store.Quota) store.Store {
		p, dsn, _ := openPostgres(t, q)
		return pgHarness{p, dsn}
	})
}

func TestPostgresOpen(t *testing.T) {
	u, _ := pgSchema(t, testDatabaseURL(t))
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
	u, _ := pgSchema(t, testDatabaseURL(t))
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
	admin, err := pgx.Connect(ctx, testDatabaseURL(t))
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

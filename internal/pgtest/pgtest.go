// Package pgtest gives tests the PostgreSQL they may use: the URL from
// TEMPLATEWORKER_TEST_DATABASE_URL (skipping without it, failing under
// CI=true where the PostgreSQL tests must run), schemas of a test's own,
// and connection parameters set in a URL or key=value DSN.
package pgtest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/templateworker/templateworker/store"
)

// Env names the test database's URL.
const Env = "TEMPLATEWORKER_TEST_DATABASE_URL"

// Set reports whether a test database is configured.
func Set() bool { return os.Getenv(Env) != "" }

// URL returns the test database's URL. Without one it skips tb, or fails it
// when CI=true.
func URL(tb testing.TB) string {
	tb.Helper()
	u := os.Getenv(Env)
	if u == "" {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("CI=true but %s is not set: the PostgreSQL tests must run in CI (see .ci/postgres.sh)", Env)
		}
		tb.Skipf(`%s not set; run eval "$(bash .ci/postgres.sh start)" first`, Env)
	}
	return u
}

var seq atomic.Int64

// Schema creates an empty schema of tb's own and returns base changed to
// use it, with the schema's name as application_name (so a test can find
// and kill its connections), the name, and an admin connection to base.
// At the end of tb the schema's remaining connections are terminated, the
// schema is dropped and the admin connection closed.
func Schema(tb testing.TB, base string) (dsn, schema string, admin *pgx.Conn) {
	tb.Helper()
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		tb.Fatalf("connect to the test database: %s", store.RedactURL(err.Error()))
	}
	schema = fmt.Sprintf("tw_test_%d_%d_%d", os.Getpid(), time.Now().UnixNano()%1e9, seq.Add(1))
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		admin.Close(ctx)
		tb.Fatalf("create schema: %v", err)
	}
	tb.Cleanup(func() {
		defer admin.Close(ctx)
		// Connections still open would hold locks on the schema's tables.
		_, _ = admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`, schema)
		if _, err := admin.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			tb.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return WithParams(tb, base, map[string]string{"search_path": schema, "application_name": schema}), schema, admin
}

// WithParams sets connection parameters ("host" is host:port) in a URL or
// key=value DSN.
func WithParams(tb testing.TB, dsn string, params map[string]string) string {
	tb.Helper()
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			tb.Fatalf("parse %s: %s", Env, store.RedactURL(err.Error()))
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

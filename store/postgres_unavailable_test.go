package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"github.com/templateworker/templateworker/internal/pgtest"
	"net"
	"strings"
	"testing"

	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/store"
)

const secret = "s3cr3t-Pa55"

// closedPort returns a port of 127.0.0.1 nothing listens on.
func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	l.Close()
	return port
}

func wantUnavailable(t *testing.T, err error) {
	t.Helper()
	if proto.CodeOf(err) != proto.CodeStoreUnavailable {
		t.Fatalf("error = %v, want store_unavailable", err)
	}
	if strings.Contains(err.Error(), secret) {
		t.Fatalf("error %q contains the password", err)
	}
}

func TestPostgresUnreachable(t *testing.T) {
	port := closedPort(t)
	for _, u := range []string{
		"postgres://tw:" + secret + "@127.0.0.1:" + port + "/db?sslmode=disable",
		"host=127.0.0.1 port=" + port + " user=tw password=" + secret + " dbname=db sslmode=disable",
		"host=127.0.0.1 port=" + port + " user=tw password='" + secret + "' dbname=db sslmode=disable",
	} {
		_, err := store.OpenPostgres(t.Context(), u, store.Options{})
		wantUnavailable(t, err)
		_, err = store.Open(t.Context(), store.Config{DatabaseURL: u})
		wantUnavailable(t, err)
	}
}

func TestPostgresBadURL(t *testing.T) {
	for _, u := range []string{
		"postgres://tw:" + secret + "@127.0.0.1:notaport/db",
		"postgres://tw:s3cr/3t-Pa55@host/db",
		"host=h port=x password=" + secret,
	} {
		_, err := store.OpenPostgres(t.Context(), u, store.Options{})
		if err == nil {
			t.Fatalf("OpenPostgres(%q) succeeded", u)
		}
		if strings.Contains(err.Error(), "3t-Pa55") {
			t.Errorf("error %q contains the password", err)
		}
	}
}

// TestPostgresDatabaseGone cuts the store off from the database: calls fail
// with store_unavailable, without the password, and succeed again once the
// database is back.
func TestPostgresDatabaseGone(t *testing.T) {
	base := pgtest.URL(t)
	dsn, _ := pgSchema(t, base)
	px := pgtest.NewProxy(t, base)
	dsn = pgtest.WithParams(t, dsn, map[string]string{"host": px.Addr(), "connect_timeout": "5"})

	ctx := t.Context()
	st, err := store.OpenPostgres(ctx, dsn, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	tenant := proto.GuildID(1)
	if err := st.KvSet(ctx, tenant, "k", json.RawMessage(`1`)); err != nil {
		t.Fatal(err)
	}

	px.Cut()
	_, _, err = st.KvGet(ctx, tenant, "k")
	wantUnavailable(t, err)
	wantUnavailable(t, st.KvSet(ctx, tenant, "k", json.RawMessage(`2`)))
	wantUnavailable(t, st.Ping(ctx))
	_, err = st.Templates(ctx, tenant)
	wantUnavailable(t, err)

	px.Start()
	if v, ok, err := st.KvGet(ctx, tenant, "k"); err != nil || !ok || string(v) != "1" {
		t.Fatalf("KvGet once the database is back = %s, %v, %v", v, ok, err)
	}
	if err := st.KvSet(ctx, tenant, "k", json.RawMessage(`3`)); err != nil {
		t.Fatalf("KvSet once the database is back: %v", err)
	}

	// A call whose context ends is not store_unavailable.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := st.KvGet(cctx, tenant, "k"); !errors.Is(err, context.Canceled) {
		t.Fatalf("KvGet with a cancelled context = %v, want context.Canceled", err)
	}
}

package cluster_test

import (
	"context"
	"errors"
	"github.com/templateworker/templateworker/internal/pgtest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/cluster"
	"github.com/templateworker/templateworker/proto"
)

// testDatabase returns a URL whose search_path is a schema of the test's
// own (dropped at its end), so that leftovers of other tests never count
// as masters; it skips without a database (fails under CI=true).
func testDatabase(t testing.TB) string {
	t.Helper()
	dsn, _, _ := pgtest.Schema(t, pgtest.URL(t))
	return dsn
}

func register(t *testing.T, db, name string, lo, hi int, peers map[string]string) (*cluster.Registry, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := cluster.Register(ctx, cluster.Config{
		DatabaseURL: db,
		Self:        cluster.Member{Name: name, URL: "http://" + name + ".example:7878", Range: cluster.Range{Lo: lo, Hi: hi}, Shards: 32},
		Peers:       peers,
		Heartbeat:   50 * time.Millisecond,
		Log:         zerolog.Nop(),
	})
	if err == nil {
		t.Cleanup(func() { _ = r.Close() })
	}
	return r, err
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within a minute", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRegistrySplitOverlapAndGap(t *testing.T) {
	db := testDatabase(t)
	a, err := register(t, db, "a", 0, 15, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Problem(); err == nil || !strings.Contains(err.Error(), "shards 16-31 have no live owner") {
		t.Fatalf("a alone: Problem = %v, want the gap 16-31", err)
	}
	b, err := register(t, db, "b", 16, 31, map[string]string{"a": "http://10.0.0.1:7878"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a sees b", func() bool { return a.Problem() == nil })
	if err := b.Problem(); err != nil {
		t.Fatalf("b: Problem = %v", err)
	}
	if owner, err := a.Owner(20); err != nil || owner.Name != "b" || owner.URL != "http://b.example:7878" {
		t.Fatalf("a.Owner(20) = %+v, %v; want b", owner, err)
	}
	if owner, err := b.Owner(3); err != nil || owner.Name != "a" || owner.URL != "http://10.0.0.1:7878" {
		t.Fatalf("b.Owner(3) = %+v, %v; want a at the --peers URL", owner, err)
	}
	if !a.Local(15) || a.Local(16) || !b.Local(31) {
		t.Fatal("Local is wrong")
	}

	// An overlapping master is refused, and leaves no row behind.
	if _, err := register(t, db, "c", 8, 20, nil); !errors.Is(err, cluster.ErrOverlap) ||
		!strings.Contains(err.Error(), "shard range 8-20 of master c overlaps range") {
		t.Fatalf("overlapping register: %v, want ErrOverlap naming the ranges", err)
	}
	if _, err := register(t, db, "d", 0, 15, nil); !errors.Is(err, cluster.ErrOverlap) {
		t.Fatalf("identical range: %v, want ErrOverlap", err)
	}
	members, err := cluster.List(context.Background(), db)
	if err != nil || len(members) != 2 {
		t.Fatalf("List = %+v, %v; want a and b", members, err)
	}

	// b stops: its shards are a gap for a, and its calls fail fast.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a sees the gap", func() bool {
		err := a.Problem()
		return err != nil && strings.Contains(err.Error(), "shards 16-31 have no live owner")
	})
	if _, err := a.Owner(20); proto.CodeOf(err) != proto.CodeShardUnavailable || !strings.Contains(err.Error(), "shard 20 has no live owner") {
		t.Fatalf("a.Owner(20) without b: %v", err)
	}
	// Now c may take 16-31.
	if _, err := register(t, db, "c", 16, 31, nil); err != nil {
		t.Fatalf("c takes b's range: %v", err)
	}
	waitFor(t, "a sees c", func() bool { return a.Problem() == nil })
}

func TestRegistryStaleMasterIsGone(t *testing.T) {
	db := testDatabase(t)
	a, err := register(t, db, "a", 0, 31, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A master that died without deregistering: its heartbeat ages.
	conn, err := pgx.Connect(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), `INSERT INTO templateworker_masters (name, url, shard_lo, shard_hi, shards, instance, heartbeat_at)
		VALUES ('dead', 'http://dead:1', 0, 31, 32, 'x', now() - interval '1 minute')`); err != nil {
		t.Fatal(err)
	}
	// a has read the table since the dead master's row went in: it knows
	// the row, and does not count it.
	waitFor(t, "a sees the dead master's row", func() bool {
		for _, m := range a.Members() {
			if m.Name == "dead" {
				return true
			}
		}
		return false
	})
	if err := a.Problem(); err != nil {
		t.Fatalf("a dead master counts: %v", err)
	}
	// A live one with the same range is an overlap, reported on heartbeat.
	if _, err := conn.Exec(context.Background(), `UPDATE templateworker_masters SET heartbeat_at = now() + interval '1 hour' WHERE name = 'dead'`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a reports the overlap", func() bool {
		err := a.Problem()
		return err != nil && strings.Contains(err.Error(), "shards 0-31 are claimed by a and dead (overlap)")
	})
	// Someone takes a's name: a says so.
	if _, err := conn.Exec(context.Background(), `UPDATE templateworker_masters SET instance = 'other' WHERE name = 'a'`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a reports its name taken", func() bool {
		err := a.Problem()
		return err != nil && strings.Contains(err.Error(), `another master registered under the name "a"`)
	})
}

func TestListWithoutTable(t *testing.T) {
	db := testDatabase(t)
	members, err := cluster.List(context.Background(), db)
	if err != nil || len(members) != 0 {
		t.Fatalf("List on an empty schema = %v, %v", members, err)
	}
}

// TestNotifyListen sends template changes through PostgreSQL and checks a
// Listener delivers the others' and skips its own, also after its
// connection was killed.
func TestNotifyListen(t *testing.T) {
	db := testDatabase(t)
	base := uint64(time.Now().UnixNano()) << 8 // unique tenants: the channel is database-wide
	got := make(chan proto.Id, 16)
	var reconnects atomic.Int32
	l := cluster.Listen(cluster.ListenConfig{
		DatabaseURL: db,
		Self:        "b",
		OnChange: func(id proto.Id) {
			if id.ID >= base && id.ID < base+100 {
				got <- id
			}
		},
		OnReconnect: func() { reconnects.Add(1) },
		Log:         zerolog.Nop(),
	})
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.WaitListening(ctx); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	expect := func(want proto.Id) {
		t.Helper()
		select {
		case id := <-got:
			if id != want {
				t.Fatalf("notified of %v, want %v", id, want)
			}
		case <-ctx.Done():
			t.Fatalf("no notification of %v", want)
		}
	}
	if err := cluster.Notify(ctx, conn, "b", proto.GuildID(base+1)); err != nil { // its own: skipped
		t.Fatal(err)
	}
	if err := cluster.Notify(ctx, conn, "a", proto.UserID(base+2)); err != nil {
		t.Fatal(err)
	}
	expect(proto.UserID(base + 2))

	// Kill the listener's connection: it reconnects and says so.
	schema, _ := url.Parse(db)
	if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE application_name = $1 AND pid <> pg_backend_pid() AND query LIKE 'LISTEN%'`, schema.Query().Get("application_name")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the listener reconnects", func() bool { return reconnects.Load() == 1 })
	if err := cluster.Notify(ctx, conn, "a", proto.GuildID(base+3)); err != nil {
		t.Fatal(err)
	}
	expect(proto.GuildID(base + 3))
}

package store_test

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/templateworker/templateworker/internal/pgtest"
	"testing"

	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/store"
)

const benchKeys = 100

func benchKVGet(b *testing.B, s store.Store) {
	ctx := context.Background()
	tenant := proto.GuildID(1)
	keys := make([]string, benchKeys)
	for i := range keys {
		keys[i] = fmt.Sprintf("bench/%03d", i)
		if err := s.KvSet(ctx, tenant, keys[i], json.RawMessage(`{"n":1,"s":"some text"}`)); err != nil {
			b.Fatal(err)
		}
	}
	for i := 0; b.Loop(); i++ {
		if _, ok, err := s.KvGet(ctx, tenant, keys[i%benchKeys]); err != nil || !ok {
			b.Fatal(ok, err)
		}
	}
}

func benchKVSet(b *testing.B, s store.Store) {
	ctx := context.Background()
	tenant := proto.GuildID(1)
	keys := make([]string, benchKeys)
	for i := range keys {
		keys[i] = fmt.Sprintf("bench/%03d", i)
	}
	for i := 0; b.Loop(); i++ {
		v := json.RawMessage(fmt.Sprintf(`{"n":%d,"s":"some text"}`, i))
		if err := s.KvSet(ctx, tenant, keys[i%benchKeys], v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkKVGetSQLite(b *testing.B) { benchKVGet(b, openSQLite(b, store.DefaultQuota)) }

func BenchmarkKVSetSQLite(b *testing.B) { benchKVSet(b, openSQLite(b, store.DefaultQuota)) }

func BenchmarkKVGetPostgres(b *testing.B) {
	if testDatabaseURLOrSkip(b) {
		p, _, _ := openPostgres(b, store.DefaultQuota)
		benchKVGet(b, p)
	}
}

func BenchmarkKVSetPostgres(b *testing.B) {
	if testDatabaseURLOrSkip(b) {
		p, _, _ := openPostgres(b, store.DefaultQuota)
		benchKVSet(b, p)
	}
}

// testDatabaseURLOrSkip skips a benchmark without a test database, even in
// CI: benchmarks measure, the tests check.
func testDatabaseURLOrSkip(b *testing.B) bool {
	if pgtest.Set() {
		return true
	}
	b.Skipf("%s not set", pgtest.Env)
	return false
}

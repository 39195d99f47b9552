package storetest

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/store"
)

var lifecycleTests = []test{
	{"MigrationsIdempotent", testMigrationsIdempotent},
	{"NewerSchemaRefused", testNewerSchemaRefused},
	{"Ping", testPing},
	{"ClosedStoreUnavailable", testClosed},
}

// harness returns s as a Harness, failing the test when it is not one.
func harness(t *testing.T, s store.Store) Harness {
	t.Helper()
	h, ok := s.(Harness)
	if !ok {
		t.Fatalf("%T does not implement storetest.Harness", s)
	}
	return h
}

func testMigrationsIdempotent(t *testing.T, open Opener) {
	s := open(t, store.Quota{})
	c := ctx(t)
	set(t, s, guild, "k", `"kept"`)
	must(t, s.PutTemplate(c, guild, proto.Template{Name: "t", Code: "return", Events: []string{"E"}}))
	h := harness(t, s)
	for i := range 2 {
		s2, err := h.Reopen(c, store.Quota{})
		if err != nil {
			t.Fatalf("reopen %d: %v", i+1, err)
		}
		if v := get(t, s2, guild, "k"); v != `"kept"` {
			t.Errorf("after reopen %d: k = %q", i+1, v)
		}
		if ts := templates(t, s2, guild); len(ts) != 1 {
			t.Errorf("after reopen %d: %d templates", i+1, len(ts))
		}
		must(t, s2.Close())
	}
	set(t, s, guild, "k2", `1`) // the first store still works
}

func testNewerSchemaRefused(t *testing.T, open Opener) {
	s := open(t, store.Quota{})
	c := ctx(t)
	h := harness(t, s)
	newer := store.SchemaVersion + 5
	must(t, h.ForceSchemaVersion(c, newer))
	s2, err := h.Reopen(c, store.Quota{})
	if err == nil {
		s2.Close()
		t.Fatal("a database migrated by a newer binary was opened")
	}
	var te *store.SchemaTooNewError
	if !errors.As(err, &te) || te.Database != newer || te.Binary != store.SchemaVersion {
		t.Fatalf("error = %v, want a SchemaTooNewError for %d > %d", err, newer, store.SchemaVersion)
	}
	for _, v := range []int{newer, store.SchemaVersion} {
		if !strings.Contains(err.Error(), fmt.Sprint(v)) {
			t.Errorf("error %q does not name version %d", err, v)
		}
	}
}

func testPing(t *testing.T, open Opener) {
	s := open(t, store.Quota{})
	must(t, s.Ping(ctx(t)))
}

func testClosed(t *testing.T, open Opener) {
	s := open(t, store.Quota{})
	c := ctx(t)
	set(t, s, guild, "k", `1`)
	must(t, s.Close())
	_, _, err := s.KvGet(c, guild, "k")
	wantCode(t, err, proto.CodeStoreUnavailable)
	wantCode(t, s.Ping(c), proto.CodeStoreUnavailable)
}

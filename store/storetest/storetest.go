// Package storetest is the conformance suite every store.Store
// implementation passes, so that SQLite and PostgreSQL behave identically.
//
// An implementation's test calls Run with a function that opens a store on a
// fresh, empty database:
//
//	func TestSQLite(t *testing.T) {
//		storetest.Run(t, func(t *testing.T, q store.Quota) store.Store { ... })
//	}
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/templateworker/templateworker/proto"
	"github.com/templateworker/templateworker/store"
)

// Harness is what the suite needs of a store besides store.Store, to test
// migrations. The stores open returns must implement it.
type Harness interface {
	store.Store
	// Reopen opens another store on the same database with quota q, as a
	// freshly started process would, applying migrations. The caller
	// closes it.
	Reopen(ctx context.Context, q store.Quota) (store.Store, error)
	// ForceSchemaVersion records version in the database as though a
	// binary with that SchemaVersion had migrated it.
	ForceSchemaVersion(ctx context.Context, version int) error
}

// Opener opens a store with quota q on a database that no other test
// uses, empty the first time it is called in a test, and closes it when the
// test ends (t.Cleanup). It calls t.Fatal when it cannot.
type Opener func(t *testing.T, q store.Quota) store.Store

// test is one conformance test.
type test struct {
	name string
	run  func(t *testing.T, open Opener)
}

// tests is the whole suite; the files of this package fill it in.
var tests = concat(templateTests, bulkTests, kvTests, limitTests, quotaTests, concurrencyTests, quarantineTests, eventTests, lifecycleTests)

// Run runs the conformance suite against the stores open returns, one
// subtest per behaviour.
func Run(t *testing.T, open Opener) {
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.run(t, open) })
	}
}

func concat(lists ...[]test) []test {
	var all []test
	for _, l := range lists {
		all = append(all, l...)
	}
	return all
}

// Tenants used throughout: a guild and a user with the same snowflake must
// be different tenants.
var (
	guild = proto.GuildID(1)
	user  = proto.UserID(1)
)

// ctx returns a context that ends with the test or after a minute.
func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return c
}

// wantCode fails the test unless err is a *proto.Error with code.
func wantCode(t *testing.T, err error, code string) *proto.Error {
	t.Helper()
	var pe *proto.Error
	if !errors.As(err, &pe) {
		t.Fatalf("error = %v (%T), want a *proto.Error with code %s", err, err, code)
	}
	if pe.Code != code {
		t.Fatalf("error code = %s (%v), want %s", pe.Code, err, code)
	}
	return pe
}

// must fails the test on err.
func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// set sets key to the JSON value v, failing the test on error.
func set(t *testing.T, s store.Store, tenant proto.Id, key, v string) {
	t.Helper()
	if err := s.KvSet(ctx(t), tenant, key, json.RawMessage(v)); err != nil {
		t.Fatalf("KvSet(%s, %q, %.40s): %v", tenant, key, v, err)
	}
}

// get returns the value of key, "" when absent.
func get(t *testing.T, s store.Store, tenant proto.Id, key string) string {
	t.Helper()
	v, ok, err := s.KvGet(ctx(t), tenant, key)
	if err != nil {
		t.Fatalf("KvGet(%s, %q): %v", tenant, key, err)
	}
	if !ok {
		if v != nil {
			t.Fatalf("KvGet(%s, %q) = %s but reports the key missing", tenant, key, v)
		}
		return ""
	}
	return string(v)
}

// keys returns the keys KvFind lists for prefix, in order.
func keys(t *testing.T, s store.Store, tenant proto.Id, prefix string) []string {
	t.Helper()
	items, err := s.KvFind(ctx(t), tenant, prefix)
	if err != nil {
		t.Fatalf("KvFind(%s, %q): %v", tenant, prefix, err)
	}
	if items == nil {
		t.Fatalf("KvFind(%s, %q) = nil, want a non-nil slice", tenant, prefix)
	}
	ks := make([]string, len(items))
	for i, it := range items {
		ks[i] = it.Key
	}
	return ks
}

// equal fails the test unless got and want hold the same strings in order.
func equal(t *testing.T, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, "\x00") != strings.Join(want, "\x00") || len(got) != len(want) {
		t.Fatalf("%s = %q, want %q", what, got, want)
	}
}

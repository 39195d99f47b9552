// Package store keeps the durable state of every tenant — its templates and
// its key-value data — in SQLite (embedded, the default) or PostgreSQL,
// behind one interface with identical semantics.
//
// # Choosing a database
//
// Open picks PostgreSQL when Config.DatabaseURL is set (a postgres:// URL or
// key=value DSN) and otherwise SQLite in Config.DataDir/templateworker.db.
// SQLite runs in WAL mode with a busy timeout and foreign keys; all writes of
// a process share one connection, reads have a pool of their own. PostgreSQL
// is reached through a pgxpool pool (sized by pool_max_conns and the other
// pool_* URL parameters, by default max(4, CPUs) connections). A call that
// finds the database gone resets the pool, so the next calls dial afresh,
// and a read, or a write transaction that had not reached its commit, is
// retried once on a fresh connection: the store rides out a database
// restart, and reconnects by itself after an outage.
//
// # Schema and migrations
//
// Numbered migrations per dialect are embedded (migrations/<dialect>/) and
// recorded in the schema_version table. Opening a store applies the pending
// ones — in PostgreSQL under pg_advisory_lock, so that processes starting
// together do not race — and refuses a database migrated by a newer binary
// with a *SchemaTooNewError. Migrate does the same for the
// `templateworker migrate` command.
//
// # Semantics shared by both databases
//
//   - Keys are 1 to proto.MaxKeyBytes bytes of valid UTF-8 without NUL bytes;
//     values are valid JSON of at most proto.MaxValueBytes bytes, kept and
//     returned byte for byte (PostgreSQL stores text, not jsonb). Anything
//     else is invalid_kv.
//   - KvFind and Templates order by byte order (PostgreSQL columns use
//     COLLATE "C"); a KvFind prefix is matched literally, as a key range, so
//     '%', '_' and '\' are ordinary characters.
//   - Quota: a write that would take a tenant past Quota.MaxKeys keys or
//     Quota.MaxBytes bytes (keys plus values) fails with kv_quota_exceeded
//     and changes nothing. Each tenant's usage is kept in kv_usage, updated
//     in the same transaction as the write; the writes of one tenant are
//     serialised (one writer connection in SQLite, a lock on the tenant's
//     kv_usage row in PostgreSQL), so concurrent writers cannot overshoot.
//   - A tenant is its kind and snowflake: Guild 1 and User 1 are unrelated.
//     Snowflakes are stored as the bits of a signed 64-bit integer.
//   - Quarantines (of tenants the master keeps away from its workers) are
//     kept with microsecond precision; a quarantine whose end has passed is
//     never listed.
//   - An unreachable database is store_unavailable; error messages and logs
//     never contain the database password (see RedactURL).
//
// The conformance suite in store/storetest checks all of this against both
// implementations.
package store

import (
	"context"
	"encoding/json"
	"time"

	"github.com/templateworker/templateworker/proto"
)

// Store is the durable state of every tenant. Implementations are safe for
// concurrent use. Errors are *proto.Error where the caller can act on them:
// store_unavailable when the database cannot be reached, invalid_kv for a key
// or value outside the limits, kv_quota_exceeded for a write past a tenant's
// quota, not_found for a missing template.
type Store interface {
	// PutTemplate creates or replaces the tenant's template t.Name.
	PutTemplate(ctx context.Context, tenant proto.Id, t proto.Template) error
	// DeleteTemplate removes a template; not_found if it does not exist.
	DeleteTemplate(ctx context.Context, tenant proto.Id, name string) error
	// Templates lists the tenant's templates ordered by name.
	Templates(ctx context.Context, tenant proto.Id) ([]proto.Template, error)
	// TenantsWithEvent lists every tenant with a template subscribed to event.
	TenantsWithEvent(ctx context.Context, event string) ([]proto.Id, error)

	// KvGet returns the value of key and whether it exists.
	KvGet(ctx context.Context, tenant proto.Id, key string) (json.RawMessage, bool, error)
	// KvSet creates or replaces key. Last writer wins.
	KvSet(ctx context.Context, tenant proto.Id, key string, value json.RawMessage) error
	// KvDelete removes key; deleting a missing key is not an error.
	KvDelete(ctx context.Context, tenant proto.Id, key string) error
	// KvFind lists the keys starting with prefix, ordered by key (byte order).
	KvFind(ctx context.Context, tenant proto.Id, prefix string) ([]proto.KVItem, error)

	// SaveQuarantine records the quarantine of q.Tenant, replacing an
	// earlier one.
	SaveQuarantine(ctx context.Context, q proto.Quarantine) error
	// LiftQuarantine removes the quarantine of tenant; lifting none is not
	// an error.
	LiftQuarantine(ctx context.Context, tenant proto.Id) error
	// Quarantines lists the quarantines that end after now, ordered by
	// tenant, and removes those that have ended.
	Quarantines(ctx context.Context, now time.Time) ([]proto.Quarantine, error)

	// EventStore is the master's durable event queue.
	EventStore

	// Ping reports whether the database is reachable.
	Ping(ctx context.Context) error
	// Close releases the database.
	Close() error
}

// Quota bounds what one tenant may keep in the key-value store. Zero means
// unlimited.
type Quota struct {
	// MaxKeys is the most keys a tenant may have.
	MaxKeys int
	// MaxBytes is the most bytes of keys plus encoded values a tenant may have.
	MaxBytes int64
}

// DefaultQuota is the quota when none is configured: 10,000 keys, 16 MiB.
var DefaultQuota = Quota{MaxKeys: 10000, MaxBytes: 16 << 20}

// BoundedFinder is a Store whose KvFind can stop reading once its answer
// is too large: the master refuses a worker's find over one frame, and
// reading the rest of a tenant's KV (up to its byte quota) to say so
// would be work no tenant is charged for.
type BoundedFinder interface {
	// KvFindBounded is KvFind, except that with maxBytes > 0 it stops
	// reading once the items read take more than maxBytes as
	// proto.KVItemsBound counts them, and reports over with the items
	// read so far.
	KvFindBounded(ctx context.Context, tenant proto.Id, prefix string, maxBytes int) (items []proto.KVItem, over bool, err error)
}

// answerBound counts the items of a KvFindBounded answer as
// proto.KVItemsBound does.
type answerBound struct{ n int }

// over adds it and reports whether the answer is now over maxBytes (never
// when maxBytes is 0).
func (b *answerBound) over(it proto.KVItem, maxBytes int) bool {
	if b.n == 0 {
		b.n = proto.KVItemsBound(nil)
	}
	b.n += proto.KVItemsBound([]proto.KVItem{it}) - proto.KVItemsBound(nil)
	return maxBytes > 0 && b.n > maxBytes
}

// Package store keeps the durable state of every tenant — its templates and
// its key-value data — in SQLite (embedded, the default) or PostgreSQL,
// behind one interface with identical semantics.
package store

import (
	"context"
	"encoding/json"

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

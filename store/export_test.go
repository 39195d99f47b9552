package store

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// Test hooks for the external tests (package store_test), which cannot
// reach unexported fields but must, to drive the conformance suite.

// ForceSchemaVersion records version as applied, as a newer binary would.
func (s *SQLite) ForceSchemaVersion(ctx context.Context, version int) error {
	_, err := s.w.ExecContext(ctx, `INSERT INTO schema_version (version, applied_at) VALUES (?, 0)`, version)
	return err
}

// Path returns the database file.
func (s *SQLite) Path() string { return s.path }

// ForceSchemaVersion records version as applied, as a newer binary would.
func (p *Postgres) ForceSchemaVersion(ctx context.Context, version int) error {
	return p.write(ctx, "force schema version", func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO schema_version (version) VALUES ($1)`, version)
		return err
	})
}

// PoolMaxConns returns the most connections the store's pool may hold.
func (p *Postgres) PoolMaxConns() int32 { return p.pool.Config().MaxConns }

// MigrationLockKey is the advisory lock key held while migrating.
const MigrationLockKey = migrationLockKey

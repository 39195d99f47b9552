package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/rs/zerolog"
)

// SQLiteFile is the name of the SQLite database in the data directory.
const SQLiteFile = "templateworker.db"

// Options tune a store, whichever database holds it.
type Options struct {
	// Quota bounds each tenant's key-value data. Zero fields mean
	// unlimited; callers wanting the default pass DefaultQuota.
	Quota Quota
	// Logger receives migration and connection events. The zero Logger
	// discards them.
	Logger zerolog.Logger
	// Synchronous is SQLite's synchronous setting: "normal" (the default:
	// in WAL mode a commit survives a crash of the process, and a power
	// loss may lose the last commits) or "full" (a commit also survives a
	// power loss, at the cost of an fsync per commit). PostgreSQL ignores
	// it.
	Synchronous string
}

// Config says which database to open.
type Config struct {
	// DataDir holds the SQLite database, SQLiteFile, when DatabaseURL is
	// empty.
	DataDir string
	// DatabaseURL, when set, selects PostgreSQL: a postgres:// URL or a
	// key=value DSN as understood by pgx.
	DatabaseURL string
	// Options apply to either database.
	Options Options
}

// Open opens the store cfg selects — PostgreSQL when cfg.DatabaseURL is set,
// otherwise SQLite in cfg.DataDir — applying pending migrations.
func Open(ctx context.Context, cfg Config) (Store, error) {
	if cfg.DatabaseURL != "" {
		return OpenPostgres(ctx, cfg.DatabaseURL, cfg.Options)
	}
	return OpenSQLite(ctx, filepath.Join(cfg.DataDir, SQLiteFile), cfg.Options)
}

// Migrate applies the pending migrations of the database cfg selects, as
// Open does, and returns the schema version the database is at afterwards.
func Migrate(ctx context.Context, cfg Config) (version int, err error) {
	if cfg.DatabaseURL != "" {
		p, err := OpenPostgres(ctx, cfg.DatabaseURL, cfg.Options)
		if err != nil {
			return 0, err
		}
		defer p.Close()
		return p.version, nil
	}
	s, err := OpenSQLite(ctx, filepath.Join(cfg.DataDir, SQLiteFile), cfg.Options)
	if err != nil {
		return 0, err
	}
	defer s.Close()
	return s.version, nil
}

// PrivateFile makes the file at path readable and writable by its owner
// only (0600) if its mode allows more; a missing file is no error.
func PrivateFile(path string) error {
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(path, 0o600); err != nil {
			return fmt.Errorf("make %s private (0600): %w", filepath.Base(path), err)
		}
	}
	return nil
}

// privateSQLiteFiles creates the database file at path with mode 0600 if
// missing (SQLite then creates its -wal and -shm files with the same
// mode) and makes the database, -wal and -shm files of an existing data
// dir 0600. A file this process may not chmod (another owner's) is logged
// and left as it is.
func privateSQLiteFiles(path string, log zerolog.Logger) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("create sqlite database: %w", err)
	}
	_ = f.Close()
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if err := PrivateFile(p); err != nil {
			log.Warn().Err(err).Str("file", filepath.Base(p)).Msg("sqlite file mode")
		}
	}
	return nil
}

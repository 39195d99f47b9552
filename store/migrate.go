package store

import (
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
)

// SchemaVersion is the database schema version this binary creates and
// understands: the number of the newest embedded migration. A database at a
// newer version is refused with a *SchemaTooNewError.
const SchemaVersion = 4

//go:embed migrations
var migrationFiles embed.FS

// migration is one numbered schema change, e.g. migrations/sqlite/0001_init.sql.
type migration struct {
	version int
	name    string
	sql     string
}

// SchemaTooNewError reports a database migrated by a newer templateworker.
type SchemaTooNewError struct {
	// Database is the schema version recorded in the database.
	Database int
	// Binary is SchemaVersion of the running binary.
	Binary int
}

// Error implements error.
func (e *SchemaTooNewError) Error() string {
	return fmt.Sprintf("database schema version %d is newer than this binary supports (%d); upgrade templateworker",
		e.Database, e.Binary)
}

// loadMigrations returns the migrations of dialect ("sqlite" or "postgres")
// in order. Their versions must run 1, 2, ... SchemaVersion without gaps.
func loadMigrations(dialect string) ([]migration, error) {
	dir := path.Join("migrations", dialect)
	entries, err := fs.ReadDir(migrationFiles, dir)
	if err != nil {
		return nil, fmt.Errorf("read %s migrations: %w", dialect, err)
	}
	var ms []migration
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".sql") {
			continue
		}
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s/%s: name must start with its version, e.g. 0001_", dir, e.Name())
		}
		b, err := fs.ReadFile(migrationFiles, path.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("read migration: %w", err)
		}
		ms = append(ms, migration{version: v, name: e.Name(), sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i, m := range ms {
		if m.version != i+1 {
			return nil, fmt.Errorf("%s migrations: expected version %d, found %s", dialect, i+1, m.name)
		}
	}
	if len(ms) != SchemaVersion {
		return nil, fmt.Errorf("%s migrations: found %d, SchemaVersion is %d", dialect, len(ms), SchemaVersion)
	}
	return ms, nil
}

// pendingMigrations returns the migrations a database at version current
// still needs, or a *SchemaTooNewError.
func pendingMigrations(all []migration, current int) ([]migration, error) {
	if current > len(all) {
		return nil, &SchemaTooNewError{Database: current, Binary: len(all)}
	}
	return all[current:], nil
}

package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/templateworker/templateworker/proto"
)

// SQLite is a Store in one SQLite database file, opened in WAL mode. Every
// write goes through a single connection, so writers of this process never
// contend for the database lock; reads use a pool of their own connections
// and run concurrently with the writer.
type SQLite struct {
	path    string
	w       *sql.DB // one connection, for every write
	r       *sql.DB // read-only connections
	quota   Quota
	log     zerolog.Logger
	version int
	closed  atomic.Bool
	stmts   stmtCache
}

var _ Store = (*SQLite)(nil)

// sqliteBusyTimeout is how long a statement waits for a lock held by another
// process (a second master, `templateworker migrate`) before failing.
const sqliteBusyTimeout = 10 * time.Second

// OpenSQLite opens (creating if needed) the SQLite database at path and
// applies pending migrations. The parent directory is created with mode
// 0700 if missing; the database and its -wal and -shm files are 0600.
func OpenSQLite(ctx context.Context, path string, opts Options) (*SQLite, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite path %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, fmt.Errorf("create sqlite directory: %w", err)
	}
	if err := privateSQLiteFiles(abs, opts.Logger); err != nil {
		return nil, err
	}
	s := &SQLite{path: abs, quota: opts.Quota, log: opts.Logger}
	busy := fmt.Sprintf("busy_timeout(%d)", sqliteBusyTimeout.Milliseconds())
	sync := "synchronous(NORMAL)"
	switch opts.Synchronous {
	case "", "normal", "NORMAL":
	case "full", "FULL":
		sync = "synchronous(FULL)"
	default:
		return nil, fmt.Errorf("sqlite synchronous setting %q: want normal or full", opts.Synchronous)
	}
	s.w, err = sql.Open("sqlite", sqliteDSN(abs, url.Values{
		"_pragma": {busy, "journal_mode(WAL)", sync, "foreign_keys(1)"},
		// Write transactions take the write lock at BEGIN, so that one
		// never fails upgrading a read lock when another process writes.
		"_txlock": {"immediate"},
	}))
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", abs, err)
	}
	s.w.SetMaxOpenConns(1)
	s.w.SetMaxIdleConns(1)
	s.w.SetConnMaxIdleTime(0)
	s.w.SetConnMaxLifetime(0)

	if s.version, err = s.migrate(ctx); err != nil {
		s.w.Close()
		return nil, err
	}
	// WAL mode is on now: -wal and -shm exist.
	if err := privateSQLiteFiles(abs, opts.Logger); err != nil {
		s.w.Close()
		return nil, err
	}

	s.r, err = sql.Open("sqlite", sqliteDSN(abs, url.Values{
		"_pragma": {busy, "foreign_keys(1)", "query_only(1)"},
	}))
	if err != nil {
		s.w.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", abs, err)
	}
	n := max(4, runtime.GOMAXPROCS(0))
	s.r.SetMaxOpenConns(n)
	s.r.SetMaxIdleConns(n)
	if err := s.prepareWriter(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("prepare sqlite statements: %w", err)
	}
	s.log.Debug().Str("path", abs).Int("schema_version", s.version).Msg("sqlite store open")
	return s, nil
}

// sqliteDSN returns a file: URI for path, so that any character in the path
// is escaped rather than taken for URI syntax.
func sqliteDSN(path string, q url.Values) string {
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(path), RawQuery: q.Encode()}
	return u.String()
}

// migrate brings the schema up to SchemaVersion in one write transaction,
// which also keeps a concurrently starting process from migrating twice.
func (s *SQLite) migrate(ctx context.Context) (int, error) {
	all, err := loadMigrations("sqlite")
	if err != nil {
		return 0, err
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, s.fail("begin migration", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
		version    INTEGER PRIMARY KEY,
		applied_at INTEGER NOT NULL)`); err != nil {
		return 0, s.fail("create schema_version", err)
	}
	var current int
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&current); err != nil {
		return 0, s.fail("read schema version", err)
	}
	pending, err := pendingMigrations(all, current)
	if err != nil {
		return 0, err
	}
	if len(pending) == 0 {
		return current, nil
	}
	for _, m := range pending {
		if _, err := tx.ExecContext(ctx, m.sql); err != nil {
			return 0, fmt.Errorf("sqlite migration %s: %w", m.name, s.fail("migrate", err))
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version, applied_at) VALUES (?, ?)`,
			m.version, time.Now().UnixMicro()); err != nil {
			return 0, s.fail("record schema version", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, s.fail("commit migration", err)
	}
	last := pending[len(pending)-1].version
	s.log.Info().Str("path", s.path).Int("from", current).Int("to", last).Msg("sqlite schema migrated")
	return last, nil
}

// Close closes the database. Closing twice is harmless.
func (s *SQLite) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.closeStmts()
	return errors.Join(s.r.Close(), s.w.Close())
}

// Ping reports whether the database file can be read.
func (s *SQLite) Ping(ctx context.Context) error {
	var n int
	if err := s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_version`).Scan(&n); err != nil {
		return s.fail("ping", err)
	}
	return nil
}

// fail turns a database error into the error the Store contract promises:
// store_unavailable when the database cannot be used right now, otherwise
// err wrapped with the operation.
func (s *SQLite) fail(op string, err error) error {
	if err == nil {
		return nil
	}
	var pe *proto.Error
	if errors.As(err, &pe) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("sqlite %s: %w", op, err)
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL,
			sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PROTOCOL:
			return proto.Errorf(proto.CodeStoreUnavailable, "sqlite %s: %v", op, err)
		}
	}
	if errors.Is(err, sql.ErrConnDone) || err.Error() == "sql: database is closed" {
		return proto.Errorf(proto.CodeStoreUnavailable, "sqlite %s: %v", op, err)
	}
	return fmt.Errorf("sqlite %s: %w", op, err)
}

// PutTemplate creates or replaces the tenant's template t.Name.
func (s *SQLite) PutTemplate(ctx context.Context, tenant proto.Id, t proto.Template) error {
	kind, err := kindName(tenant.Kind)
	if err != nil {
		return err
	}
	if t, err = checkTemplate(t, time.Now()); err != nil {
		return err
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return s.fail("begin", err)
	}
	defer tx.Rollback()
	id := idToDB(tenant.ID)
	if _, err := tx.ExecContext(ctx, `INSERT INTO templates (tenant_type, tenant_id, name, code, updated_at)
		VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (tenant_type, tenant_id, name) DO UPDATE SET code = excluded.code, updated_at = excluded.updated_at`,
		kind, id, t.Name, []byte(t.Code), t.UpdatedAt.UnixMicro()); err != nil {
		return s.fail("put template", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM template_events WHERE tenant_type = ? AND tenant_id = ? AND name = ?`,
		kind, id, t.Name); err != nil {
		return s.fail("put template events", err)
	}
	for i, e := range t.Events {
		if _, err := tx.ExecContext(ctx, `INSERT INTO template_events (tenant_type, tenant_id, name, position, event)
			VALUES (?, ?, ?, ?, ?)`, kind, id, t.Name, i, e); err != nil {
			return s.fail("put template events", err)
		}
	}
	return s.fail("commit", tx.Commit())
}

// DeleteTemplate removes a template; not_found if it does not exist.
func (s *SQLite) DeleteTemplate(ctx context.Context, tenant proto.Id, name string) error {
	kind, err := kindName(tenant.Kind)
	if err != nil {
		return err
	}
	if checkText("template name", name) != nil {
		return proto.Errorf(proto.CodeNotFound, "template %q not found", name)
	}
	res, err := s.w.ExecContext(ctx, `DELETE FROM templates WHERE tenant_type = ? AND tenant_id = ? AND name = ?`,
		kind, idToDB(tenant.ID), name)
	if err != nil {
		return s.fail("delete template", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return s.fail("delete template", err)
	} else if n == 0 {
		return proto.Errorf(proto.CodeNotFound, "template %q not found", name)
	}
	return nil
}

// Templates lists the tenant's templates ordered by name (byte order).
func (s *SQLite) Templates(ctx context.Context, tenant proto.Id) ([]proto.Template, error) {
	kind, err := kindName(tenant.Kind)
	if err != nil {
		return nil, err
	}
	// One statement reads the templates and their events together, so the
	// two are consistent without a transaction.
	st, err := s.stmt(ctx, s.r, `SELECT t.name, t.code, t.updated_at, e.event FROM templates t
		LEFT JOIN template_events e
			ON e.tenant_type = t.tenant_type AND e.tenant_id = t.tenant_id AND e.name = t.name
		WHERE t.tenant_type = ? AND t.tenant_id = ? ORDER BY t.name, e.position`)
	if err != nil {
		return nil, s.fail("list templates", err)
	}
	rows, err := st.QueryContext(ctx, kind, idToDB(tenant.ID))
	if err != nil {
		return nil, s.fail("list templates", err)
	}
	defer rows.Close()
	ts := []proto.Template{}
	for rows.Next() {
		var (
			name  string
			code  []byte
			at    int64
			event sql.NullString
		)
		if err := rows.Scan(&name, &code, &at, &event); err != nil {
			return nil, s.fail("list templates", err)
		}
		if n := len(ts); n == 0 || ts[n-1].Name != name {
			ts = append(ts, proto.Template{Name: name, Code: string(code), UpdatedAt: time.UnixMicro(at).UTC(), Events: []string{}})
		}
		if event.Valid {
			ts[len(ts)-1].Events = append(ts[len(ts)-1].Events, event.String)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail("list templates", err)
	}
	return ts, nil
}

// TenantsWithEvent lists every tenant with a template subscribed to event,
// ordered by kind, then id.
func (s *SQLite) TenantsWithEvent(ctx context.Context, event string) ([]proto.Id, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT DISTINCT tenant_type, tenant_id FROM template_events WHERE event = ?`, event)
	if err != nil {
		return nil, s.fail("tenants with event", err)
	}
	defer rows.Close()
	ids := []proto.Id{}
	for rows.Next() {
		var (
			kind string
			id   int64
		)
		if err := rows.Scan(&kind, &id); err != nil {
			return nil, s.fail("tenants with event", err)
		}
		t, err := tenantFromDB(kind, id)
		if err != nil {
			return nil, err
		}
		ids = append(ids, t)
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail("tenants with event", err)
	}
	slices.SortFunc(ids, compareTenants)
	return ids, nil
}

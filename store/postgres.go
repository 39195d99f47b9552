package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
)

// Postgres is a Store in a PostgreSQL database, reached through a pgxpool
// connection pool. The pool replaces broken connections by itself; in
// addition, when a call finds the database gone, every pooled connection is
// dropped (they most likely broke together), and a read that failed because
// its connection broke is retried once on a fresh one, as is a write
// transaction that failed before it was committed.
type Postgres struct {
	pool     *pgxpool.Pool
	password string // removed from every error message
	quota    Quota
	log      zerolog.Logger
	version  int
	closed   atomic.Bool
	down     atomic.Bool // the last call found the database unreachable
}

var _ Store = (*Postgres)(nil)

// postgresConnectTimeout bounds a connection attempt when the URL does not
// set connect_timeout.
const postgresConnectTimeout = 10 * time.Second

// migrationLockKey is the pg_advisory_lock key held while migrating, so that
// two processes starting at once migrate one after the other.
const migrationLockKey int64 = 0x74776d6967726174 // "twmigrat"

// OpenPostgres connects to the PostgreSQL database at url (a postgres:// URL
// or key=value DSN) and applies pending migrations. The URL may carry the
// pool settings pgxpool understands (pool_max_conns, pool_min_conns,
// pool_max_conn_lifetime, pool_max_conn_idle_time,
// pool_health_check_period, ...); without pool_max_conns the pool holds at
// most max(4, number of CPUs) connections. Errors never contain the
// password; an unreachable database is a store_unavailable *proto.Error.
func OpenPostgres(ctx context.Context, url string, opts Options) (*Postgres, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx's message quotes the URL; a malformed one may hide the
		// password where no redaction can find it, so say only which.
		return nil, fmt.Errorf("invalid database URL %s: check its syntax and pool_* settings", RedactURL(url))
	}
	cc := cfg.ConnConfig
	if cc.ConnectTimeout == 0 {
		cc.ConnectTimeout = postgresConnectTimeout
	}
	if _, ok := cc.RuntimeParams["application_name"]; !ok {
		cc.RuntimeParams["application_name"] = "templateworker"
	}
	p := &Postgres{password: cc.Password, quota: opts.Quota, log: opts.Logger}
	// NewWithConfig dials nothing: the first connection is made by migrate.
	if p.pool, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		return nil, p.fail("create pool", err)
	}
	if p.version, err = p.migrate(ctx); err != nil {
		p.pool.Close()
		return nil, err
	}
	p.log.Debug().Str("database", RedactURL(url)).Int("schema_version", p.version).
		Int32("pool_max_conns", cfg.MaxConns).Msg("postgres store open")
	return p, nil
}

// migrate brings the schema up to SchemaVersion under an advisory lock,
// each migration in its own transaction.
func (p *Postgres) migrate(ctx context.Context) (int, error) {
	all, err := loadMigrations("postgres")
	if err != nil {
		return 0, err
	}
	pc, err := p.pool.Acquire(ctx)
	if err != nil {
		return 0, p.fail("connect", err)
	}
	defer pc.Release()
	conn := pc.Conn()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, migrationLockKey); err != nil {
		return 0, p.fail("lock for migration", err)
	}
	defer func() {
		// The lock belongs to the session: a connection that cannot
		// release it must not go back to the pool holding it. Closing it
		// ends the session, which releases the lock.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := conn.Exec(uctx, `SELECT pg_advisory_unlock($1)`, migrationLockKey); err != nil {
			_ = conn.Close(uctx)
		}
	}()
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
		version    integer PRIMARY KEY,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return 0, p.fail("create schema_version", err)
	}
	var current int
	if err := conn.QueryRow(ctx, `SELECT COALESCE(max(version), 0) FROM schema_version`).Scan(&current); err != nil {
		return 0, p.fail("read schema version", err)
	}
	pending, err := pendingMigrations(all, current)
	if err != nil {
		return 0, err
	}
	for _, m := range pending {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO schema_version (version) VALUES ($1)`, m.version)
			return err
		})
		if err != nil {
			return 0, p.fail("migration "+m.name, err)
		}
		p.log.Info().Str("migration", m.name).Int("version", m.version).Msg("postgres schema migrated")
	}
	if len(pending) > 0 {
		current = pending[len(pending)-1].version
	}
	return current, nil
}

// Close closes the pool: idle connections at once, the ones in use when
// their calls end.
func (p *Postgres) Close() error {
	if !p.closed.Swap(true) {
		p.pool.Close()
	}
	return nil
}

// Ping reports whether the database answers.
func (p *Postgres) Ping(ctx context.Context) error {
	if err := p.open(); err != nil {
		return err
	}
	return p.fail("ping", p.withConn(ctx, func(c *pgx.Conn) error { return c.Ping(ctx) }))
}

// open fails once the store is closed.
func (p *Postgres) open() error {
	if p.closed.Load() {
		return errStoreClosed
	}
	return nil
}

var errStoreClosed = proto.Errorf(proto.CodeStoreUnavailable, "postgres store is closed")

// withConn runs f on a pooled connection. When f or the connection fails
// because the database cannot be reached (and not because ctx ended), the
// whole pool is reset: its other connections most likely broke in the same
// outage or restart, and the next calls should dial afresh rather than
// find them one by one.
func (p *Postgres) withConn(ctx context.Context, f func(c *pgx.Conn) error) error {
	c, err := p.pool.Acquire(ctx)
	if err == nil {
		err = f(c.Conn())
		c.Release()
	}
	switch {
	case err == nil:
		if p.down.Swap(false) {
			p.log.Info().Msg("postgres reachable again")
		}
	case p.closed.Load():
		return errStoreClosed
	case unavailable(err) && ctx.Err() == nil:
		p.pool.Reset()
		if !p.down.Swap(true) {
			p.log.Warn().Str("error", p.message(err)).Msg("postgres unreachable; connection pool reset")
		}
	}
	return err
}

// read runs an idempotent read, once more if the first attempt failed
// because its connection broke (the retry dials a fresh one).
func (p *Postgres) read(ctx context.Context, op string, f func(c *pgx.Conn) error) error {
	if err := p.open(); err != nil {
		return err
	}
	err := p.withConn(ctx, f)
	if err != nil && unavailable(err) && ctx.Err() == nil {
		p.log.Debug().Str("op", op).Str("error", p.message(err)).Msg("postgres read failed, retrying")
		err = p.withConn(ctx, f)
	}
	return p.fail(op, err)
}

// write runs f in a transaction and commits it. A transaction that failed
// because its connection broke before the commit changed nothing, so it is
// run once more; a failed commit is not retried.
func (p *Postgres) write(ctx context.Context, op string, f func(tx pgx.Tx) error) error {
	if err := p.open(); err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		committing := false
		err := p.withConn(ctx, func(c *pgx.Conn) error {
			tx, err := c.Begin(ctx)
			if err != nil {
				return err
			}
			defer tx.Rollback(ctx) // after Commit a no-op; on a cancelled ctx pgx closes the conn
			if err := f(tx); err != nil {
				return err
			}
			committing = true
			return tx.Commit(ctx)
		})
		if err != nil && attempt == 0 && !committing && unavailable(err) && ctx.Err() == nil {
			p.log.Debug().Str("op", op).Str("error", p.message(err)).Msg("postgres write failed, retrying")
			continue
		}
		return p.fail(op, err)
	}
}

// fail turns a database error into the error the Store contract promises:
// *proto.Error as is, store_unavailable when the database cannot be
// reached, otherwise err with op. No message contains the password.
func (p *Postgres) fail(op string, err error) error {
	if err == nil {
		return nil
	}
	var pe *proto.Error
	if errors.As(err, &pe) {
		return err
	}
	msg := "postgres " + op + ": " + p.message(err)
	if unavailable(err) && !errors.Is(err, context.Canceled) {
		return proto.Errorf(proto.CodeStoreUnavailable, "%s", msg)
	}
	return &redactedError{msg: msg, err: err}
}

// message is err's text without the password.
func (p *Postgres) message(err error) string {
	return redactSecret(err.Error(), p.password)
}

// redactedError shows a redacted message for an error that still unwraps to
// its cause, so errors.Is(err, context.Canceled) keeps working.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// unavailable reports whether err means the database cannot be used right
// now (as opposed to a bad statement): the connection failed or broke, or
// the server is shutting down, starting or out of connections.
func unavailable(err error) bool {
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case len(pe.Code) == 5 && pe.Code[:2] == "08": // connection_exception
			return true
		case pe.Code == "57P01", pe.Code == "57P02", pe.Code == "57P03": // shutdown, crash, starting
			return true
		case pe.Code == "53300", pe.Code == "3D000": // too_many_connections, database gone
			return true
		}
		return false
	}
	var ne net.Error
	return errors.As(err, &ne) || pgconn.Timeout(err) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, pgconn.ErrConnClosed) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, context.DeadlineExceeded)
}

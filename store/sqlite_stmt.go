package store

import (
	"context"
	"database/sql"
	"sync"
)

// stmtCache keeps the prepared statements of the SQLite store's hot paths
// (template loads, KV reads and writes). Without it every call parsed its
// SQL again: the parser was the largest part of a template load.
type stmtCache struct {
	mu sync.Mutex
	m  map[stmtKey]*sql.Stmt
}

type stmtKey struct {
	db *sql.DB
	q  string
}

// stmt returns the statement q prepared on db, preparing it once.
func (s *SQLite) stmt(ctx context.Context, db *sql.DB, q string) (*sql.Stmt, error) {
	c := &s.stmts
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := c.m[stmtKey{db, q}]; ok {
		return st, nil
	}
	st, err := db.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	if c.m == nil {
		c.m = make(map[stmtKey]*sql.Stmt)
	}
	c.m[stmtKey{db, q}] = st
	return st, nil
}

// prepareWriter prepares writerStmts on the writer, while no transaction
// holds its connection.
func (s *SQLite) prepareWriter(ctx context.Context) error {
	for _, q := range writerStmts {
		if _, err := s.stmt(ctx, s.w, q); err != nil {
			return err
		}
	}
	return nil
}

// txStmt returns q, which must be one of writerStmts, bound to tx (the
// writer's one connection, on which it is already prepared). A query
// prepared on the writer only now would wait for the connection tx holds.
func (s *SQLite) txStmt(ctx context.Context, tx *sql.Tx, q string) (*sql.Stmt, error) {
	s.stmts.mu.Lock()
	st, ok := s.stmts.m[stmtKey{s.w, q}]
	s.stmts.mu.Unlock()
	if !ok {
		return tx.PrepareContext(ctx, q) // not cached: prepared for tx alone
	}
	return tx.StmtContext(ctx, st), nil
}

// closeStmts closes the cached statements.
func (s *SQLite) closeStmts() {
	c := &s.stmts
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, st := range c.m {
		st.Close()
		delete(c.m, k)
	}
}

// scan runs the one-row query q on db (or in tx when it is not nil)
// through the statement cache and scans the row into dest.
func (s *SQLite) scan(ctx context.Context, db *sql.DB, tx *sql.Tx, q string, args []any, dest ...any) error {
	var st *sql.Stmt
	var err error
	if tx != nil {
		st, err = s.txStmt(ctx, tx, q)
	} else {
		st, err = s.stmt(ctx, db, q)
	}
	if err != nil {
		return err
	}
	return st.QueryRowContext(ctx, args...).Scan(dest...)
}

// txExec executes q in tx (a writer transaction) through the statement
// cache.
func (s *SQLite) txExec(ctx context.Context, tx *sql.Tx, q string, args ...any) error {
	st, err := s.txStmt(ctx, tx, q)
	if err != nil {
		return err
	}
	_, err = st.ExecContext(ctx, args...)
	return err
}

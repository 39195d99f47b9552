package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"time"

	"github.com/templateworker/templateworker/proto"
)

// The statements of the SQLite KV writes, prepared once on the writer
// (see writerStmts).
const (
	qUsage  = `SELECT keys, bytes FROM kv_usage WHERE tenant_type = ? AND tenant_id = ?`
	qSize   = `SELECT size FROM kv WHERE tenant_type = ? AND tenant_id = ? AND key = ?`
	qDelete = `DELETE FROM kv WHERE tenant_type = ? AND tenant_id = ? AND key = ? RETURNING size`
	qInsert = `INSERT INTO kv (tenant_type, tenant_id, key, value, size, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (tenant_type, tenant_id, key) DO UPDATE
		SET value = excluded.value, size = excluded.size, updated_at = excluded.updated_at`
	qPutUsage = `INSERT INTO kv_usage (tenant_type, tenant_id, keys, bytes) VALUES (?, ?, ?, ?)
		ON CONFLICT (tenant_type, tenant_id) DO UPDATE SET keys = excluded.keys, bytes = excluded.bytes`
	qDecUsage = `UPDATE kv_usage SET keys = keys - 1, bytes = bytes - ?
		WHERE tenant_type = ? AND tenant_id = ?`
)

// writerStmts are prepared on the writer when the store opens: preparing
// one later, while a write transaction holds the writer's only
// connection, would wait for that connection forever.
var writerStmts = []string{qUsage, qSize, qDelete, qInsert, qPutUsage, qDecUsage, qEventFailed, qEventDead, qEventDelete, qDeadTrim}

// KvGet returns the value of key and whether it exists.
func (s *SQLite) KvGet(ctx context.Context, tenant proto.Id, key string) (json.RawMessage, bool, error) {
	kind, err := checkTenantKey(tenant, key)
	if err != nil {
		return nil, false, err
	}
	var v []byte
	err = s.scan(ctx, s.r, nil, `SELECT value FROM kv WHERE tenant_type = ? AND tenant_id = ? AND key = ?`,
		[]any{kind, idToDB(tenant.ID), key}, &v)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, s.fail("kv get", err)
	}
	return json.RawMessage(v), true, nil
}

// KvSet creates or replaces key, within the tenant's quota. Last writer wins.
func (s *SQLite) KvSet(ctx context.Context, tenant proto.Id, key string, value json.RawMessage) error {
	kind, err := checkSet(tenant, key, value)
	if err != nil {
		return err
	}
	id := idToDB(tenant.ID)
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return s.fail("begin", err)
	}
	defer tx.Rollback()
	var u usage
	err = s.scan(ctx, s.w, tx, qUsage,
		[]any{kind, id}, &u.keys, &u.bytes)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return s.fail("kv usage", err)
	}
	old := int64(-1)
	err = s.scan(ctx, s.w, tx, qSize,
		[]any{kind, id, key}, &old)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return s.fail("kv set", err)
	}
	size := kvSize(key, value)
	after, err := checkQuota(s.quota, tenant, u, old, size)
	if err != nil {
		return err
	}
	now := time.Now().UnixMicro()
	if err := s.txExec(ctx, tx, qInsert,
		kind, id, key, string(value), size, now, now); err != nil {
		return s.fail("kv set", err)
	}
	if err := s.putUsage(ctx, tx, kind, id, after); err != nil {
		return err
	}
	return s.fail("commit", tx.Commit())
}

// putUsage records the tenant's usage u.
func (s *SQLite) putUsage(ctx context.Context, tx *sql.Tx, kind string, id int64, u usage) error {
	err := s.txExec(ctx, tx, qPutUsage,
		kind, id, u.keys, u.bytes)
	return s.fail("kv usage", err)
}

// KvDelete removes key; deleting a missing key is not an error.
func (s *SQLite) KvDelete(ctx context.Context, tenant proto.Id, key string) error {
	kind, err := checkTenantKey(tenant, key)
	if err != nil {
		return err
	}
	id := idToDB(tenant.ID)
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return s.fail("begin", err)
	}
	defer tx.Rollback()
	var size int64
	err = s.scan(ctx, s.w, tx, qDelete,
		[]any{kind, id, key}, &size)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return s.fail("kv delete", err)
	}
	if err := s.txExec(ctx, tx, qDecUsage, size, kind, id); err != nil {
		return s.fail("kv usage", err)
	}
	return s.fail("commit", tx.Commit())
}

// KvFind lists the keys starting with prefix, ordered by key (byte order).
// No character of prefix is special.
func (s *SQLite) KvFind(ctx context.Context, tenant proto.Id, prefix string) ([]proto.KVItem, error) {
	items, _, err := s.KvFindBounded(ctx, tenant, prefix, 0)
	return items, err
}

// KvFindBounded is KvFind that stops reading past maxBytes (BoundedFinder).
func (s *SQLite) KvFindBounded(ctx context.Context, tenant proto.Id, prefix string, maxBytes int) ([]proto.KVItem, bool, error) {
	kind, err := kindName(tenant.Kind)
	if err != nil {
		return nil, false, err
	}
	possible, err := checkPrefix(prefix)
	if err != nil {
		return nil, false, err
	}
	if !possible {
		return []proto.KVItem{}, false, nil
	}
	q := `SELECT key, value FROM kv WHERE tenant_type = ? AND tenant_id = ? AND key >= ?`
	args := []any{kind, idToDB(tenant.ID), prefix}
	if end, ok := prefixEnd(prefix); ok {
		q += ` AND key < ?`
		args = append(args, end)
	}
	st, err := s.stmt(ctx, s.r, q+` ORDER BY key`)
	if err != nil {
		return nil, false, s.fail("kv find", err)
	}
	rows, err := st.QueryContext(ctx, args...)
	if err != nil {
		return nil, false, s.fail("kv find", err)
	}
	defer rows.Close()
	items := []proto.KVItem{}
	var b answerBound
	for rows.Next() {
		var (
			it proto.KVItem
			v  []byte
		)
		if err := rows.Scan(&it.Key, &v); err != nil {
			return nil, false, s.fail("kv find", err)
		}
		it.Value = json.RawMessage(v)
		items = append(items, it)
		if b.over(it, maxBytes) {
			return items, true, nil
		}
	}
	if err := rows.Err(); err != nil {
		return nil, false, s.fail("kv find", err)
	}
	return items, false, nil
}

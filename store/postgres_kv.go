package store

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/templateworker/templateworker/proto"
)

// KvGet returns the value of key and whether it exists.
func (p *Postgres) KvGet(ctx context.Context, tenant proto.Id, key string) (json.RawMessage, bool, error) {
	kind, err := checkTenantKey(tenant, key)
	if err != nil {
		return nil, false, err
	}
	var v []byte
	err = p.read(ctx, "kv get", func(c *pgx.Conn) error {
		return c.QueryRow(ctx, `SELECT value FROM kv WHERE tenant_type = $1 AND tenant_id = $2 AND key = $3`,
			kind, idToDB(tenant.ID), key).Scan(&v)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return json.RawMessage(v), true, nil
}

// KvSet creates or replaces key, within the tenant's quota. Last writer wins.
//
// The transaction first locks the tenant's kv_usage row (creating it if
// needed), which serialises the tenant's writes, then reads the size of the
// pair it replaces in a statement of its own, so that it sees what the
// previous writer committed.
func (p *Postgres) KvSet(ctx context.Context, tenant proto.Id, key string, value json.RawMessage) error {
	kind, err := checkSet(tenant, key, value)
	if err != nil {
		return err
	}
	id := idToDB(tenant.ID)
	size := kvSize(key, value)
	return p.write(ctx, "kv set", func(tx pgx.Tx) error {
		var (
			u   usage
			old int64 = -1
		)
		b := &pgx.Batch{}
		b.Queue(`INSERT INTO kv_usage (tenant_type, tenant_id, keys, bytes) VALUES ($1, $2, 0, 0)
			ON CONFLICT (tenant_type, tenant_id) DO UPDATE SET keys = kv_usage.keys
			RETURNING keys, bytes`, kind, id).QueryRow(func(row pgx.Row) error {
			return row.Scan(&u.keys, &u.bytes)
		})
		b.Queue(`SELECT size FROM kv WHERE tenant_type = $1 AND tenant_id = $2 AND key = $3`,
			kind, id, key).QueryRow(func(row pgx.Row) error {
			if err := row.Scan(&old); !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
			return nil
		})
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return err
		}
		after, err := checkQuota(p.quota, tenant, u, old, size)
		if err != nil {
			return err
		}
		now := time.Now()
		_, err = tx.Exec(ctx, `WITH put AS (
				INSERT INTO kv (tenant_type, tenant_id, key, value, size, created_at, updated_at)
				VALUES ($1, $2, $3, $4, $5, $6, $6)
				ON CONFLICT (tenant_type, tenant_id, key) DO UPDATE
				SET value = excluded.value, size = excluded.size, updated_at = excluded.updated_at)
			UPDATE kv_usage SET keys = $7, bytes = $8 WHERE tenant_type = $1 AND tenant_id = $2`,
			kind, id, key, string(value), size, now, after.keys, after.bytes)
		return err
	})
}

// KvDelete removes key; deleting a missing key is not an error. Like
// KvSet, it locks the tenant's kv_usage row first.
func (p *Postgres) KvDelete(ctx context.Context, tenant proto.Id, key string) error {
	kind, err := checkTenantKey(tenant, key)
	if err != nil {
		return err
	}
	id := idToDB(tenant.ID)
	return p.write(ctx, "kv delete", func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		b.Queue(`SELECT 1 FROM kv_usage WHERE tenant_type = $1 AND tenant_id = $2 FOR UPDATE`, kind, id)
		b.Queue(`WITH gone AS (
				DELETE FROM kv WHERE tenant_type = $1 AND tenant_id = $2 AND key = $3 RETURNING size)
			UPDATE kv_usage SET keys = keys - (SELECT count(*) FROM gone),
				bytes = bytes - (SELECT COALESCE(sum(size), 0) FROM gone)
			WHERE tenant_type = $1 AND tenant_id = $2 AND EXISTS (SELECT 1 FROM gone)`, kind, id, key)
		return tx.SendBatch(ctx, b).Close()
	})
}

// KvFind lists the keys starting with prefix, ordered by key (byte order).
// No character of prefix is special.
func (p *Postgres) KvFind(ctx context.Context, tenant proto.Id, prefix string) ([]proto.KVItem, error) {
	items, _, err := p.KvFindBounded(ctx, tenant, prefix, 0)
	return items, err
}

// KvFindBounded is KvFind that stops reading past maxBytes (BoundedFinder).
func (p *Postgres) KvFindBounded(ctx context.Context, tenant proto.Id, prefix string, maxBytes int) ([]proto.KVItem, bool, error) {
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
	q := `SELECT key, value FROM kv WHERE tenant_type = $1 AND tenant_id = $2 AND key >= $3`
	args := []any{kind, idToDB(tenant.ID), prefix}
	if end, ok := prefixEnd(prefix); ok {
		q += ` AND key < $4`
		args = append(args, end)
	}
	q += ` ORDER BY key`
	if maxBytes > 0 {
		// The server leaves out the rows after the one whose key and
		// value take the bytes before it past maxBytes: the scan below
		// stops at that one or earlier (its bound counts at least those
		// bytes), and the rest would be read off the wire by Close.
		q = `SELECT key, value FROM (SELECT key, value, sum(octet_length(key) + octet_length(value)) OVER (ORDER BY key) - octet_length(key) - octet_length(value) AS before FROM` +
			strings.TrimPrefix(q, `SELECT key, value FROM`) + `) k WHERE before <= ` + strconv.Itoa(maxBytes) + ` ORDER BY key`
	}
	var (
		items []proto.KVItem
		over  bool
	)
	err = p.read(ctx, "kv find", func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, q, args...)
		if err != nil {
			return err
		}
		items, over = []proto.KVItem{}, false
		var b answerBound
		for rows.Next() {
			var (
				it proto.KVItem
				v  []byte
			)
			if err := rows.Scan(&it.Key, &v); err != nil {
				rows.Close()
				return err
			}
			it.Value = json.RawMessage(v)
			items = append(items, it)
			if b.over(it, maxBytes) {
				over = true // Close discards the rest unread
				rows.Close()
				return nil
			}
		}
		return rows.Err()
	})
	if err != nil {
		return nil, false, err
	}
	return items, over, nil
}

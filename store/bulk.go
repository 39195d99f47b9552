package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/templateworker/templateworker/proto"
)

// bulkBatch is how many tenants one transaction of BulkPutTemplate writes.
const bulkBatch = 10000

// BulkPutTemplate puts template t for every tenant in tenants, many per
// transaction. It is PutTemplate for imports and for seeding the scale
// benchmarks, where one transaction per tenant would spend its time in
// commits. Each batch is atomic; an error leaves the batches before it
// written.
func BulkPutTemplate(ctx context.Context, st Store, tenants []proto.Id, t proto.Template) error {
	t, err := checkTemplate(t, time.Now())
	if err != nil {
		return err
	}
	for lo := 0; lo < len(tenants); lo += bulkBatch {
		batch := tenants[lo:min(lo+bulkBatch, len(tenants))]
		switch s := st.(type) {
		case *SQLite:
			err = s.bulkPut(ctx, batch, t)
		case *Postgres:
			err = s.bulkPut(ctx, batch, t)
		default:
			for _, id := range batch {
				if err = st.PutTemplate(ctx, id, t); err != nil {
					break
				}
			}
		}
		if err != nil {
			return fmt.Errorf("bulk put template %q (tenants %d-%d): %w", t.Name, lo, lo+len(batch)-1, err)
		}
	}
	return nil
}

// sqliteRows is how many tenants one multi-row statement of the SQLite bulk
// put carries (5 parameters each, far below SQLite's limit).
const sqliteRows = 500

func (s *SQLite) bulkPut(ctx context.Context, tenants []proto.Id, t proto.Template) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return s.fail("begin", err)
	}
	defer tx.Rollback()
	code, at := []byte(t.Code), t.UpdatedAt.UnixMicro()
	for lo := 0; lo < len(tenants); lo += sqliteRows {
		part := tenants[lo:min(lo+sqliteRows, len(tenants))]
		var tpl, del, ev strings.Builder
		var tplArgs, delArgs, evArgs []any
		tpl.WriteString(`INSERT INTO templates (tenant_type, tenant_id, name, code, updated_at) VALUES `)
		del.WriteString(`DELETE FROM template_events WHERE name = ? AND (tenant_type, tenant_id) IN (VALUES `)
		delArgs = append(delArgs, t.Name)
		ev.WriteString(`INSERT INTO template_events (tenant_type, tenant_id, name, position, event) VALUES `)
		nev := 0
		for i, tenant := range part {
			kind, err := kindName(tenant.Kind)
			if err != nil {
				return err
			}
			id := idToDB(tenant.ID)
			if i > 0 {
				tpl.WriteByte(',')
				del.WriteByte(',')
			}
			tpl.WriteString("(?,?,?,?,?)")
			tplArgs = append(tplArgs, kind, id, t.Name, code, at)
			del.WriteString("(?,?)")
			delArgs = append(delArgs, kind, id)
			for j, e := range t.Events {
				if nev > 0 {
					ev.WriteByte(',')
				}
				nev++
				ev.WriteString("(?,?,?,?,?)")
				evArgs = append(evArgs, kind, id, t.Name, j, e)
			}
		}
		tpl.WriteString(` ON CONFLICT (tenant_type, tenant_id, name) DO UPDATE SET code = excluded.code, updated_at = excluded.updated_at`)
		del.WriteString(")")
		if _, err := tx.ExecContext(ctx, tpl.String(), tplArgs...); err != nil {
			return s.fail("bulk put template", err)
		}
		if _, err := tx.ExecContext(ctx, del.String(), delArgs...); err != nil {
			return s.fail("bulk put template events", err)
		}
		if nev > 0 {
			if _, err := tx.ExecContext(ctx, ev.String(), evArgs...); err != nil {
				return s.fail("bulk put template events", err)
			}
		}
	}
	return s.fail("commit", tx.Commit())
}

func (p *Postgres) bulkPut(ctx context.Context, tenants []proto.Id, t proto.Template) error {
	kinds := make([]string, len(tenants))
	ids := make([]int64, len(tenants))
	for i, tenant := range tenants {
		k, err := kindName(tenant.Kind)
		if err != nil {
			return err
		}
		kinds[i], ids[i] = k, idToDB(tenant.ID)
	}
	return p.write(ctx, "bulk put template", func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		b.Queue(`INSERT INTO templates (tenant_type, tenant_id, name, code, updated_at)
			SELECT k, i, $3, $4, $5 FROM unnest($1::text[], $2::bigint[]) AS u(k, i)
			ON CONFLICT (tenant_type, tenant_id, name) DO UPDATE SET code = excluded.code, updated_at = excluded.updated_at`,
			kinds, ids, t.Name, []byte(t.Code), t.UpdatedAt)
		b.Queue(`DELETE FROM template_events e USING unnest($1::text[], $2::bigint[]) AS u(k, i)
			WHERE e.tenant_type = u.k AND e.tenant_id = u.i AND e.name = $3`, kinds, ids, t.Name)
		b.Queue(`INSERT INTO template_events (tenant_type, tenant_id, name, position, event)
			SELECT u.k, u.i, $3, e.position - 1, e.event
			FROM unnest($1::text[], $2::bigint[]) AS u(k, i), unnest($4::text[]) WITH ORDINALITY AS e(event, position)`,
			kinds, ids, t.Name, t.Events)
		return tx.SendBatch(ctx, b).Close()
	})
}

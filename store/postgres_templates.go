package store

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/templateworker/templateworker/proto"
)

// errTemplateNotFound makes the write transaction of DeleteTemplate roll
// back; it is replaced by the not_found error.
var errTemplateNotFound = errors.New("template not found")

// PutTemplate creates or replaces the tenant's template t.Name.
func (p *Postgres) PutTemplate(ctx context.Context, tenant proto.Id, t proto.Template) error {
	kind, err := kindName(tenant.Kind)
	if err != nil {
		return err
	}
	if t, err = checkTemplate(t, time.Now()); err != nil {
		return err
	}
	id := idToDB(tenant.ID)
	return p.write(ctx, "put template", func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		b.Queue(`INSERT INTO templates (tenant_type, tenant_id, name, code, updated_at) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (tenant_type, tenant_id, name) DO UPDATE SET code = excluded.code, updated_at = excluded.updated_at`,
			kind, id, t.Name, []byte(t.Code), t.UpdatedAt)
		b.Queue(`DELETE FROM template_events WHERE tenant_type = $1 AND tenant_id = $2 AND name = $3`, kind, id, t.Name)
		b.Queue(`INSERT INTO template_events (tenant_type, tenant_id, name, position, event)
			SELECT $1, $2, $3, e.position - 1, e.event FROM unnest($4::text[]) WITH ORDINALITY AS e(event, position)`,
			kind, id, t.Name, t.Events)
		return tx.SendBatch(ctx, b).Close()
	})
}

// DeleteTemplate removes a template; not_found if it does not exist.
func (p *Postgres) DeleteTemplate(ctx context.Context, tenant proto.Id, name string) error {
	kind, err := kindName(tenant.Kind)
	if err != nil {
		return err
	}
	if checkText("template name", name) != nil {
		return proto.Errorf(proto.CodeNotFound, "template %q not found", name)
	}
	err = p.write(ctx, "delete template", func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM templates WHERE tenant_type = $1 AND tenant_id = $2 AND name = $3`,
			kind, idToDB(tenant.ID), name)
		if err == nil && tag.RowsAffected() == 0 {
			return errTemplateNotFound
		}
		return err
	})
	if errors.Is(err, errTemplateNotFound) {
		return proto.Errorf(proto.CodeNotFound, "template %q not found", name)
	}
	return err
}

// Templates lists the tenant's templates ordered by name (byte order).
func (p *Postgres) Templates(ctx context.Context, tenant proto.Id) ([]proto.Template, error) {
	kind, err := kindName(tenant.Kind)
	if err != nil {
		return nil, err
	}
	var ts []proto.Template
	err = p.read(ctx, "list templates", func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT t.name, t.code, t.updated_at,
				COALESCE((SELECT array_agg(e.event ORDER BY e.position) FROM template_events e
					WHERE e.tenant_type = t.tenant_type AND e.tenant_id = t.tenant_id AND e.name = t.name), '{}')
			FROM templates t WHERE t.tenant_type = $1 AND t.tenant_id = $2 ORDER BY t.name`,
			kind, idToDB(tenant.ID))
		if err != nil {
			return err
		}
		ts = []proto.Template{}
		var code []byte
		for rows.Next() {
			var t proto.Template
			if err := rows.Scan(&t.Name, &code, &t.UpdatedAt, &t.Events); err != nil {
				rows.Close()
				return err
			}
			t.Code, t.UpdatedAt = string(code), t.UpdatedAt.UTC()
			ts = append(ts, t)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, err
	}
	return ts, nil
}

// TenantsWithEvent lists every tenant with a template subscribed to event,
// ordered by kind, then id.
func (p *Postgres) TenantsWithEvent(ctx context.Context, event string) ([]proto.Id, error) {
	if err := checkText("event name", event); err != nil {
		return []proto.Id{}, nil // no template can subscribe to it
	}
	var ids []proto.Id
	err := p.read(ctx, "tenants with event", func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT DISTINCT tenant_type, tenant_id FROM template_events WHERE event = $1`, event)
		if err != nil {
			return err
		}
		ids = []proto.Id{}
		var (
			kind string
			id   int64
		)
		for rows.Next() {
			if err := rows.Scan(&kind, &id); err != nil {
				rows.Close()
				return err
			}
			t, err := tenantFromDB(kind, id)
			if err != nil {
				rows.Close()
				return err
			}
			ids = append(ids, t)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(ids, compareTenants)
	return ids, nil
}

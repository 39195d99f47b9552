package store

import (
	"context"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/templateworker/templateworker/proto"
)

// SaveQuarantine records the quarantine of q.Tenant, replacing an earlier
// one.
func (s *SQLite) SaveQuarantine(ctx context.Context, q proto.Quarantine) error {
	kind, err := kindName(q.Tenant.Kind)
	if err != nil {
		return err
	}
	_, err = s.w.ExecContext(ctx, `INSERT INTO quarantines (tenant_type, tenant_id, since, until, reason)
		VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (tenant_type, tenant_id) DO UPDATE
		SET since = excluded.since, until = excluded.until, reason = excluded.reason`,
		kind, idToDB(q.Tenant.ID), q.Since.UnixMicro(), q.Until.UnixMicro(), q.Reason)
	return s.fail("save quarantine", err)
}

// LiftQuarantine removes the quarantine of tenant.
func (s *SQLite) LiftQuarantine(ctx context.Context, tenant proto.Id) error {
	kind, err := kindName(tenant.Kind)
	if err != nil {
		return err
	}
	_, err = s.w.ExecContext(ctx, `DELETE FROM quarantines WHERE tenant_type = ? AND tenant_id = ?`, kind, idToDB(tenant.ID))
	return s.fail("lift quarantine", err)
}

// Quarantines lists the quarantines that end after now and removes the
// others.
func (s *SQLite) Quarantines(ctx context.Context, now time.Time) ([]proto.Quarantine, error) {
	if _, err := s.w.ExecContext(ctx, `DELETE FROM quarantines WHERE until <= ?`, now.UnixMicro()); err != nil {
		return nil, s.fail("expire quarantines", err)
	}
	rows, err := s.r.QueryContext(ctx, `SELECT tenant_type, tenant_id, since, until, reason FROM quarantines WHERE until > ?`,
		now.UnixMicro())
	if err != nil {
		return nil, s.fail("list quarantines", err)
	}
	defer rows.Close()
	out := []proto.Quarantine{}
	for rows.Next() {
		var (
			q            proto.Quarantine
			kind         string
			id           int64
			since, until int64
		)
		if err := rows.Scan(&kind, &id, &since, &until, &q.Reason); err != nil {
			return nil, s.fail("list quarantines", err)
		}
		if q.Tenant, err = tenantFromDB(kind, id); err != nil {
			return nil, err
		}
		q.Since, q.Until = time.UnixMicro(since).UTC(), time.UnixMicro(until).UTC()
		out = append(out, q)
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail("list quarantines", err)
	}
	sortQuarantines(out)
	return out, nil
}

// SaveQuarantine records the quarantine of q.Tenant, replacing an earlier
// one.
func (p *Postgres) SaveQuarantine(ctx context.Context, q proto.Quarantine) error {
	kind, err := kindName(q.Tenant.Kind)
	if err != nil {
		return err
	}
	return p.write(ctx, "save quarantine", func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO quarantines (tenant_type, tenant_id, since, until, reason)
			VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (tenant_type, tenant_id) DO UPDATE
			SET since = excluded.since, until = excluded.until, reason = excluded.reason`,
			kind, idToDB(q.Tenant.ID), q.Since.Truncate(time.Microsecond), q.Until.Truncate(time.Microsecond), q.Reason)
		return err
	})
}

// LiftQuarantine removes the quarantine of tenant.
func (p *Postgres) LiftQuarantine(ctx context.Context, tenant proto.Id) error {
	kind, err := kindName(tenant.Kind)
	if err != nil {
		return err
	}
	return p.write(ctx, "lift quarantine", func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `DELETE FROM quarantines WHERE tenant_type = $1 AND tenant_id = $2`, kind, idToDB(tenant.ID))
		return err
	})
}

// Quarantines lists the quarantines that end after now and removes the
// others.
func (p *Postgres) Quarantines(ctx context.Context, now time.Time) ([]proto.Quarantine, error) {
	var out []proto.Quarantine
	err := p.write(ctx, "list quarantines", func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM quarantines WHERE until <= $1`, now); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT tenant_type, tenant_id, since, until, reason FROM quarantines WHERE until > $1`, now)
		if err != nil {
			return err
		}
		defer rows.Close()
		out = []proto.Quarantine{}
		for rows.Next() {
			var (
				q    proto.Quarantine
				kind string
				id   int64
			)
			if err := rows.Scan(&kind, &id, &q.Since, &q.Until, &q.Reason); err != nil {
				return err
			}
			if q.Tenant, err = tenantFromDB(kind, id); err != nil {
				return err
			}
			q.Since, q.Until = q.Since.UTC(), q.Until.UTC()
			out = append(out, q)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, err
	}
	sortQuarantines(out)
	return out, nil
}

// sortQuarantines orders qs by tenant kind, then id.
func sortQuarantines(qs []proto.Quarantine) {
	sort.Slice(qs, func(i, j int) bool {
		a, b := qs[i].Tenant, qs[j].Tenant
		return a.Kind < b.Kind || a.Kind == b.Kind && a.ID < b.ID
	})
}

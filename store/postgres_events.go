package store

import (
	"context"
	"errors"
	"math"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/templateworker/templateworker/proto"
)

// pgEventColumns are the events columns scanPgEvent reads, in order.
const pgEventColumns = `seq, tenant_type, tenant_id, event, accepted_at, deliver_at, scheduled, attempts, next_attempt_at, COALESCE(last_error, ''), NULL::timestamptz`

// pgDeadColumns are the dead_letters columns scanPgEvent reads.
const pgDeadColumns = `seq, tenant_type, tenant_id, event, accepted_at, deliver_at, scheduled, attempts, NULL::timestamptz, last_error, dead_at`

// nullTime is t, or NULL for the zero time.
func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.Truncate(time.Microsecond)
}

// CommitEvents writes b in one transaction (one round trip per part).
func (p *Postgres) CommitEvents(ctx context.Context, b EventBatch) ([]int64, error) {
	if b.Empty() {
		return nil, nil
	}
	rows, err := eventRows(b.Add)
	if err != nil {
		return nil, err
	}
	seqs := make([]int64, len(b.Add))
	err = p.write(ctx, "commit events", func(tx pgx.Tx) error {
		batch := &pgx.Batch{}
		for i, r := range b.Add {
			i := i
			batch.Queue(`INSERT INTO events (tenant_type, tenant_id, event, accepted_at, deliver_at, scheduled)
				VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq`,
				rows[i].kind, idToDB(r.Tenant.ID), rows[i].ev, r.AcceptedAt.Truncate(time.Microsecond),
				r.DeliverAt.Truncate(time.Microsecond), r.Scheduled).QueryRow(func(row pgx.Row) error {
				return row.Scan(&seqs[i])
			})
		}
		for _, f := range b.Failed {
			batch.Queue(`UPDATE events SET attempts = $1, last_error = $2, next_attempt_at = $3 WHERE seq = $4`,
				f.Attempts, encodeError(f.Err), nullTime(f.NextAttemptAt), f.Seq)
		}
		now := time.Now().Truncate(time.Microsecond)
		for _, f := range b.Dead {
			batch.Queue(`INSERT INTO dead_letters (seq, tenant_type, tenant_id, event, accepted_at, deliver_at, scheduled, attempts, last_error, dead_at)
				SELECT seq, tenant_type, tenant_id, event, accepted_at, deliver_at, scheduled, $1, $2, $3 FROM events WHERE seq = $4
				ON CONFLICT (seq) DO NOTHING`, f.Attempts, encodeError(f.Err), now, f.Seq)
			batch.Queue(`DELETE FROM events WHERE seq = $1`, f.Seq)
			if b.DeadLetterKeep > 0 {
				// The tenant's dead letters older than its
				// DeadLetterKeep-th newest one (none while it has fewer).
				batch.Queue(`DELETE FROM dead_letters
					WHERE (tenant_type, tenant_id) IN (SELECT tenant_type, tenant_id FROM dead_letters WHERE seq = $1)
					AND seq < (SELECT d.seq FROM dead_letters d JOIN dead_letters s ON s.seq = $1
						AND d.tenant_type = s.tenant_type AND d.tenant_id = s.tenant_id
						ORDER BY d.seq DESC LIMIT 1 OFFSET $2::bigint - 1)`, f.Seq, b.DeadLetterKeep)
			}
			if b.DeadLetterKeepBytes > 0 {
				// Beyond the newest ones whose events take at most
				// DeadLetterKeepBytes together (the newest stays).
				batch.Queue(`DELETE FROM dead_letters WHERE seq IN (
					SELECT seq FROM (
						SELECT d.seq, ROW_NUMBER() OVER w AS n, SUM(octet_length(d.event)) OVER w AS b
						FROM dead_letters d JOIN dead_letters s ON s.seq = $1
							AND d.tenant_type = s.tenant_type AND d.tenant_id = s.tenant_id
						WINDOW w AS (ORDER BY d.seq DESC)
					) t WHERE n > 1 AND b > $2::bigint)`, f.Seq, b.DeadLetterKeepBytes)
			}
		}
		if len(b.Done) > 0 {
			batch.Queue(`DELETE FROM events WHERE seq = ANY($1)`, b.Done)
		}
		return tx.SendBatch(ctx, batch).Close()
	})
	if err != nil {
		return nil, err
	}
	return seqs, nil
}

// scanPgEvents reads rows of pgEventColumns or pgDeadColumns.
func scanPgEvents(rows pgx.Rows) ([]EventRecord, error) {
	out, _, err := scanPgEventsBounded(rows, 0, 0)
	return out, err
}

// scanPgEventsBounded is scanPgEvents with scanEventsBounded's limit and
// maxBytes.
func scanPgEventsBounded(rows pgx.Rows, limit, maxBytes int) ([]EventRecord, bool, error) {
	defer rows.Close()
	out := []EventRecord{}
	bytes := 0
	for rows.Next() {
		if limit > 0 && len(out) == limit {
			return out, true, nil
		}
		var (
			r            EventRecord
			kind, ev, le string
			id           int64
			next, dead   *time.Time
		)
		if err := rows.Scan(&r.Seq, &kind, &id, &ev, &r.AcceptedAt, &r.DeliverAt, &r.Scheduled, &r.Attempts, &next, &le, &dead); err != nil {
			return nil, false, err
		}
		if bytes += len(ev); maxBytes > 0 && bytes > maxBytes && len(out) > 0 {
			return out, true, nil
		}
		var err error
		if r.Tenant, err = tenantFromDB(kind, id); err != nil {
			return nil, false, err
		}
		if r.Event, err = decodeEvent(ev); err != nil {
			return nil, false, err
		}
		r.AcceptedAt, r.DeliverAt = r.AcceptedAt.UTC(), r.DeliverAt.UTC()
		if next != nil {
			r.NextAttemptAt = next.UTC()
		}
		if dead != nil {
			r.DeadAt = dead.UTC()
		}
		r.LastError = decodeError(le)
		out = append(out, r)
	}
	return out, false, rows.Err()
}

// DueEvents returns the tenant's due events in seq order and, when fewer
// than limit are due, the earliest deliver_at of the others.
func (p *Postgres) DueEvents(ctx context.Context, tenant proto.Id, now time.Time, limit int, wantNext bool) ([]EventRecord, time.Time, error) {
	kind, err := kindName(tenant.Kind)
	if err != nil {
		return nil, time.Time{}, err
	}
	var (
		out  []EventRecord
		next *time.Time
	)
	err = p.read(ctx, "due events", func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT `+pgEventColumns+` FROM events
			WHERE tenant_type = $1 AND tenant_id = $2 AND deliver_at <= $3 ORDER BY seq LIMIT $4`,
			kind, idToDB(tenant.ID), now, limit)
		if err != nil {
			return err
		}
		if out, err = scanPgEvents(rows); err != nil {
			return err
		}
		next = nil
		if len(out) >= limit || !wantNext {
			return nil
		}
		return c.QueryRow(ctx, `SELECT MIN(deliver_at) FROM events WHERE tenant_type = $1 AND tenant_id = $2 AND deliver_at > $3`,
			kind, idToDB(tenant.ID), now).Scan(&next)
	})
	if err != nil {
		return nil, time.Time{}, err
	}
	if next != nil {
		return out, next.UTC(), nil
	}
	return out, time.Time{}, nil
}

// PendingEvents lists the tenant's events by deliver_at, then seq.
func (p *Postgres) PendingEvents(ctx context.Context, tenant proto.Id, scheduledOnly bool, limit int) ([]EventRecord, error) {
	kind, err := kindName(tenant.Kind)
	if err != nil {
		return nil, err
	}
	q := `SELECT ` + pgEventColumns + ` FROM events WHERE tenant_type = $1 AND tenant_id = $2`
	if scheduledOnly {
		q += ` AND scheduled`
	}
	var out []EventRecord
	err = p.read(ctx, "pending events", func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, q+` ORDER BY deliver_at, seq LIMIT $3`, kind, idToDB(tenant.ID), limit)
		if err != nil {
			return err
		}
		out, err = scanPgEvents(rows)
		return err
	})
	return out, err
}

// PendingSize sizes the tenant's pending events (PendingSizer).
func (p *Postgres) PendingSize(ctx context.Context, tenant proto.Id, scheduledOnly bool) (int, int64, error) {
	kind, err := kindName(tenant.Kind)
	if err != nil {
		return 0, 0, err
	}
	q := `SELECT COUNT(*), COALESCE(SUM(octet_length(event)), 0)::bigint FROM events WHERE tenant_type = $1 AND tenant_id = $2`
	if scheduledOnly {
		q += ` AND scheduled`
	}
	var (
		n int
		b int64
	)
	err = p.read(ctx, "pending size", func(c *pgx.Conn) error {
		return c.QueryRow(ctx, q, kind, idToDB(tenant.ID)).Scan(&n, &b)
	})
	return n, b, err
}

// EventBacklog returns every tenant with pending events.
func (p *Postgres) EventBacklog(ctx context.Context) ([]TenantBacklog, error) {
	var out []TenantBacklog
	err := p.read(ctx, "event backlog", func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT tenant_type, tenant_id, COUNT(*), MIN(deliver_at), SUM(octet_length(event))::bigint FROM events GROUP BY tenant_type, tenant_id`)
		if err != nil {
			return err
		}
		defer rows.Close()
		out = []TenantBacklog{}
		for rows.Next() {
			var (
				kind string
				id   int64
				b    TenantBacklog
			)
			if err := rows.Scan(&kind, &id, &b.Count, &b.FirstDue, &b.Bytes); err != nil {
				return err
			}
			if b.Tenant, err = tenantFromDB(kind, id); err != nil {
				return err
			}
			b.FirstDue = b.FirstDue.UTC()
			out = append(out, b)
		}
		return rows.Err()
	})
	return out, err
}

// DeleteEvent deletes the tenant's pending event seq and returns it.
func (p *Postgres) DeleteEvent(ctx context.Context, tenant proto.Id, seq int64) (proto.Event, bool, error) {
	kind, err := kindName(tenant.Kind)
	if err != nil {
		return proto.Event{}, false, err
	}
	var (
		ev    string
		found bool
	)
	err = p.write(ctx, "delete event", func(tx pgx.Tx) error {
		found = false
		err := tx.QueryRow(ctx, `DELETE FROM events WHERE seq = $1 AND tenant_type = $2 AND tenant_id = $3 RETURNING event`,
			seq, kind, idToDB(tenant.ID)).Scan(&ev)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		found = err == nil
		return err
	})
	if err != nil || !found {
		return proto.Event{}, false, err
	}
	e, err := decodeEvent(ev)
	return e, true, err
}

// DeadLetters lists dead letters in seq order.
func (p *Postgres) DeadLetters(ctx context.Context, dq DeadLetterQuery) ([]EventRecord, bool, error) {
	limit := max(dq.Limit, 1)
	maxBytes := int64(dq.MaxBytes)
	if maxBytes <= 0 {
		maxBytes = math.MaxInt64
	}
	// The server leaves out the rows past the one that crosses maxBytes
	// and the one after it (which tells the scan there are more), from
	// octet_length, which a stored value's header answers: rows pgx would
	// otherwise read off the wire and drop.
	where := `seq > $3`
	args := []any{limit + 1, maxBytes, dq.After}
	if dq.Tenant != nil {
		kind, err := kindName(dq.Tenant.Kind)
		if err != nil {
			return nil, false, err
		}
		where += ` AND tenant_type = $4 AND tenant_id = $5`
		args = append(args, kind, idToDB(dq.Tenant.ID))
	}
	q := `SELECT ` + pgDeadColumns + ` FROM (SELECT *, coalesce(lag(before) OVER (ORDER BY seq), 0) AS prev_before
		FROM (SELECT *, sum(octet_length(event)) OVER (ORDER BY seq) - octet_length(event) AS before
			FROM dead_letters WHERE ` + where + ` ORDER BY seq LIMIT $1) d) d
		WHERE prev_before <= $2`
	var (
		out []EventRecord
		cut bool
	)
	err := p.read(ctx, "dead letters", func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, q+` ORDER BY seq`, args...)
		if err != nil {
			return err
		}
		out, cut, err = scanPgEventsBounded(rows, limit, dq.MaxBytes)
		return err
	})
	return out, cut, err
}

// DeadLetter returns dead letter seq.
func (p *Postgres) DeadLetter(ctx context.Context, seq int64) (EventRecord, error) {
	var recs []EventRecord
	err := p.read(ctx, "dead letter", func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT `+pgDeadColumns+` FROM dead_letters WHERE seq = $1`, seq)
		if err != nil {
			return err
		}
		recs, err = scanPgEvents(rows)
		return err
	})
	if err != nil {
		return EventRecord{}, err
	}
	if len(recs) == 0 {
		return EventRecord{}, proto.Errorf(proto.CodeNotFound, "dead letter %d not found", seq)
	}
	return recs[0], nil
}

// ReviveDeadLetter moves dead letter seq back into events.
func (p *Postgres) ReviveDeadLetter(ctx context.Context, seq int64) (EventRecord, error) {
	var r EventRecord
	found := false
	err := p.write(ctx, "retry dead letter", func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `DELETE FROM dead_letters WHERE seq = $1 RETURNING `+pgDeadColumns, seq)
		if err != nil {
			return err
		}
		recs, err := scanPgEvents(rows)
		if err != nil || len(recs) == 0 {
			return err
		}
		found, r = true, recs[0]
		kind, _ := kindName(r.Tenant.Kind)
		ev, err := encodeEvent(r.Event)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO events (seq, tenant_type, tenant_id, event, accepted_at, deliver_at, scheduled)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`, r.Seq, kind, idToDB(r.Tenant.ID), ev, r.AcceptedAt, r.DeliverAt, r.Scheduled)
		return err
	})
	if err != nil {
		return EventRecord{}, err
	}
	if !found {
		return EventRecord{}, proto.Errorf(proto.CodeNotFound, "dead letter %d not found", seq)
	}
	r.Attempts, r.LastError, r.DeadAt = 0, nil, time.Time{}
	return r, nil
}

// DeleteDeadLetter deletes dead letter seq.
func (p *Postgres) DeleteDeadLetter(ctx context.Context, seq int64) error {
	var n int64
	err := p.write(ctx, "delete dead letter", func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM dead_letters WHERE seq = $1`, seq)
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return err
	}
	if n == 0 {
		return proto.Errorf(proto.CodeNotFound, "dead letter %d not found", seq)
	}
	return nil
}

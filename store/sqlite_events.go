package store

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"time"

	"github.com/templateworker/templateworker/proto"
)

// Statements of the event queue's group commit. Inserts and deletes of
// many rows go in multi-row statements: a batch of n rows is one
// statement of n rows, or of maxEventRows rows and one of the rest when n
// is larger. A statement of every size from 1 to maxEventRows is prepared
// on the writer the first time a commit needs it, before the commit's
// transaction starts (each costs ~15 us of a commit; the binary digits of
// n made a commit of 13 events 3 inserts and 3 deletes).
const maxEventRows = 64

var (
	qEventInserts = make([]string, maxEventRows+1) // by rows
	qEventDeletes = make([]string, maxEventRows+1)
)

func init() {
	for n := 1; n <= maxEventRows; n++ {
		vals := strings.TrimSuffix(strings.Repeat("(?, ?, ?, ?, ?, ?),", n), ",")
		qEventInserts[n] = `INSERT INTO events (tenant_type, tenant_id, event, accepted_at, deliver_at, scheduled) VALUES ` + vals
		qEventDeletes[n] = `DELETE FROM events WHERE seq IN (` + strings.TrimSuffix(strings.Repeat("?,", n), ",") + `)`
	}
	writerStmts = append(writerStmts, qEventInserts[1], qEventDeletes[1], qEventInserts[maxEventRows], qEventDeletes[maxEventRows])
}

// chunk is the rows of the next statement for n rows.
func chunk(n int) int { return min(n, maxEventRows) }

// prepareChunks prepares on the writer the statements of qs (qEventInserts
// or qEventDeletes) that a commit of n rows uses; outside a transaction,
// as txStmt needs.
func (s *SQLite) prepareChunks(ctx context.Context, qs []string, n int) error {
	if n == 0 {
		return nil
	}
	if n >= maxEventRows {
		if err := s.prepareOnWriter(ctx, qs[maxEventRows]); err != nil {
			return err
		}
	}
	if r := n % maxEventRows; r > 0 {
		if err := s.prepareOnWriter(ctx, qs[r]); err != nil {
			return err
		}
	}
	return nil
}

// prepareOnWriter adds q prepared on the writer to the statement cache
// unless it is there. Unlike stmt it does not hold the cache's lock while
// it waits for the writer's connection: a transaction that holds the
// connection takes that lock for its statements (txStmt), and would wait
// for this wait.
func (s *SQLite) prepareOnWriter(ctx context.Context, q string) error {
	c := &s.stmts
	key := stmtKey{s.w, q}
	c.mu.Lock()
	_, ok := c.m[key]
	c.mu.Unlock()
	if ok {
		return nil
	}
	st, err := s.w.PrepareContext(ctx, q)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[key]; ok {
		return st.Close() // prepared meanwhile by another commit
	}
	if c.m == nil {
		c.m = make(map[stmtKey]*sql.Stmt)
	}
	c.m[key] = st
	return nil
}

const (
	qEventFailed = `UPDATE events SET attempts = ?, last_error = ?, next_attempt_at = ? WHERE seq = ?`
	qEventDead   = `INSERT INTO dead_letters (seq, tenant_type, tenant_id, event, accepted_at, deliver_at, scheduled, attempts, last_error, dead_at)
		SELECT seq, tenant_type, tenant_id, event, accepted_at, deliver_at, scheduled, ?, ?, ? FROM events WHERE seq = ?
		ON CONFLICT (seq) DO NOTHING`
	qEventDelete = `DELETE FROM events WHERE seq = ?`
	// qDeadTrim deletes the dead letters of dead letter ?1's tenant older
	// than that tenant's ?2-th newest one (none while it has fewer).
	qDeadTrim = `DELETE FROM dead_letters
		WHERE (tenant_type, tenant_id) IN (SELECT tenant_type, tenant_id FROM dead_letters WHERE seq = ?1)
		AND seq < (SELECT d.seq FROM dead_letters d JOIN dead_letters s ON s.seq = ?1
			AND d.tenant_type = s.tenant_type AND d.tenant_id = s.tenant_id
			ORDER BY d.seq DESC LIMIT 1 OFFSET ?2 - 1)`
	// qDeadTrimBytes deletes the dead letters of dead letter ?1's tenant
	// beyond its newest ones whose events take at most ?2 bytes together
	// (the newest always stays).
	qDeadTrimBytes = `DELETE FROM dead_letters WHERE seq IN (
		SELECT seq FROM (
			SELECT d.seq, ROW_NUMBER() OVER w AS n, SUM(octet_length(d.event)) OVER w AS b
			FROM dead_letters d JOIN dead_letters s ON s.seq = ?1
				AND d.tenant_type = s.tenant_type AND d.tenant_id = s.tenant_id
			WINDOW w AS (ORDER BY d.seq DESC)
		) WHERE n > 1 AND b > ?2)`
)

// eventColumns are the columns scanEvent reads, in order.
const eventColumns = `seq, tenant_type, tenant_id, event, accepted_at, deliver_at, scheduled, attempts, next_attempt_at, COALESCE(last_error, '')`

// CommitEvents writes b in one transaction.
func (s *SQLite) CommitEvents(ctx context.Context, b EventBatch) ([]int64, error) {
	if b.Empty() {
		return nil, nil
	}
	rows, err := eventRows(b.Add)
	if err != nil {
		return nil, err
	}
	if err := s.prepareChunks(ctx, qEventInserts, len(b.Add)); err != nil {
		return nil, s.fail("add events", err)
	}
	if err := s.prepareChunks(ctx, qEventDeletes, len(b.Done)); err != nil {
		return nil, s.fail("delete delivered events", err)
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, s.fail("begin", err)
	}
	defer tx.Rollback()
	seqs := make([]int64, len(b.Add))
	args := make([]any, 0, max(6*chunk(len(b.Add)), chunk(len(b.Done))))
	for lo := 0; lo < len(b.Add); {
		n := chunk(len(b.Add) - lo)
		args = args[:0]
		for i := lo; i < lo+n; i++ {
			r := b.Add[i]
			args = append(args, rows[i].kind, idToDB(r.Tenant.ID), rows[i].ev, r.AcceptedAt.UnixMicro(), r.DeliverAt.UnixMicro(), r.Scheduled)
		}
		st, err := s.txStmt(ctx, tx, qEventInserts[n])
		if err != nil {
			return nil, s.fail("add events", err)
		}
		res, err := st.ExecContext(ctx, args...)
		if err != nil {
			return nil, s.fail("add events", err)
		}
		last, err := res.LastInsertId()
		if err != nil {
			return nil, s.fail("add events", err)
		}
		// One statement on the only writer connection: its rows got
		// consecutive seqs (AUTOINCREMENT takes the largest seq ever
		// used plus one, row after row).
		for i := 0; i < n; i++ {
			seqs[lo+i] = last - int64(n-1-i)
		}
		lo += n
	}
	for _, f := range b.Failed {
		if err := s.txExec(ctx, tx, qEventFailed, f.Attempts, encodeError(f.Err), micros(f.NextAttemptAt), f.Seq); err != nil {
			return nil, s.fail("record failed delivery", err)
		}
	}
	now := time.Now().UnixMicro()
	for _, f := range b.Dead {
		if err := s.txExec(ctx, tx, qEventDead, f.Attempts, encodeError(f.Err), now, f.Seq); err != nil {
			return nil, s.fail("dead-letter event", err)
		}
		if err := s.txExec(ctx, tx, qEventDelete, f.Seq); err != nil {
			return nil, s.fail("dead-letter event", err)
		}
		if b.DeadLetterKeep > 0 {
			if err := s.txExec(ctx, tx, qDeadTrim, f.Seq, b.DeadLetterKeep); err != nil {
				return nil, s.fail("trim dead letters", err)
			}
		}
		if b.DeadLetterKeepBytes > 0 {
			if err := s.txExec(ctx, tx, qDeadTrimBytes, f.Seq, b.DeadLetterKeepBytes); err != nil {
				return nil, s.fail("trim dead letters", err)
			}
		}
	}
	for lo := 0; lo < len(b.Done); {
		n := chunk(len(b.Done) - lo)
		args = args[:0]
		for _, seq := range b.Done[lo : lo+n] {
			args = append(args, seq)
		}
		if err := s.txExec(ctx, tx, qEventDeletes[n], args...); err != nil {
			return nil, s.fail("delete delivered events", err)
		}
		lo += n
	}
	if err := tx.Commit(); err != nil {
		return nil, s.fail("commit events", err)
	}
	return seqs, nil
}

// scanEvents reads rows of eventColumns (plus dead_at when dead).
func scanEvents(rows *sql.Rows, dead bool) ([]EventRecord, error) {
	out, _, err := scanEventsBounded(rows, dead, 0, 0)
	return out, err
}

// scanEventsBounded is scanEvents that stops at limit records (0: none)
// or before the record whose event would take those read past maxBytes
// (0: none; the first is always read), reporting cut when a row was left.
func scanEventsBounded(rows *sql.Rows, dead bool, limit, maxBytes int) ([]EventRecord, bool, error) {
	out := []EventRecord{}
	bytes := 0
	for rows.Next() {
		if limit > 0 && len(out) == limit {
			return out, true, nil
		}
		var (
			r                          EventRecord
			kind, ev, lastErr          string
			id, acc, due, next, deadAt int64
		)
		dest := []any{&r.Seq, &kind, &id, &ev, &acc, &due, &r.Scheduled, &r.Attempts, &next, &lastErr}
		if dead {
			dest = append(dest, &deadAt)
		}
		if err := rows.Scan(dest...); err != nil {
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
		r.AcceptedAt, r.DeliverAt, r.NextAttemptAt = fromMicros(acc), fromMicros(due), fromMicros(next)
		r.LastError = decodeError(lastErr)
		r.DeadAt = fromMicros(deadAt)
		out = append(out, r)
	}
	return out, false, rows.Err()
}

// DueEvents returns the tenant's due events in seq order and, when fewer
// than limit are due, the earliest deliver_at of the others.
func (s *SQLite) DueEvents(ctx context.Context, tenant proto.Id, now time.Time, limit int, wantNext bool) ([]EventRecord, time.Time, error) {
	kind, err := kindName(tenant.Kind)
	if err != nil {
		return nil, time.Time{}, err
	}
	st, err := s.stmt(ctx, s.r, `SELECT `+eventColumns+` FROM events
		WHERE tenant_type = ? AND tenant_id = ? AND deliver_at <= ? ORDER BY seq LIMIT ?`)
	if err != nil {
		return nil, time.Time{}, s.fail("due events", err)
	}
	rows, err := st.QueryContext(ctx, kind, idToDB(tenant.ID), now.UnixMicro(), limit)
	if err != nil {
		return nil, time.Time{}, s.fail("due events", err)
	}
	defer rows.Close()
	out, err := scanEvents(rows, false)
	if err != nil {
		return nil, time.Time{}, s.fail("due events", err)
	}
	if len(out) >= limit || !wantNext {
		return out, time.Time{}, nil
	}
	var next sql.NullInt64
	if err := s.scan(ctx, s.r, nil, `SELECT MIN(deliver_at) FROM events WHERE tenant_type = ? AND tenant_id = ? AND deliver_at > ?`,
		[]any{kind, idToDB(tenant.ID), now.UnixMicro()}, &next); err != nil {
		return nil, time.Time{}, s.fail("next due event", err)
	}
	if next.Valid {
		return out, fromMicros(next.Int64), nil
	}
	return out, time.Time{}, nil
}

// PendingEvents lists the tenant's events by deliver_at, then seq.
func (s *SQLite) PendingEvents(ctx context.Context, tenant proto.Id, scheduledOnly bool, limit int) ([]EventRecord, error) {
	kind, err := kindName(tenant.Kind)
	if err != nil {
		return nil, err
	}
	q := `SELECT ` + eventColumns + ` FROM events WHERE tenant_type = ? AND tenant_id = ?`
	if scheduledOnly {
		q += ` AND scheduled`
	}
	rows, err := s.r.QueryContext(ctx, q+` ORDER BY deliver_at, seq LIMIT ?`, kind, idToDB(tenant.ID), limit)
	if err != nil {
		return nil, s.fail("pending events", err)
	}
	defer rows.Close()
	out, err := scanEvents(rows, false)
	return out, s.fail("pending events", err)
}

// PendingSize sizes the tenant's pending events (PendingSizer).
func (s *SQLite) PendingSize(ctx context.Context, tenant proto.Id, scheduledOnly bool) (int, int64, error) {
	kind, err := kindName(tenant.Kind)
	if err != nil {
		return 0, 0, err
	}
	q := `SELECT COUNT(*), COALESCE(SUM(octet_length(event)), 0) FROM events WHERE tenant_type = ? AND tenant_id = ?`
	if scheduledOnly {
		q += ` AND scheduled`
	}
	var (
		n int
		b int64
	)
	err = s.r.QueryRowContext(ctx, q, kind, idToDB(tenant.ID)).Scan(&n, &b)
	return n, b, s.fail("pending size", err)
}

// EventBacklog returns every tenant with pending events.
func (s *SQLite) EventBacklog(ctx context.Context) ([]TenantBacklog, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT tenant_type, tenant_id, COUNT(*), MIN(deliver_at), SUM(LENGTH(event)) FROM events GROUP BY tenant_type, tenant_id`)
	if err != nil {
		return nil, s.fail("event backlog", err)
	}
	defer rows.Close()
	out := []TenantBacklog{}
	for rows.Next() {
		var (
			kind    string
			id, due int64
			b       TenantBacklog
		)
		if err := rows.Scan(&kind, &id, &b.Count, &due, &b.Bytes); err != nil {
			return nil, s.fail("event backlog", err)
		}
		if b.Tenant, err = tenantFromDB(kind, id); err != nil {
			return nil, err
		}
		b.FirstDue = fromMicros(due)
		out = append(out, b)
	}
	return out, s.fail("event backlog", rows.Err())
}

// DeleteEvent deletes the tenant's pending event seq and returns it.
func (s *SQLite) DeleteEvent(ctx context.Context, tenant proto.Id, seq int64) (proto.Event, bool, error) {
	kind, err := kindName(tenant.Kind)
	if err != nil {
		return proto.Event{}, false, err
	}
	var ev string
	err = s.w.QueryRowContext(ctx, `DELETE FROM events WHERE seq = ? AND tenant_type = ? AND tenant_id = ? RETURNING event`,
		seq, kind, idToDB(tenant.ID)).Scan(&ev)
	if errors.Is(err, sql.ErrNoRows) {
		return proto.Event{}, false, nil
	}
	if err != nil {
		return proto.Event{}, false, s.fail("delete event", err)
	}
	e, err := decodeEvent(ev)
	return e, true, s.fail("delete event", err)
}

// DeadLetters lists dead letters in seq order.
func (s *SQLite) DeadLetters(ctx context.Context, dq DeadLetterQuery) ([]EventRecord, bool, error) {
	q := `SELECT ` + eventColumnsDead + ` FROM dead_letters WHERE seq > ?`
	args := []any{dq.After}
	if dq.Tenant != nil {
		kind, err := kindName(dq.Tenant.Kind)
		if err != nil {
			return nil, false, err
		}
		q += ` AND tenant_type = ? AND tenant_id = ?`
		args = append(args, kind, idToDB(dq.Tenant.ID))
	}
	rows, err := s.r.QueryContext(ctx, q+` ORDER BY seq LIMIT ?`, append(args, max(dq.Limit, 1)+1)...)
	if err != nil {
		return nil, false, s.fail("dead letters", err)
	}
	defer rows.Close()
	out, cut, err := scanEventsBounded(rows, true, max(dq.Limit, 1), dq.MaxBytes)
	return out, cut, s.fail("dead letters", err)
}

// eventColumnsDead are the dead_letters columns scanEvents reads.
const eventColumnsDead = `seq, tenant_type, tenant_id, event, accepted_at, deliver_at, scheduled, attempts, 0, last_error, dead_at`

// DeadLetter returns dead letter seq.
func (s *SQLite) DeadLetter(ctx context.Context, seq int64) (EventRecord, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+eventColumnsDead+` FROM dead_letters WHERE seq = ?`, seq)
	if err != nil {
		return EventRecord{}, s.fail("dead letter", err)
	}
	defer rows.Close()
	recs, err := scanEvents(rows, true)
	if err != nil {
		return EventRecord{}, s.fail("dead letter", err)
	}
	if len(recs) == 0 {
		return EventRecord{}, proto.Errorf(proto.CodeNotFound, "dead letter %d not found", seq)
	}
	return recs[0], nil
}

// ReviveDeadLetter moves dead letter seq back into events.
func (s *SQLite) ReviveDeadLetter(ctx context.Context, seq int64) (EventRecord, error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return EventRecord{}, s.fail("begin", err)
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `DELETE FROM dead_letters WHERE seq = ? RETURNING `+eventColumnsDead, seq)
	if err != nil {
		return EventRecord{}, s.fail("retry dead letter", err)
	}
	recs, err := scanEvents(rows, true)
	rows.Close()
	if err != nil {
		return EventRecord{}, s.fail("retry dead letter", err)
	}
	if len(recs) == 0 {
		return EventRecord{}, proto.Errorf(proto.CodeNotFound, "dead letter %d not found", seq)
	}
	r := recs[0]
	kind, _ := kindName(r.Tenant.Kind)
	ev, err := encodeEvent(r.Event)
	if err != nil {
		return EventRecord{}, err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO events (seq, tenant_type, tenant_id, event, accepted_at, deliver_at, scheduled)
		VALUES (?, ?, ?, ?, ?, ?, ?)`, r.Seq, kind, idToDB(r.Tenant.ID), ev, r.AcceptedAt.UnixMicro(), r.DeliverAt.UnixMicro(), r.Scheduled); err != nil {
		return EventRecord{}, s.fail("retry dead letter", err)
	}
	if err := tx.Commit(); err != nil {
		return EventRecord{}, s.fail("commit", err)
	}
	r.Attempts, r.LastError, r.DeadAt = 0, nil, time.Time{}
	return r, nil
}

// DeleteDeadLetter deletes dead letter seq.
func (s *SQLite) DeleteDeadLetter(ctx context.Context, seq int64) error {
	res, err := s.w.ExecContext(ctx, `DELETE FROM dead_letters WHERE seq = ?`, seq)
	if err != nil {
		return s.fail("delete dead letter", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return s.fail("delete dead letter", err)
	} else if n == 0 {
		return proto.Errorf(proto.CodeNotFound, "dead letter %d not found", seq)
	}
	return nil
}

package store

import (
	"context"
	"time"

	"github.com/templateworker/templateworker/proto"
)

// DeadLetterQuery selects a page of dead letters.
type DeadLetterQuery struct {
	// Tenant keeps one tenant's dead letters (nil: every tenant's).
	Tenant *proto.Id
	// After keeps those whose Seq is greater (0: from the first).
	After int64
	// Limit is the most listed (at least 1).
	Limit int
	// MaxBytes, when > 0, stops the listing before the dead letter whose
	// stored event would take the events listed past it, so that a page
	// of every tenant's large dead letters is bounded in memory; the
	// first is always listed.
	MaxBytes int
}

// EventRecord is one row of the events table (the durable event queue) or
// of the dead_letters table.
type EventRecord struct {
	// Seq is the event's id, assigned by the store from a sequence that
	// never reuses a number; it orders a tenant's events.
	Seq        int64
	Tenant     proto.Id
	Event      proto.Event
	AcceptedAt time.Time
	// DeliverAt is when the event is due (AcceptedAt for an immediate one).
	DeliverAt time.Time
	// Scheduled marks an event made by ctx.events.schedule.
	Scheduled bool
	// Attempts counts the failed deliveries so far.
	Attempts int
	// LastError is the error of the last failed delivery, if any.
	LastError *proto.Error
	// NextAttemptAt is when a failed event may be tried again (zero: at
	// once).
	NextAttemptAt time.Time
	// DeadAt is when the event was dead-lettered (dead_letters only).
	DeadAt time.Time
}

// EventFailure records a failed delivery of the event Seq.
type EventFailure struct {
	Seq      int64
	Attempts int
	Err      *proto.Error
	// NextAttemptAt is when it may be tried again (Failed only).
	NextAttemptAt time.Time
}

// EventBatch is what one group commit of the queue writes, in one
// transaction, in this order: Add, Failed, Dead, Done.
type EventBatch struct {
	// Add inserts events; their Seq is assigned (returned in order).
	Add []EventRecord
	// Failed updates the attempts and last error of events.
	Failed []EventFailure
	// Dead moves events to dead_letters with their attempts and error.
	Dead []EventFailure
	// Done deletes delivered events; a missing one is not an error.
	Done []int64
	// DeadLetterKeep, when positive, bounds the dead letters of each
	// tenant of Dead: after its event moves in, the tenant's oldest dead
	// letters (by Seq) beyond its newest DeadLetterKeep are deleted in the
	// same transaction.
	DeadLetterKeep int
	// DeadLetterKeepBytes, when positive, bounds them by bytes too: the
	// tenant's dead letters older than its newest ones whose stored events
	// (the JSON of name, author and data) come to at most
	// DeadLetterKeepBytes together are deleted; the newest is always
	// kept.
	DeadLetterKeepBytes int64
}

// Empty reports whether b writes nothing.
func (b *EventBatch) Empty() bool {
	return len(b.Add) == 0 && len(b.Failed) == 0 && len(b.Dead) == 0 && len(b.Done) == 0
}

// TenantBacklog is one tenant's share of the events table.
type TenantBacklog struct {
	Tenant proto.Id
	// Count is the number of the tenant's pending events.
	Count int
	// FirstDue is the earliest DeliverAt of them.
	FirstDue time.Time
	// Bytes is the size of their stored JSON.
	Bytes int64
}

// EventStore is the durable event queue's part of the store. Events are
// kept with microsecond precision; Event is kept as its JSON.
type EventStore interface {
	// CommitEvents writes b in one transaction and returns the Seq given
	// to each of b.Add, in order. On error nothing is written.
	CommitEvents(ctx context.Context, b EventBatch) ([]int64, error)
	// DueEvents returns up to limit of the tenant's events due at now
	// (DeliverAt ≤ now) in Seq order, and, when wantNext and fewer than
	// limit are due, the earliest DeliverAt of its events not yet due
	// (zero if none).
	DueEvents(ctx context.Context, tenant proto.Id, now time.Time, limit int, wantNext bool) ([]EventRecord, time.Time, error)
	// PendingEvents lists up to limit of the tenant's events ordered by
	// DeliverAt then Seq; scheduledOnly keeps the Scheduled ones.
	PendingEvents(ctx context.Context, tenant proto.Id, scheduledOnly bool, limit int) ([]EventRecord, error)
	// EventBacklog returns every tenant with pending events.
	EventBacklog(ctx context.Context) ([]TenantBacklog, error)
	// DeleteEvent deletes the tenant's pending event seq and returns it,
	// reporting whether there was one (another tenant's seq is none).
	DeleteEvent(ctx context.Context, tenant proto.Id, seq int64) (proto.Event, bool, error)
	// DeadLetters lists the dead letters q selects in Seq order, and
	// reports whether more follow the last one listed.
	DeadLetters(ctx context.Context, q DeadLetterQuery) (recs []EventRecord, more bool, err error)
	// DeadLetter returns dead letter seq; not_found if there is none.
	DeadLetter(ctx context.Context, seq int64) (EventRecord, error)
	// ReviveDeadLetter moves dead letter seq back into the events table
	// under the same Seq with no attempts and returns it; not_found if
	// there is none.
	ReviveDeadLetter(ctx context.Context, seq int64) (EventRecord, error)
	// DeleteDeadLetter deletes dead letter seq; not_found if there is none.
	DeleteDeadLetter(ctx context.Context, seq int64) error
}

// PendingSizer is an EventStore that can size a tenant's pending events
// without reading them: the master refuses a ctx.events.list too large for
// one frame from their sizes instead of decoding them all to find out.
type PendingSizer interface {
	// PendingSize returns how many pending events tenant has (only the
	// Scheduled ones if scheduledOnly) and the bytes of their stored
	// events (the JSON of name, author and data) together.
	PendingSize(ctx context.Context, tenant proto.Id, scheduledOnly bool) (count int, bytes int64, err error)
}

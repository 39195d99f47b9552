package proto

import "time"

// MaxScheduleAhead is how far ahead an event may be scheduled or delayed
// (ctx.events.schedule, ?delay=, "deliver_at").
const MaxScheduleAhead = 365 * 24 * time.Hour

// QueuedEvent is one event of the master's durable queue or dead-letter
// table, as the API lists it (GET /v1/events/pending, /v1/dead-letters).
type QueuedEvent struct {
	// ID is unique in the store (decimal); it is also Event.ID when the
	// event is delivered.
	ID     string `json:"id"`
	Tenant Id     `json:"tenant"`
	Event  Event  `json:"event"`
	// AcceptedAt is when the event was committed.
	AcceptedAt time.Time `json:"accepted_at"`
	// DeliverAt is when it is due (== AcceptedAt for an immediate event).
	DeliverAt time.Time `json:"deliver_at"`
	// Scheduled marks an event created by ctx.events.schedule.
	Scheduled bool `json:"scheduled"`
	// Attempts counts its failed deliveries.
	Attempts int `json:"attempts"`
	// LastError is the error of its last failed delivery.
	LastError *Error `json:"last_error,omitempty"`
	// DeadAt is set in the dead-letter table only.
	DeadAt *time.Time `json:"dead_at,omitempty"`
}

// ScheduledEvent is a tenant's pending scheduled event as a worker sees it
// (the answer of ScheduledEvents; the master's queue keeps more).
type ScheduledEvent struct {
	// ID is the event's id in the master's queue: what
	// ctx.events.schedule returned and ctx.events.cancel takes, and the
	// event.id the template sees when it runs.
	ID string `json:"id"`
	// Event is the event that will be dispatched.
	Event Event `json:"event"`
	// DeliverAt is when it is due.
	DeliverAt time.Time `json:"deliver_at"`
}

// ScheduleEvent stores an event for the tenant, due at At. Result: the
// event's id (a JSON string).
//
//	{"ScheduleEvent":{"req_id":11,"id":{"type":"Guild","id":"1"},"at":"2026-12-02T05:00:00Z","event":{"name":"Remind","author":null,"data":{}}}}
type ScheduleEvent struct {
	ReqID uint64    `json:"req_id"`
	ID    Id        `json:"id"`
	At    time.Time `json:"at"`
	Event Event     `json:"event"`
}

// CancelEvent cancels the tenant's pending scheduled event EventID.
// Result: true if it was pending and is now cancelled, false otherwise.
//
//	{"CancelEvent":{"req_id":12,"id":{"type":"Guild","id":"1"},"event_id":"42"}}
type CancelEvent struct {
	ReqID   uint64 `json:"req_id"`
	ID      Id     `json:"id"`
	EventID string `json:"event_id"`
}

// ScheduledEvents lists the tenant's pending scheduled events in delivery
// order. Result: an array of ScheduledEvent.
//
//	{"ScheduledEvents":{"req_id":13,"id":{"type":"Guild","id":"1"}}}
type ScheduledEvents struct {
	ReqID uint64 `json:"req_id"`
	ID    Id     `json:"id"`
}

-- The master's durable event queue: events accepted for later delivery
-- (nowait, delayed, scheduled), deleted once a worker ran them, and the
-- events that failed every attempt.

CREATE TABLE events (
	-- AUTOINCREMENT: a seq is never reused, even after the newest row is
	-- deleted, so an event id (seq) names one event forever.
	seq             INTEGER PRIMARY KEY AUTOINCREMENT,
	tenant_type     TEXT    NOT NULL CHECK (tenant_type IN ('Guild', 'User')),
	tenant_id       INTEGER NOT NULL,
	event           TEXT    NOT NULL, -- JSON {"name","author","data"}
	accepted_at     INTEGER NOT NULL, -- microseconds since the Unix epoch, UTC
	deliver_at      INTEGER NOT NULL,
	scheduled       INTEGER NOT NULL DEFAULT 0,
	attempts        INTEGER NOT NULL DEFAULT 0,
	next_attempt_at INTEGER NOT NULL DEFAULT 0,
	last_error      TEXT              -- JSON {"code","message"} or NULL
);
CREATE INDEX events_tenant ON events (tenant_type, tenant_id, seq);

CREATE TABLE dead_letters (
	seq         INTEGER PRIMARY KEY,
	tenant_type TEXT    NOT NULL CHECK (tenant_type IN ('Guild', 'User')),
	tenant_id   INTEGER NOT NULL,
	event       TEXT    NOT NULL,
	accepted_at INTEGER NOT NULL,
	deliver_at  INTEGER NOT NULL,
	scheduled   INTEGER NOT NULL,
	attempts    INTEGER NOT NULL,
	last_error  TEXT    NOT NULL,
	dead_at     INTEGER NOT NULL
);
CREATE INDEX dead_letters_tenant ON dead_letters (tenant_type, tenant_id, seq);

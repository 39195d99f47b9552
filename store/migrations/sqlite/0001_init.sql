-- Templates, their event subscriptions and the key-value store.
-- Tenant ids hold the bits of the uint64 snowflake in a signed integer.

CREATE TABLE templates (
	tenant_type TEXT    NOT NULL CHECK (tenant_type IN ('Guild', 'User')),
	tenant_id   INTEGER NOT NULL,
	name        TEXT    NOT NULL,
	code        BLOB    NOT NULL,
	updated_at  INTEGER NOT NULL, -- microseconds since the Unix epoch, UTC
	PRIMARY KEY (tenant_type, tenant_id, name)
) WITHOUT ROWID;

CREATE TABLE template_events (
	tenant_type TEXT    NOT NULL,
	tenant_id   INTEGER NOT NULL,
	name        TEXT    NOT NULL,
	position    INTEGER NOT NULL,
	event       TEXT    NOT NULL,
	PRIMARY KEY (tenant_type, tenant_id, name, position),
	FOREIGN KEY (tenant_type, tenant_id, name)
		REFERENCES templates (tenant_type, tenant_id, name) ON DELETE CASCADE
) WITHOUT ROWID;

CREATE INDEX template_events_by_event ON template_events (event, tenant_type, tenant_id);

CREATE TABLE kv (
	tenant_type TEXT    NOT NULL CHECK (tenant_type IN ('Guild', 'User')),
	tenant_id   INTEGER NOT NULL,
	key         TEXT    NOT NULL, -- BINARY collation: byte order
	value       TEXT    NOT NULL, -- the JSON text exactly as written
	size        INTEGER NOT NULL, -- bytes of key plus value, for the quota
	created_at  INTEGER NOT NULL, -- microseconds since the Unix epoch, UTC
	updated_at  INTEGER NOT NULL,
	PRIMARY KEY (tenant_type, tenant_id, key)
) WITHOUT ROWID;

-- kv_usage is each tenant's running total of keys and bytes, kept in step
-- with kv by every write so that quota checks need not scan kv.
CREATE TABLE kv_usage (
	tenant_type TEXT    NOT NULL,
	tenant_id   INTEGER NOT NULL,
	keys        INTEGER NOT NULL,
	bytes       INTEGER NOT NULL,
	PRIMARY KEY (tenant_type, tenant_id)
) WITHOUT ROWID;

-- The kv and templates tables become rowid tables whose key columns are a
-- UNIQUE index: as WITHOUT ROWID tables every cell of their one b-tree
-- held the whole row, and a value (or template code) larger than a cell's
-- local payload (a few KB) was read in full from its overflow pages by
-- every comparison a lookup made against it, so one tenant's large values
-- (up to 256 KiB each) or templates (up to 512 KiB) were read by every
-- tenant's KV calls and template loads. The index cells hold only the key
-- columns and the rowid now; values and code live in the rowid b-tree.

CREATE TABLE kv_rowid (
	tenant_type TEXT    NOT NULL CHECK (tenant_type IN ('Guild', 'User')),
	tenant_id   INTEGER NOT NULL,
	key         TEXT    NOT NULL, -- BINARY collation: byte order
	value       TEXT    NOT NULL, -- the JSON text exactly as written
	size        INTEGER NOT NULL, -- bytes of key plus value, for the quota
	created_at  INTEGER NOT NULL, -- microseconds since the Unix epoch, UTC
	updated_at  INTEGER NOT NULL,
	UNIQUE (tenant_type, tenant_id, key)
);
INSERT INTO kv_rowid (tenant_type, tenant_id, key, value, size, created_at, updated_at)
	SELECT tenant_type, tenant_id, key, value, size, created_at, updated_at FROM kv ORDER BY tenant_type, tenant_id, key;
DROP TABLE kv;
ALTER TABLE kv_rowid RENAME TO kv;

-- templates: template_events refers to it, so both are copied (the child
-- pointing at the new parent), the old child dropped before the old parent
-- (whose DROP would otherwise cascade into it), then both renamed (the
-- rename of the parent rewrites the child's REFERENCES).
CREATE TABLE templates_rowid (
	tenant_type TEXT    NOT NULL CHECK (tenant_type IN ('Guild', 'User')),
	tenant_id   INTEGER NOT NULL,
	name        TEXT    NOT NULL,
	code        BLOB    NOT NULL,
	updated_at  INTEGER NOT NULL, -- microseconds since the Unix epoch, UTC
	UNIQUE (tenant_type, tenant_id, name)
);
INSERT INTO templates_rowid (tenant_type, tenant_id, name, code, updated_at)
	SELECT tenant_type, tenant_id, name, code, updated_at FROM templates ORDER BY tenant_type, tenant_id, name;
CREATE TABLE template_events_rowid (
	tenant_type TEXT    NOT NULL,
	tenant_id   INTEGER NOT NULL,
	name        TEXT    NOT NULL,
	position    INTEGER NOT NULL,
	event       TEXT    NOT NULL,
	PRIMARY KEY (tenant_type, tenant_id, name, position),
	FOREIGN KEY (tenant_type, tenant_id, name)
		REFERENCES templates_rowid (tenant_type, tenant_id, name) ON DELETE CASCADE
) WITHOUT ROWID;
INSERT INTO template_events_rowid SELECT tenant_type, tenant_id, name, position, event FROM template_events;
DROP TABLE template_events;
DROP TABLE templates;
ALTER TABLE templates_rowid RENAME TO templates;
ALTER TABLE template_events_rowid RENAME TO template_events;
CREATE INDEX template_events_by_event ON template_events (event, tenant_type, tenant_id);

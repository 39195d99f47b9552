-- The kv table becomes a rowid table whose key columns are a UNIQUE index:
-- as a WITHOUT ROWID table every cell of its one b-tree held the whole
-- row, and a value larger than a cell's local payload (a few KB) was read
-- in full from its overflow pages by every comparison a lookup made
-- against it, so one tenant's large values (up to 256 KiB each) made
-- every tenant's KV reads and writes read them. The index cells hold only
-- tenant, key and rowid now; values live in the table's rowid b-tree.

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

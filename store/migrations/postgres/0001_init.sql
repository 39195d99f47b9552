-- Templates, their event subscriptions and the key-value store.
-- Tenant ids hold the bits of the uint64 snowflake in a signed bigint.
-- Names and keys use the "C" collation so that they sort in byte order.

CREATE TABLE templates (
	tenant_type text        NOT NULL CHECK (tenant_type IN ('Guild', 'User')),
	tenant_id   bigint      NOT NULL,
	name        text        COLLATE "C" NOT NULL,
	code        bytea       NOT NULL,
	updated_at  timestamptz NOT NULL,
	PRIMARY KEY (tenant_type, tenant_id, name)
);

CREATE TABLE template_events (
	tenant_type text    NOT NULL,
	tenant_id   bigint  NOT NULL,
	name        text    COLLATE "C" NOT NULL,
	position    integer NOT NULL,
	event       text    COLLATE "C" NOT NULL,
	PRIMARY KEY (tenant_type, tenant_id, name, position),
	FOREIGN KEY (tenant_type, tenant_id, name)
		REFERENCES templates (tenant_type, tenant_id, name) ON DELETE CASCADE
);

CREATE INDEX template_events_by_event ON template_events (event, tenant_type, tenant_id);

CREATE TABLE kv (
	tenant_type text        NOT NULL CHECK (tenant_type IN ('Guild', 'User')),
	tenant_id   bigint      NOT NULL,
	key         text        COLLATE "C" NOT NULL,
	value       text        NOT NULL, -- not jsonb: values round-trip byte for byte
	size        integer     NOT NULL, -- bytes of key plus value, for the quota
	created_at  timestamptz NOT NULL,
	updated_at  timestamptz NOT NULL,
	PRIMARY KEY (tenant_type, tenant_id, key)
);

-- kv_usage is each tenant's running total of keys and bytes, kept in step
-- with kv by every write. Writers lock the tenant's row first, which
-- serialises the writes of one tenant and makes the quota check race-free.
CREATE TABLE kv_usage (
	tenant_type text   NOT NULL,
	tenant_id   bigint NOT NULL,
	keys        bigint NOT NULL,
	bytes       bigint NOT NULL,
	PRIMARY KEY (tenant_type, tenant_id)
);

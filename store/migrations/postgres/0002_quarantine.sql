-- Tenants the master keeps away from its workers, so that a restart of the
-- master does not lift their quarantine.

CREATE TABLE quarantines (
	tenant_type text        NOT NULL CHECK (tenant_type IN ('Guild', 'User')),
	tenant_id   bigint      NOT NULL,
	since       timestamptz NOT NULL,
	until       timestamptz NOT NULL,
	reason      text        NOT NULL,
	PRIMARY KEY (tenant_type, tenant_id)
);

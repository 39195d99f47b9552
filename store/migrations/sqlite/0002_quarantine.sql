-- Tenants the master keeps away from its workers, so that a restart of the
-- master does not lift their quarantine.

CREATE TABLE quarantines (
	tenant_type TEXT    NOT NULL CHECK (tenant_type IN ('Guild', 'User')),
	tenant_id   INTEGER NOT NULL,
	since       INTEGER NOT NULL, -- microseconds since the Unix epoch, UTC
	until       INTEGER NOT NULL,
	reason      TEXT    NOT NULL,
	PRIMARY KEY (tenant_type, tenant_id)
) WITHOUT ROWID;

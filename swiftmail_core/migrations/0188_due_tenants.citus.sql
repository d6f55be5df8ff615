-- 0188 on distributed tables (see swiftmail_core/db/migrate.py): Citus refuses
-- an unnamed inline CHECK in ADD COLUMN; it is named here as PostgreSQL names it.
ALTER TABLE outbox_tenants RENAME TO due_tenants;
ALTER TABLE due_tenants ADD COLUMN queue text NOT NULL DEFAULT 'outbox'
    CONSTRAINT due_tenants_queue_check
    CHECK (queue IN ('outbox', 'jobs', 'webhooks', 'journeys'));
ALTER TABLE due_tenants DROP CONSTRAINT outbox_tenants_pkey;
ALTER TABLE due_tenants ADD PRIMARY KEY (tenant_id, queue);

CREATE INDEX journey_enrollments_tenant_due_idx ON journey_enrollments (tenant_id, next_run_at)
    WHERE status = 'active';
CREATE INDEX jobs_tenant_due_idx ON jobs (tenant_id, created_at)
    WHERE status IN ('queued', 'running');

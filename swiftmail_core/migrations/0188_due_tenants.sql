-- oldest-compatible-code: 0188 (older code claims through outbox_tenants, renamed here)
-- 0188: the due-tenant hints serve every cross-tenant claim, not only the
-- outbox's: import/export jobs, webhook deliveries and journey steps are
-- claimed tenant by tenant too (on Citus a row lock works only in a
-- single-shard query). One row per (tenant, queue); the hints stay hints
-- (each queue's own table is the truth, see swiftmail_core/due_tenants.py).
ALTER TABLE outbox_tenants RENAME TO due_tenants;
ALTER TABLE due_tenants ADD COLUMN queue text NOT NULL DEFAULT 'outbox'
    CHECK (queue IN ('outbox', 'jobs', 'webhooks', 'journeys'));
ALTER TABLE due_tenants DROP CONSTRAINT outbox_tenants_pkey;
ALTER TABLE due_tenants ADD PRIMARY KEY (tenant_id, queue);

-- One tenant's due journey positions in due order: the per-tenant claim walks this.
CREATE INDEX journey_enrollments_tenant_due_idx ON journey_enrollments (tenant_id, next_run_at)
    WHERE status = 'active';
-- One tenant's jobs waiting to run (or to be run again).
CREATE INDEX jobs_tenant_due_idx ON jobs (tenant_id, created_at)
    WHERE status IN ('queued', 'running');

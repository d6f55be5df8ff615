-- 0030: what the job runner needs on top of the jobs table.
--
-- attempts: how many times a runner claimed the job (a job whose lease
--   expired is claimed again, up to a limit, then failed);
-- lease_owner: which runner holds the lease (for operators and logs);
-- result: the job's summary (created, updated, skipped, duplicates, bytes).
-- The existing table-level grants and policies cover the new columns.

ALTER TABLE jobs
    ADD COLUMN attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN lease_owner text,
    ADD COLUMN result jsonb NOT NULL DEFAULT '{}';

-- Claiming is cross-tenant (system role): due work and expired leases.
CREATE INDEX jobs_lease_idx ON jobs (lease_expires_at) WHERE status = 'running';

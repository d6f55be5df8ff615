-- 0160: claims go tenant by tenant. outbox_tenants holds one row per tenant
-- that may have due ledger rows (due_at: when its earliest row is due), so a
-- worker finds due tenants in a small table and claims each with a
-- single-tenant FOR UPDATE SKIP LOCKED (on Citus, row locks work only in
-- single-shard queries). The rows are hints: writers that queue mail add them,
-- a claim that empties a tenant removes it, and the scheduler tick rebuilds
-- them from messages, so a missed hint delays mail by one tick at most.
CREATE TABLE outbox_tenants (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    due_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id)
);
ALTER TABLE outbox_tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE outbox_tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON outbox_tenants TO @app_role@
    USING (tenant_id = swiftmail_current_tenant())
    WITH CHECK (tenant_id = swiftmail_current_tenant());
GRANT SELECT, INSERT, UPDATE, DELETE ON outbox_tenants TO @app_role@;
CREATE POLICY system_machinery ON outbox_tenants TO @system_role@ USING (true) WITH CHECK (true);
GRANT SELECT, INSERT, UPDATE, DELETE ON outbox_tenants TO @system_role@;

-- One tenant's due rows in due order: the per-tenant claim walks this.
CREATE INDEX messages_tenant_due_idx ON messages (tenant_id, next_attempt_at)
    WHERE status IN ('queued', 'deferred');

INSERT INTO outbox_tenants (tenant_id, due_at)
SELECT tenant_id, min(next_attempt_at) FROM messages
WHERE status IN ('queued', 'deferred') GROUP BY tenant_id;

-- 0120: reputation guards. A tenant whose rolling hard-bounce or complaint
-- rate crosses the operator's threshold gets an open pause (resumed_at NULL);
-- the outbox claims nothing for it until an operator resumes it. The app role
-- has the usual tenant-table grants under RLS (no API route writes pauses:
-- only the reputation check and the operator's CLI do, as the system role).
CREATE TABLE sending_pauses (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id bigint GENERATED ALWAYS AS IDENTITY,
    reason text NOT NULL,
    detail jsonb NOT NULL DEFAULT '{}',
    paused_at timestamptz NOT NULL DEFAULT now(),
    resumed_at timestamptz,
    resumed_by text,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX sending_pauses_open_uq ON sending_pauses (tenant_id) WHERE resumed_at IS NULL;
ALTER TABLE sending_pauses ENABLE ROW LEVEL SECURITY;
ALTER TABLE sending_pauses FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON sending_pauses TO @app_role@
    USING (tenant_id = swiftmail_current_tenant())
    WITH CHECK (tenant_id = swiftmail_current_tenant());
GRANT SELECT, INSERT, UPDATE, DELETE ON sending_pauses TO @app_role@;
CREATE POLICY system_machinery ON sending_pauses TO @system_role@ USING (true) WITH CHECK (true);
GRANT SELECT, INSERT, UPDATE ON sending_pauses TO @system_role@;

-- The sending_paused/sending_resumed event types are added in 0157: the events
-- type list is restated whole by later migrations (0154), so it must come after.

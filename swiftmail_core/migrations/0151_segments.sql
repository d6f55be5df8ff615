-- 0151: segments, saved conditions over a tenant's contacts (docs/segments.md).
--
-- The definition is validated and compiled by swiftmail_core.segments; no SQL
-- written by a tenant is ever stored or run.

CREATE TABLE segments (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    definition jsonb NOT NULL CHECK (jsonb_typeof(definition) = 'object'),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, name)
);
CREATE INDEX segments_created_idx ON segments (tenant_id, created_at, id);

ALTER TABLE segments ENABLE ROW LEVEL SECURITY;
ALTER TABLE segments FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON segments TO @app_role@
    USING (tenant_id = swiftmail_current_tenant())
    WITH CHECK (tenant_id = swiftmail_current_tenant());
GRANT SELECT, INSERT, UPDATE, DELETE ON segments TO @app_role@;
CREATE POLICY system_machinery ON segments TO @system_role@ USING (true) WITH CHECK (true);
GRANT SELECT ON segments TO @system_role@;

-- Engagement conditions ("opened campaign X within 30 days") look events up by contact.
CREATE INDEX events_contact_idx ON events (tenant_id, contact_id, type, occurred_at);

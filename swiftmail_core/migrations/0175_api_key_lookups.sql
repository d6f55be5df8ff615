-- 0175: which tenant a presented API key's lookup id belongs to.
--
-- Authentication finds the key by the lookup id in the key itself; the key
-- does not name its tenant. On Citus a lookup in api_keys without the tenant
-- runs on every shard, once per API request. api_key_lookups is small and
-- global (a reference table on Citus, read on the coordinator): the tenant
-- comes from it, then the key from api_keys in that tenant's shard.
CREATE TABLE api_key_lookups (
    lookup_id text NOT NULL,
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    PRIMARY KEY (tenant_id, lookup_id)
);
CREATE INDEX api_key_lookups_lookup_idx ON api_key_lookups (lookup_id);
ALTER TABLE api_key_lookups ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_key_lookups FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON api_key_lookups TO @app_role@
    USING (tenant_id = swiftmail_current_tenant())
    WITH CHECK (tenant_id = swiftmail_current_tenant());
GRANT SELECT, INSERT, UPDATE, DELETE ON api_key_lookups TO @app_role@;
CREATE POLICY system_machinery ON api_key_lookups TO @system_role@ USING (true) WITH CHECK (true);
GRANT SELECT, INSERT ON api_key_lookups TO @system_role@;

INSERT INTO api_key_lookups (lookup_id, tenant_id)
SELECT DISTINCT lookup_id, tenant_id FROM api_keys;

-- 0198: every API key has its api_key_lookups row, not only those created since 0175.
-- oldest-compatible-code: 0176 (only rows added: the rows create_api_key writes for every key)
--
-- Authentication finds a key's tenant only through api_key_lookups
-- (swiftmail_core/apikeys.py authenticate_key). 0175 copied the rows from
-- api_keys as the owner, which is subject to FORCE RLS on both tables (no
-- policy of its own: it saw no keys), so on an install that had keys it
-- copied none, and every key created before 0175 stopped authenticating
-- ("unknown API key"). Keys that already have their row (created since) keep it.
--
-- The owner lifts FORCE for the copy, inside this migration's transaction
-- (as 0195 does; see its NOTE for why one DO block, and sequential mode on
-- Citus, where api_keys is distributed and api_key_lookups a reference table
-- referencing tenants).
DO $$
BEGIN
    IF current_setting('citus.version', true) IS NOT NULL THEN
        PERFORM set_config('citus.multi_shard_modify_mode', 'sequential', true);
    END IF;
    ALTER TABLE api_keys NO FORCE ROW LEVEL SECURITY;
    ALTER TABLE api_key_lookups NO FORCE ROW LEVEL SECURITY;
    INSERT INTO api_key_lookups (lookup_id, tenant_id)
    SELECT DISTINCT lookup_id, tenant_id FROM api_keys
    ON CONFLICT (tenant_id, lookup_id) DO NOTHING;
    ALTER TABLE api_keys FORCE ROW LEVEL SECURITY;
    ALTER TABLE api_key_lookups FORCE ROW LEVEL SECURITY;
END
$$;

-- 0002: row-level security, grants and event partitions.
--
-- APPSEC: this file is the database half of tenant isolation. The app role
-- gets plain DML (never TRUNCATE, never ownership) and only through policies
-- keyed on swiftmail_current_tenant(); the system role gets explicit policies
-- on the few tables cross-tenant machinery must reach.

REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO @app_role@, @system_role@;
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC;
REVOKE ALL ON FUNCTION swiftmail_current_tenant() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION swiftmail_current_tenant() TO @app_role@, @system_role@;

DO $$
DECLARE
    tenant_tables text[] := ARRAY[
        'memberships', 'api_keys', 'contacts', 'lists', 'subscriptions', 'templates',
        'sending_domains', 'campaigns', 'messages', 'links', 'events', 'campaign_rollups',
        'suppressions', 'webhooks', 'webhook_deliveries', 'idempotency_keys', 'jobs'];
    t text;
BEGIN
    FOREACH t IN ARRAY tenant_tables LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I TO @app_role@ '
            'USING (tenant_id = swiftmail_current_tenant()) '
            'WITH CHECK (tenant_id = swiftmail_current_tenant())', t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO @app_role@', t);
    END LOOP;
END $$;

-- A tenant sees and edits its own row only; quotas and status are not its to change.
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants TO @app_role@
    USING (id = swiftmail_current_tenant())
    WITH CHECK (id = swiftmail_current_tenant());
GRANT SELECT ON tenants TO @app_role@;
GRANT UPDATE (name, language, settings, updated_at) ON tenants TO @app_role@;

-- Users are global and hold password hashes: never visible to the app role.
ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE users FORCE ROW LEVEL SECURITY;

-- The system role: explicit, table by table.
DO $$
DECLARE
    grants text[][] := ARRAY[
        -- table,              privileges
        ['tenants',            'SELECT, INSERT, UPDATE, DELETE'],
        ['users',              'SELECT, INSERT, UPDATE, DELETE'],
        ['memberships',        'SELECT, INSERT, UPDATE, DELETE'],
        ['api_keys',           'SELECT, UPDATE'],          -- authentication lookup, last_used_at
        ['contacts',           'SELECT, UPDATE'],          -- bounce and complaint status
        ['subscriptions',      'SELECT, UPDATE'],          -- unsubscribes from bounce machinery
        ['sending_domains',    'SELECT, UPDATE'],          -- DKIM keys, warm-up state
        ['campaigns',          'SELECT, UPDATE'],          -- scheduler, completion
        ['messages',           'SELECT, INSERT, UPDATE'],  -- outbox claims and results
        ['links',              'SELECT'],
        ['events',             'SELECT, INSERT'],
        ['campaign_rollups',   'SELECT, INSERT, UPDATE'],
        ['suppressions',       'SELECT, INSERT, UPDATE'],
        ['webhooks',           'SELECT, UPDATE'],
        ['webhook_deliveries', 'SELECT, INSERT, UPDATE'],
        ['idempotency_keys',   'SELECT, DELETE'],          -- expiry sweep
        ['jobs',               'SELECT, UPDATE']];
    i int;
BEGIN
    FOR i IN 1 .. array_length(grants, 1) LOOP
        EXECUTE format(
            'CREATE POLICY system_machinery ON %I TO @system_role@ USING (true) WITH CHECK (true)',
            grants[i][1]);
        EXECUTE format('GRANT %s ON %I TO @system_role@', grants[i][2], grants[i][1]);
    END LOOP;
END $$;

-- Monthly event partitions. A DEFAULT partition catches anything outside the
-- created range so an insert is never lost; swiftmail_ensure_event_partitions
-- (run by migrate and by the periodic maintenance job) keeps months ahead.
-- Partitions get no grants: they are reachable only through the parent,
-- where the policies above apply.
CREATE TABLE events_default PARTITION OF events DEFAULT;

CREATE FUNCTION swiftmail_ensure_event_partitions(months_ahead integer DEFAULT 3)
    RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = public
AS $$
DECLARE
    month date := date_trunc('month', now() - interval '1 month')::date;
    last_month date := date_trunc('month', now() + make_interval(months => months_ahead))::date;
    name text;
    created integer := 0;
BEGIN
    WHILE month <= last_month LOOP
        name := format('events_%s', to_char(month, 'YYYY_MM'));
        IF to_regclass(name) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
                name, month, (month + interval '1 month')::date);
            EXECUTE format('REVOKE ALL ON %I FROM PUBLIC', name);
            created := created + 1;
        END IF;
        month := (month + interval '1 month')::date;
    END LOOP;
    RETURN created;
END $$;
REVOKE ALL ON FUNCTION swiftmail_ensure_event_partitions(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION swiftmail_ensure_event_partitions(integer) TO @system_role@;

SELECT swiftmail_ensure_event_partitions(3);

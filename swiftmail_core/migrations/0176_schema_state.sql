-- 0176: the schema's state, readable by every process without the owner role.
--
-- Each process checks at start-up that its code fits the schema (every
-- migration it ships applied, and no applied migration that declared
-- `-- oldest-compatible-code:` newer than the code): see
-- swiftmail_core/db/schema_version.py and docs/operations.md. schema_migrations
-- stays reachable by the owner alone; this function reads it for the others.
-- plpgsql: the body is not resolved at creation (Citus propagates functions).
CREATE FUNCTION swiftmail_schema_state(OUT versions integer[], OUT oldest_compatible_code integer)
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public
AS $$
BEGIN
    SELECT array_agg(m.version ORDER BY m.version), coalesce(max(m.oldest_compatible_code), 0)
      INTO versions, oldest_compatible_code
      FROM schema_migrations m;
END;
$$;
REVOKE ALL ON FUNCTION swiftmail_schema_state() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION swiftmail_schema_state() TO @app_role@, @system_role@;

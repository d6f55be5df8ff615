-- 0155: event partitions are kept ahead by the scheduler, and rows that landed in
-- the default partition move to their month.
--
-- Before this, only `swiftmail migrate` created partitions: after a few months
-- without a migration events landed in events_default, and creating that
-- month's partition then failed (the default partition held its rows). The
-- function now moves such rows into the new partition in the same transaction
-- (out of the default partition, then into the new one), also for
-- months behind us, and pins search_path with pg_temp last.
CREATE OR REPLACE FUNCTION swiftmail_ensure_event_partitions(months_ahead integer DEFAULT 3)
    RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
DECLARE
    month date;
    name text;
    created integer := 0;
BEGIN
    FOR month IN
        SELECT m::date FROM generate_series(
            date_trunc('month', now() - interval '1 month'),
            date_trunc('month', now() + make_interval(months => months_ahead)),
            interval '1 month') AS m
        UNION
        SELECT DISTINCT date_trunc('month', occurred_at)::date FROM events_default
        ORDER BY 1
    LOOP
        name := format('events_%s', to_char(month, 'YYYY_MM'));
        CONTINUE WHEN to_regclass(name) IS NOT NULL;
        -- Rows of this month waiting in the default partition step out first (the
        -- partition cannot be created while the default one holds them), then go
        -- into the new partition (directly: the owner has no policy on the parent).
        CREATE TEMP TABLE IF NOT EXISTS swiftmail_stranded_events
            (LIKE events) ON COMMIT DROP;
        WITH moved AS (DELETE FROM events_default WHERE occurred_at >= month
                       AND occurred_at < (month + interval '1 month') RETURNING *)
        INSERT INTO swiftmail_stranded_events SELECT * FROM moved;
        EXECUTE format('CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
                       name, month, (month + interval '1 month')::date);
        EXECUTE format('INSERT INTO %I OVERRIDING SYSTEM VALUE '
                       'SELECT * FROM swiftmail_stranded_events', name);
        TRUNCATE swiftmail_stranded_events;
        EXECUTE format('REVOKE ALL ON %I FROM PUBLIC', name);
        created := created + 1;
    END LOOP;
    RETURN created;
END $$;
REVOKE ALL ON FUNCTION swiftmail_ensure_event_partitions(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION swiftmail_ensure_event_partitions(integer) TO @system_role@;

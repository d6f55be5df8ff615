-- 0173 on distributed tables (see swiftmail_core/db/migrate.py): Citus refuses
-- an unnamed inline CHECK in ADD COLUMN; it is named here as PostgreSQL names it.
ALTER TABLE journeys DROP CONSTRAINT journeys_trigger_type_check;
ALTER TABLE journeys ADD CONSTRAINT journeys_trigger_type_check
    CHECK (trigger_type IN ('list_subscribed', 'event', 'date_attribute'));
ALTER TABLE journeys ADD COLUMN trigger_days_before integer NOT NULL DEFAULT 0
    CONSTRAINT journeys_trigger_days_before_check
    CHECK (trigger_days_before BETWEEN -366 AND 366);

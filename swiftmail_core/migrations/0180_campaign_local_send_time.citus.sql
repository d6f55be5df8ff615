-- 0180 on distributed tables (see swiftmail_core/db/migrate.py): Citus refuses
-- an unnamed inline CHECK in ADD COLUMN; it is named here as PostgreSQL names it.
ALTER TABLE campaigns ADD COLUMN local_send_time text
    CONSTRAINT campaigns_local_send_time_check
    CHECK (local_send_time ~ '^([01][0-9]|2[0-3]):[0-5][0-9]$');
ALTER TABLE campaigns ADD COLUMN timezone_fallbacks bigint NOT NULL DEFAULT 0;

-- 0156 on distributed tables (see swiftmail_core/db/migrate.py): Citus refuses
-- an unnamed inline CHECK in ADD COLUMN; it is named here as PostgreSQL names it.
ALTER TABLE campaigns ADD COLUMN segment_ids uuid[] NOT NULL DEFAULT '{}';
ALTER TABLE campaigns ADD COLUMN sunset_days integer
    CONSTRAINT campaigns_sunset_days_check CHECK (sunset_days BETWEEN 1 AND 3650);

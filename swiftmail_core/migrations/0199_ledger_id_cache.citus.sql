-- 0199 on distributed tables (see swiftmail_core/db/migrate.py): nothing.
-- Citus refuses both ways of setting the cache (ALTER TABLE ... ALTER COLUMN
-- ... SET CACHE: "alter table command is currently unsupported"; ALTER
-- SEQUENCE: "Altering a distributed sequence is currently not supported"),
-- so a cluster installed before 0199 keeps the identity's cache of one (a
-- cluster installed since ran the plain file before its tables were
-- distributed: `swiftmail init --citus`). Ledger ids are unique either way.
SELECT 1;

-- 0199 on distributed tables (see swiftmail_core/db/migrate.py): nothing.
-- Citus refuses both ways of setting the cache (ALTER TABLE ... ALTER COLUMN
-- ... SET CACHE: "alter table command is currently unsupported"; ALTER
-- SEQUENCE: "Altering a distributed sequence is currently not supported"),
-- so a cluster installed before 0199 keeps the identity's cache of one. A
-- cluster installed since has it (`swiftmail init --citus` applies every
-- migration before distributing). Ledger ids are unique either way.
SELECT 1;

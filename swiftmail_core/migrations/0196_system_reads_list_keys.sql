-- 0196: `swiftmail doctor` can count subscriptions whose list is gone.
-- oldest-compatible-code: 0176 (only a grant and a read policy)
--
-- The doctor's orphan checks (swiftmail_core/parent_rows.py ORPHAN_QUERIES)
-- run as the system role across tenants, and one of them reads lists, which
-- the system role could not: every run reported "permission denied for table
-- lists" as a warning instead of its counts. The system role may read a
-- list's key, nothing else of it.
CREATE POLICY system_machinery ON lists FOR SELECT TO @system_role@ USING (true);
GRANT SELECT (tenant_id, id) ON lists TO @system_role@;

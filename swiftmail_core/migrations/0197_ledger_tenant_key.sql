-- 0197: the last per-row foreign-key check leaves the audience resolution
-- (docs/architecture.md, "Foreign keys on the hot paths"; measured in
-- docs/benchmarks.md, "Audience resolution", issue #16).
-- oldest-compatible-code: 0196 (older code deleting a tenant leaves its ledger rows behind: `swiftmail doctor` reports them as orphans)
--
-- messages -> tenants: every transaction that writes ledger rows already
-- holds a row that deleting the tenant must lock first: the tenant row FOR
-- KEY SHARE (parent_rows.lock_tenant_first: audience ranges, test sends,
-- transactional sends, journey steps, public sign-up forms) or a row the
-- tenant's DELETE cascades to (the campaign FOR KEY SHARE, the list FOR KEY
-- SHARE for the API's subscribe). A tenant is deleted by its own DELETE, then
-- its ledger rows in a later statement of the same transaction
-- (parent_rows.delete_tenant_rows), which sees what such a writer committed
-- while the DELETE waited. The check re-read the same tenant row once per
-- ledger row: 20 to 31 % of an audience range's database CPU.
ALTER TABLE messages DROP CONSTRAINT messages_tenant_id_fkey;

-- Deleting a tenant now deletes its ledger rows itself, as the system role
-- (its system_machinery policy covers the table); the statement names only
-- a tenant that is gone (parent_rows.delete_tenant_rows).
GRANT DELETE ON messages TO @system_role@;

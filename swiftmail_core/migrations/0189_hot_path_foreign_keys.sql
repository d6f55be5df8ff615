-- 0189: two per-row foreign-key checks and one redundant index leave the
-- two hottest bulk writes (docs/architecture.md, "Foreign keys on the hot
-- paths"; measured in docs/benchmarks.md, issue #16).
-- oldest-compatible-code: 0188 (older code deleting a cancelled campaign or a list leaves its ledger rows or subscriptions behind: `swiftmail doctor` reports them as orphans)
--
-- messages -> campaigns: every campaign ledger row is written by a statement
-- whose transaction holds the campaign row FOR KEY SHARE (audience ranges,
-- test sends); a campaign is deleted only FOR UPDATE and its ledger rows
-- with it, in the same transaction (web/resources/campaigns.py). The check
-- re-read the same campaign row once per recipient: 29% of an audience
-- range. messages -> tenants stays (deleting a tenant cascades through it).
ALTER TABLE messages DROP CONSTRAINT messages_tenant_id_campaign_id_fkey;

-- subscriptions -> lists: every writer holds the list row FOR KEY SHARE in
-- its transaction (swiftmail_core/lists.py lock_list); a list is deleted FOR
-- UPDATE together with its subscriptions. subscriptions -> contacts stays
-- (deleting a contact or a tenant cascades through it).
ALTER TABLE subscriptions DROP CONSTRAINT subscriptions_tenant_id_list_id_fkey;

-- The primary key (tenant_id, list_id, contact_id) already serves every
-- lookup this partial index did; it cost one more B-tree entry per row.
DROP INDEX subscriptions_confirmed_idx;

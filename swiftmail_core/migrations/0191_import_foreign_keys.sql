-- 0191: the last two per-row foreign-key checks leave the contact import
-- (docs/architecture.md, "Foreign keys on the hot paths"; measured in
-- docs/benchmarks.md, "Imports", issue #16).
-- oldest-compatible-code: 0190 (older code deleting a contact leaves its subscriptions behind, and deleting a tenant leaves its contacts and subscriptions: `swiftmail doctor` reports them as orphans)
--
-- contacts -> tenants: every statement that creates contacts runs in a
-- transaction that first holds the tenant row FOR KEY SHARE
-- (swiftmail_core/parent_rows.py lock_tenant); a tenant is deleted FOR
-- UPDATE (the DELETE itself), then its contacts and subscriptions, in the
-- same transaction (parent_rows.delete_tenant_rows). The check re-read the
-- same tenant row once per imported contact.
ALTER TABLE contacts DROP CONSTRAINT contacts_tenant_id_fkey;

-- subscriptions -> contacts: a subscription is written either in the
-- statement or transaction that created or upserted its contact (imports,
-- bulk upserts, public forms: the contact row is new or locked by ON CONFLICT
-- DO UPDATE) or after locking the contact FOR KEY SHARE (lock_contacts: the
-- API's subscribe, journeys' add-to-list step); a contact is deleted
-- together with its subscriptions (delete_contact). The check took a
-- FOR KEY SHARE lock, and wrote one XLOG_HEAP_LOCK record, per contact.
ALTER TABLE subscriptions DROP CONSTRAINT subscriptions_tenant_id_contact_id_fkey;

-- Deleting a tenant now deletes these rows itself (as the system role,
-- whose system_machinery policy already covers both tables).
GRANT DELETE ON contacts, subscriptions TO @system_role@;

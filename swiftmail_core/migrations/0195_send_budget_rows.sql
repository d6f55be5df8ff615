-- 0195: every tenant has its send_budgets row, not only those created since
-- create_tenant writes it (swiftmail_core/tenants.py).
--
-- A tenant without the row gets it from its first outbox claim, which inserts
-- it with the tenant's due ledger rows locked: the row's foreign key then locks
-- the tenant after them, the reverse of `swiftmail tenant delete`'s order (a
-- deadlock, tests/core/sending/test_outbox.py). Tenants created before
-- create_tenant wrote the row that never sent still had none. They get the row
-- create_tenant writes: a full bucket (tokens = the tenant's rate), the other
-- columns their defaults. Rows already there (tenants that sent) are kept.
-- swiftmail_claim_tenant keeps its insert: older code creates tenants without
-- the row until every host is upgraded.
-- oldest-compatible-code: 0176 (only rows added: older code's claim finds the row its first claim would have inserted)
--
-- The owner runs migrations and is itself subject to FORCE RLS on send_budgets
-- (no policy of its own: it sees and writes no rows), so it lifts FORCE for the
-- copy, inside this migration's transaction; it reads tenants by its
-- owner_checks policy (0170).
--
-- NOTE: one DO block, for Citus (send_budgets distributed, tenants a reference
-- table; tests/citus/test_citus.py), which refuses two things here. It sends a
-- distributed table's DDL to the workers as the statement's query string: the
-- whole file when the DDL is a statement of its own ("cannot insert multiple
-- commands into a prepared statement"), the one statement inside a block. And
-- after DDL run in parallel on send_budgets' shards it refuses to read tenants,
-- which send_budgets references, in the same transaction: sequential mode.
DO $$
BEGIN
    IF current_setting('citus.version', true) IS NOT NULL THEN
        PERFORM set_config('citus.multi_shard_modify_mode', 'sequential', true);
    END IF;
    ALTER TABLE send_budgets NO FORCE ROW LEVEL SECURITY;
    INSERT INTO send_budgets (tenant_id, tokens)
    SELECT id, send_rate_per_second FROM tenants
    ON CONFLICT (tenant_id) DO NOTHING;
    ALTER TABLE send_budgets FORCE ROW LEVEL SECURITY;
END
$$;

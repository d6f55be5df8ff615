-- 0040: per-tenant send budgets, enforced when workers claim ledger rows.
--
-- One row per tenant: a token bucket refilled at tenants.send_rate_per_second
-- and a per-day counter checked against tenants.daily_quota. Claims lock the
-- row (FOR UPDATE), so several workers share one budget.

CREATE TABLE send_budgets (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    tokens double precision NOT NULL DEFAULT 0,
    refilled_at timestamptz NOT NULL DEFAULT now(),
    day date NOT NULL DEFAULT current_date,
    day_count bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id)
);

ALTER TABLE send_budgets ENABLE ROW LEVEL SECURITY;
ALTER TABLE send_budgets FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON send_budgets TO @app_role@
    USING (tenant_id = swiftmail_current_tenant())
    WITH CHECK (tenant_id = swiftmail_current_tenant());
GRANT SELECT, INSERT, UPDATE, DELETE ON send_budgets TO @app_role@;
CREATE POLICY system_machinery ON send_budgets TO @system_role@ USING (true) WITH CHECK (true);
GRANT SELECT, INSERT, UPDATE ON send_budgets TO @system_role@;

-- Campaigns being sent are few; the claim joins them by status.
CREATE INDEX campaigns_sending_idx ON campaigns (tenant_id, id) WHERE status = 'sending';

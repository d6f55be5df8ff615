-- 0161 on distributed tables (see swiftmail_core/db/migrate.py): Citus refuses
-- an unnamed inline CHECK in ADD COLUMN; each is named here as PostgreSQL names it.
CREATE TABLE campaign_variants (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    campaign_id uuid NOT NULL,
    key text NOT NULL CHECK (key IN ('A', 'B', 'C', 'D', 'E')),
    name text NOT NULL DEFAULT '' CHECK (length(name) <= 200),
    subject text,
    from_name text,
    preheader text,
    html text,
    text text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, campaign_id, key),
    FOREIGN KEY (tenant_id, campaign_id) REFERENCES campaigns (tenant_id, id) ON DELETE CASCADE
);
ALTER TABLE campaign_variants ENABLE ROW LEVEL SECURITY;
ALTER TABLE campaign_variants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON campaign_variants TO @app_role@
    USING (tenant_id = swiftmail_current_tenant())
    WITH CHECK (tenant_id = swiftmail_current_tenant());
GRANT SELECT, INSERT, UPDATE, DELETE ON campaign_variants TO @app_role@;
-- Workers render a row with its variant's content.
CREATE POLICY system_machinery ON campaign_variants TO @system_role@ USING (true) WITH CHECK (true);
GRANT SELECT ON campaign_variants TO @system_role@;

-- The test: its share of the audience, how the winner is chosen, and when.
ALTER TABLE campaigns ADD COLUMN ab_test_percent smallint
    CONSTRAINT campaigns_ab_test_percent_check CHECK (ab_test_percent BETWEEN 1 AND 100);
ALTER TABLE campaigns ADD COLUMN ab_metric text
    CONSTRAINT campaigns_ab_metric_check CHECK (ab_metric IN ('opens', 'clicks', 'manual'));
ALTER TABLE campaigns ADD COLUMN ab_decide_after_seconds integer
    CONSTRAINT campaigns_ab_decide_after_seconds_check
    CHECK (ab_decide_after_seconds BETWEEN 0 AND 2592000);
ALTER TABLE campaigns ADD COLUMN ab_winner text
    CONSTRAINT campaigns_ab_winner_check CHECK (ab_winner IN ('A', 'B', 'C', 'D', 'E'));
ALTER TABLE campaigns ADD COLUMN ab_decided_at timestamptz;
ALTER TABLE campaigns ADD COLUMN ab_decided_by text
    CONSTRAINT campaigns_ab_decided_by_check
    CHECK (ab_decided_by IN ('opens', 'clicks', 'manual'));
ALTER TABLE campaigns ADD CONSTRAINT campaigns_ab_complete_check CHECK (
    (ab_test_percent IS NULL) = (ab_metric IS NULL)
    AND (ab_winner IS NULL) = (ab_decided_at IS NULL));

-- The variant a recipient got; 'waiting': the rest of an A/B audience, before the decision.
ALTER TABLE messages ADD COLUMN variant text
    CONSTRAINT messages_variant_check CHECK (variant IN ('A', 'B', 'C', 'D', 'E'));
ALTER TABLE messages DROP CONSTRAINT messages_status_check;
ALTER TABLE messages ADD CONSTRAINT messages_status_check
    CHECK (status IN ('queued', 'sending', 'accepted', 'deferred', 'delivered', 'bounced',
                      'complained', 'failed', 'suppressed', 'cancelled', 'expired', 'unknown',
                      'held', 'waiting'));
ALTER TABLE messages ADD CONSTRAINT messages_waiting_variant_check
    CHECK (status <> 'waiting' OR variant IS NULL);

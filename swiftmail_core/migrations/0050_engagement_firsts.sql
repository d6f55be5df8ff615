-- 0050: first engagements, the memory behind unique open and click counts.
--
-- One row per (message, metric, link): the first human or machine open of a
-- message, the first click of each link. record_events inserts here in the
-- same transaction as the events; a row that was new adds one to the
-- "unique" rollup metrics (opened.unique.human, clicked.unique.machine, ...),
-- so unique counts stay incremental and never need COUNT(DISTINCT) at read time.

CREATE TABLE engagement_firsts (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    message_id bigint NOT NULL,
    metric text NOT NULL,              -- opened.human, opened.machine, clicked.human, clicked.machine
    link_id bigint NOT NULL DEFAULT 0, -- 0: the message as a whole
    campaign_id uuid,
    first_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, message_id, metric, link_id)
);

ALTER TABLE engagement_firsts ENABLE ROW LEVEL SECURITY;
ALTER TABLE engagement_firsts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON engagement_firsts TO @app_role@
    USING (tenant_id = swiftmail_current_tenant())
    WITH CHECK (tenant_id = swiftmail_current_tenant());
GRANT SELECT, INSERT, UPDATE, DELETE ON engagement_firsts TO @app_role@;
CREATE POLICY system_machinery ON engagement_firsts TO @system_role@ USING (true) WITH CHECK (true);
GRANT SELECT, INSERT ON engagement_firsts TO @system_role@;

-- Analytics per tenant over a date range read the rollups by bucket.
CREATE INDEX campaign_rollups_bucket_idx ON campaign_rollups (tenant_id, bucket);

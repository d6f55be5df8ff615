-- 0181: click tracking of journey emails. A journey's tracked links are rows of
-- links scoped to the journey (journey_id) instead of a campaign; the step that
-- queues an email registers the links of its HTML in the same transaction.
ALTER TABLE links ADD COLUMN journey_id uuid;
ALTER TABLE links ADD CONSTRAINT links_one_owner CHECK (campaign_id IS NULL OR journey_id IS NULL);
ALTER TABLE links ADD CONSTRAINT links_journey_fk FOREIGN KEY (tenant_id, journey_id)
    REFERENCES journeys (tenant_id, id) ON DELETE CASCADE;
CREATE UNIQUE INDEX links_journey_url_uq ON links (tenant_id, journey_id, url)
    WHERE journey_id IS NOT NULL;

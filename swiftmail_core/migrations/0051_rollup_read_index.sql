-- 0051: a covering index for reading one campaign's stats by dimension.
--
-- Campaign totals read the rows with dimension '' (one per hour and metric)
-- and per-link / per-domain stats read one dimension prefix; this index
-- serves both as index-only scans, without touching the other dimensions'
-- rows or the heap. (tenant_id, campaign_id) lead, as on every tenant key.

CREATE INDEX campaign_rollups_dimension_idx
    ON campaign_rollups (tenant_id, campaign_id, dimension COLLATE "C", metric)
    INCLUDE (bucket, value);

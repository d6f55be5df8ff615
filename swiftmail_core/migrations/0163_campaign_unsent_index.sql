-- 0163: a campaign's rows not yet handed over (queued or being sent), found
-- without walking its sent ones: an A/B test is decided only once its test
-- messages have all gone out.
CREATE INDEX messages_campaign_unsent_idx ON messages (tenant_id, campaign_id)
    WHERE status IN ('queued', 'sending');

-- 0162: an A/B test's waiting rows are released to the queue in batches (each
-- batch finds the next ones here, not by walking the campaign's released rows),
-- and its results count human first opens and clicks by campaign (not one
-- lookup per recipient).
CREATE INDEX messages_waiting_idx ON messages (tenant_id, campaign_id, id)
    WHERE status = 'waiting';
CREATE INDEX engagement_firsts_campaign_human_idx
    ON engagement_firsts (tenant_id, campaign_id, message_id)
    WHERE link_id = 0 AND metric IN ('opened.human', 'clicked.human');

-- 0159: webhook deliveries are claimed exactly once and endpoints are isolated.
-- A claim sets a fresh lease_token; only the holder of that token may record
-- the attempt's result (a deliverer whose lease expired is ignored). A webhook
-- that fails or times out is paused until paused_until, so its deliveries do
-- not hold the others'.
ALTER TABLE webhook_deliveries ADD COLUMN lease_token uuid;
ALTER TABLE webhooks ADD COLUMN paused_until timestamptz;
-- Per endpoint: its oldest due pending delivery and how many are in flight.
CREATE INDEX webhook_deliveries_endpoint_idx
    ON webhook_deliveries (tenant_id, webhook_id, status, next_attempt_at)
    WHERE status IN ('pending', 'delivering');
